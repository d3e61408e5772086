"""The headline table of the study beyond the paper (issue 24): per design and (J, n_j), the
accuracy of Q-fe, of the best of the paper's 14 estimators, and of PT, CF, DR and PT-CF with
their paired difference from Q-fe on the same replicates (Monte Carlo SE); * marks a difference
whose 95% interval excludes 0.

    python scripts/beyond_reading.py [results/beyond]     (after scripts/run_beyond.sh)
"""
import sys
from pathlib import Path

import pandas as pd

PAPER = ["Q-base", "Q-fe", "Q-ri", "Q-rs", "Q-dm", "Q-dm-ri", "Q-dm-rs", "W-base", "W-noaug",
         "W-aug", "W-augID", "WS-noaug", "WS-aug", "WS-augID"]
SHOWN = ["PT", "CF", "DR", "PT-CF"]
DESIGNS = ["design1", "design2", "site_moderator", "step", "tree", "smooth", "interaction"]
SIZES = [(25, 25), (150, 25), (25, 150)]   # the study's order; other sizes follow


def main(folder: Path) -> str:
    summ = pd.read_csv(folder / "summary.csv")
    comp = pd.read_csv(folder / "comparison.csv")
    comp = comp[(comp["metric"] == "accuracy") & (comp["reference"] == "Q-fe")]
    lines = ["| design | (J, n_j) | reps | Q-fe | best of the 14 | "
             + " | ".join(f"{m} (minus Q-fe)" for m in SHOWN) + " |",
             "|---|---|---|---|---|" + "---|" * len(SHOWN)]
    for d in [x for x in DESIGNS if x in set(summ["design"])]:
        have = sorted({(int(a), int(b)) for a, b in summ[summ.design == d][["J", "n_j"]].values})
        for J, n in [c for c in SIZES if c in have] + [c for c in have if c not in SIZES]:
            s = summ[(summ.design == d) & (summ.J == J) & (summ.n_j == n)].set_index("method")
            if s.empty:
                continue
            c = comp[(comp.design == d) & (comp.J == J) & (comp.n_j == n)].set_index("method")
            paper = s.loc[s.index.intersection(PAPER), "accuracy_mean"]
            best = paper.idxmax()
            cells = [d, f"({J}, {n})", str(int(s.loc["Q-fe", "reps"])),
                     f"{s.loc['Q-fe', 'accuracy_mean']:.3f}",
                     f"{paper.max():.3f} ({best})"]
            for m in SHOWN:
                if m not in s.index or m not in c.index:
                    cells.append("-")
                    continue
                r = c.loc[m]
                star = "*" if r.ci_low > 0 or r.ci_high < 0 else ""
                cells.append(f"{s.loc[m, 'accuracy_mean']:.3f} ({r.mean_diff:+.3f} +- "
                             f"{r.mcse:.3f}{star})")
            lines.append("| " + " | ".join(cells) + " |")
    text = ("Accuracy (share of test rows whose decision is d_opt), mean over replicates; in "
            "brackets the paired difference from Q-fe on the same replicates +- its Monte Carlo "
            "SE, * where the 95% interval excludes 0. `python scripts/beyond_reading.py`.\n\n"
            + "\n".join(lines) + "\n")
    (folder / "READING.md").write_text(text)
    return text


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/beyond")))
