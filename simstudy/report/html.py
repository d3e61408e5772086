"""report.html: one page per study store that opens offline from the store folder (issue 26).

The ADEMP protocol, a methods x conditions table per metric (mean and MC SE, the paper's
layout), the paired comparisons against the reference, every figure with a line saying what to
read in it, warnings and failed fits per cell, and the provenance (versions, machine, seed,
config). Tables sort on a header click and filter on a typed word (inline script, no network);
figures are the PNGs beside it (relative links), so the folder can be zipped and shared.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd

from ..provenance import version

METRIC_TITLES = {"accuracy": "Accuracy", "f1": "F1 score", "spearman": "Rank correlation",
                 "auc": "AUC", "regret": "Regret (lower is better)", "value": "Value",
                 "treated_share": "Share treated",
                 "value_at_budget": "Value at the budget (the top scores only)",
                 "autoc": "AUTOC of the ranking (true Delta)", "qini": "Qini of the ranking",
                 "worst_site_accuracy": "Accuracy in the worst site",
                 "site_accuracy_sd": "SD of the site accuracies (lower is more even)",
                 "sites_below_constant": "Share of sites below the better constant rule "
                                         "(lower is better)"}

# what to read in each kind of figure (by file-name prefix)
CAPTIONS = [
    ("metrics_", "Accuracy, F1, rank correlation and AUC: one box per method over replicates, "
                 "two metrics per row, each (J, n_j) on a pair of rows, the methods in the "
                 "tables' order. Higher is better; compare boxes within a panel."),
    ("accuracy_", "Accuracy (share of test rows whose decision equals d_opt = 1{Delta > 0}) over "
                  "replicates, a row per (J, n_j), a panel per family; the number above a box "
                  "is its mean. Higher is better."),
    ("regret_", "Regret: the mean true benefit the rule leaves on the table against the oracle "
                "(0 for the oracle). Lower is better."),
    ("paired_accuracy_", "Each method minus the reference on the same replicates: mean accuracy "
                         "difference with its 95% interval; red where the interval excludes 0."),
    ("congruence_", "Congruence: the share of test rows on which two rules decide alike, a "
                    "panel per (J, n_j) (upper triangle coloured on a scale from the lowest "
                    "value shown to 100, lower triangle the numbers, %)."),
    ("targeting_", "The ranking and the sites (from the true effects): AUTOC and Qini of each "
                   "rule's ranking (0 for a constant rule, the oracle's the largest), its "
                   "accuracy in the worst test site, and the share of sites where it does worse "
                   "than the better constant rule (docs/metrics.md)."),
    ("value_claims_", "The value each rule claims: its AIPW estimate on held-out training data "
                      "against its true value, as an estimator: the coverage of its 95% "
                      "interval (nominal 0.95) and its bias, each with a 95% Monte Carlo "
                      "interval (docs/metrics.md)."),
    ("nested_loop_", "Nested-loop plot: mean accuracy in every condition at once, the steps below "
                     "marking the design factors; one line per method."),
    ("sweep_", "A metric against the swept value: mean over replicates with a 95% band, one line "
               "per method."),
]

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:0 1.2em 3em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-top:1em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
nav a{margin-right:1em}table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}th{background:#f4f4f4;cursor:pointer}
td:first-child,th:first-child{text-align:left}tr:nth-child(even) td{background:#fafafa}
.filter{margin:.4em 0;padding:.3em;width:18em}.bad{color:#b00020}.ok{color:#1b5e20}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#444}
details{margin:.6em 0}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}
.muted{color:#666;font-size:.9em}.wrap{overflow-x:auto}h4{margin:.8em 0 .2em}
"""

_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var rows=Array.from(t.tBodies[0].rows), asc=th.dataset.asc!=='1';
      rows.sort(function(a,b){
        var x=a.cells[i].dataset.v||a.cells[i].textContent, y=b.cells[i].dataset.v||b.cells[i].textContent;
        var nx=parseFloat(x), ny=parseFloat(y);
        var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);
        return asc?c:-c;});
      rows.forEach(function(r){t.tBodies[0].appendChild(r);});
      t.querySelectorAll('th').forEach(function(h){h.dataset.asc='';});
      th.dataset.asc=asc?'1':'0';});});});
document.querySelectorAll('input.filter').forEach(function(inp){
  var t=document.getElementById(inp.dataset.table);
  inp.addEventListener('input',function(){
    var q=inp.value.toLowerCase();
    Array.from(t.tBodies[0].rows).forEach(function(r){
      r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';});});});
"""


def _e(x) -> str:
    return html.escape(str(x))


def _table(df: pd.DataFrame, tid: str, sort_values: pd.DataFrame | None = None) -> str:
    """A sortable table with a filter box; `sort_values` (same shape) holds the numbers a
    column sorts by when its cells show text such as '0.927 (0.002)'."""
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    body = []
    for i, (_, row) in enumerate(df.iterrows()):
        cells = []
        for j, v in enumerate(row):
            sv = None if sort_values is None else sort_values.iat[i, j]
            attr = f' data-v="{sv}"' if sv is not None and pd.notna(sv) else ""
            cells.append(f"<td{attr}>{_e('' if pd.isna(v) else v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<input class="filter" data-table="{tid}" placeholder="filter rows...">'
            f'<div class="wrap"><table class="sortable" id="{tid}"><thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div>')


def _cond_columns(df: pd.DataFrame) -> list[str]:
    keys = [c for c in ("point", "design", "J", "n_j") if c in df.columns]
    if "point" in keys and df["point"].fillna("").eq("").all():
        keys.remove("point")
    return keys


def _metric_tables(summ: pd.DataFrame, metric: str, order: list[str], tid: str) -> str:
    """Methods x (J, n_j), 'mean (MC SE)': the paper's layout, one table per design (and sweep
    point)."""
    keys = _cond_columns(summ)
    groups = [k for k in keys if k in ("point", "design")]
    sizes = [k for k in keys if k in ("J", "n_j")]
    rank = {m: i for i, m in enumerate(order)}
    parts = []
    for g, (label, s) in enumerate(summ.groupby(groups, sort=False) if groups
                                   else [("", summ)]):
        s = s.copy()
        s["(J, n_j)"] = (s[sizes].astype(str).agg(", ".join, axis=1).map(
            lambda v: f"(J, n_j) = ({v})") if sizes else "all")      # a column says what it is
        mean = s.pivot_table(index="method", columns="(J, n_j)", values=f"{metric}_mean",
                             sort=False)
        se = s.pivot_table(index="method", columns="(J, n_j)", values=f"{metric}_se",
                           sort=False)
        name = " ".join(str(x) for x in (label if isinstance(label, tuple) else (label,)) if x)
        if mean.empty:          # undefined in every fit (rank metrics when Delta is constant)
            parts.append((f"<h4>{_e(name)}</h4>" if name else "")
                         + "<p class=\"muted\">not defined on this design (no fit has a value)"
                         "</p>")
            continue
        mean = mean.loc[sorted(mean.index, key=lambda m: rank.get(m, len(rank)))]
        se = se.reindex(index=mean.index, columns=mean.columns)
        shown = mean.map(lambda v: f"{v:.3f}") + " (" + se.map(
            lambda v: "-" if pd.isna(v) else f"{v:.3f}") + ")"
        shown = shown.reset_index()
        shown.columns.name = None
        sort = pd.concat([pd.Series([None] * len(mean)), mean.reset_index(drop=True)], axis=1)
        if name:
            parts.append(f"<h4>{_e(name)}</h4>")
        parts.append(_table(shown, f"{tid}_{g}", sort))
    return "".join(parts)


def _figures(out: Path) -> list[tuple[str, str]]:
    """[(relative path, caption)] of every PNG in figures/, grouped by kind."""
    found = sorted((out / "figures").glob("*.png")) if (out / "figures").is_dir() else []
    items = []
    for prefix, caption in CAPTIONS:
        for f in found:
            if f.name.startswith(prefix) and f not in [x[2] for x in items]:
                items.append((f"figures/{f.name}", caption, f))
    for f in found:                       # any other figure (a plugin's), without a caption
        if f not in [x[2] for x in items]:
            items.append((f"figures/{f.name}", "", f))
    return [(p, c) for p, c, _ in items]


def _figure(out: Path, path: str, caption: str) -> str:
    """A figure (relative PNG path) with its caption and a link to its PDF when there is one."""
    pdf = Path(path).with_suffix(".pdf")
    link = f' (<a href="{_e(pdf)}">PDF</a>)' if (out / pdf).exists() else ""
    return (f'<figure><img src="{_e(path)}" alt="{_e(Path(path).stem)}" loading="lazy">'
            f"<figcaption><b>{_e(Path(path).stem)}</b>{link}. {_e(caption)}</figcaption></figure>")


def _md_to_html(text: str) -> str:
    """The few markdown forms summary.md's protocol block uses: headings, bullets, `code`,
    **bold**, links."""
    lines, out, in_list = text.splitlines(), [], False
    for ln in lines:
        fold = re.fullmatch(r"\s*<details><summary>(.*?)</summary>(.*)</details>\s*", ln)
        if fold:                            # a folded detail (the protocol's every parameter)
            fold = (f" <details><summary>{_e(fold.group(1))}</summary>"
                    f"{_e(fold.group(2))}</details>")
            if out and out[-1].endswith("</li>"):              # inside the item above it
                out[-1] = out[-1][:-len("</li>")] + fold + "</li>"
            else:
                out.append(fold)
            continue
        esc = _e(ln)
        esc = re.sub(r"`([^`]+)`", r"<code>\1</code>", esc)
        esc = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", esc)
        if ln.startswith("#"):
            continue
        stripped = esc.lstrip()
        if stripped.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{stripped[2:]}</li>")
        else:
            if in_list and not ln.startswith("  "):
                out.append("</ul>")
                in_list = False
            if stripped:
                out.append(f"<p>{stripped}</p>" if not in_list else f" {stripped}")
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


def provenance(cfg: dict) -> dict[str, str]:
    """What the study's last run computed with (config.yaml `provenance`: versions, source
    commit, BLAS, machine, date, wall and CPU time), then this page's own writing."""
    from ..provenance import facts
    stored = {f"run: {k}": str(v) for k, v in (cfg.get("provenance") or {}).items()}
    now = facts()
    page = {"page written": now["date"], "page written by simstudy": now["simstudy"]}
    if "source commit" in now:
        page["page written from commit"] = now["source commit"]
    last = cfg.get("last_run") or {}
    for key in ("seed", "n_jobs", "backend"):
        if key in last:
            page[f"last run config: {key}"] = str(last[key])
    return {**(stored or {f"run: {k}": v for k, v in now.items()}), **page}


def write_html(out: Path, cfg: dict, summ: pd.DataFrame, comp: pd.DataFrame,
               order: list[str], failures: pd.DataFrame, reference: str | None) -> Path:
    """Write out/report.html (module docstring) and return its path."""
    out = Path(out)
    name = out.resolve().parent.name if out.resolve().name == "store" else out.resolve().name
    parts = [f"<h1>Study report: {_e(name)}</h1>",
             f'<p class="muted">the store {_e(out)} &middot; written by simstudy '
             f"{_e(version('simstudy') or '')}</p>"]
    metrics = [m for m in METRIC_TITLES if f"{m}_mean" in summ.columns
               and summ[f"{m}_mean"].notna().any()]
    nav = ["headline", "protocol", "results", "comparisons"] + (
        ["claims"] if (out / "value_claims.csv").exists() else []) + [
        "figures", "problems", "provenance"]
    parts.append("<nav>" + "".join(f'<a href="#{n}">{n}</a>' for n in nav) + "</nav>")
    md = (out / "summary.md").read_text() if (out / "summary.md").exists() else ""
    if (out / "COMPARISON.md").exists():        # a reproduction: its statement-by-statement file
        parts.append('<p><b>Beside the paper:</b> every statement of the paper set against this '
                     'study\'s numbers, in <a href="COMPARISON.md">COMPARISON.md</a>.</p>')
    # the headline first: the study's answer (summary.md's opening block)
    head = md.split("## Protocol")[0] if md.startswith("## Headline") else ""
    if head:
        title, _, body = head.partition("\n")
        parts += [f'<h2 id="headline">{_e(title.lstrip("# "))}</h2>',
                  '<div class="headline">' + _md_to_html(body) + "</div>"]
    # protocol
    protocol = "## Protocol" + md.split("## Protocol", 1)[1].split("## Results")[0] \
        if "## Protocol" in md else ""
    parts += ['<h2 id="protocol">Protocol (ADEMP)</h2>', _md_to_html(protocol)]
    # results
    parts.append('<h2 id="results">Results: mean (Monte Carlo SE) over replicates</h2>')
    reps = summ.groupby(_cond_columns(summ) or ["method"])["reps"].max()
    count = (f"{int(reps.min())} per cell" if reps.min() == reps.max() else
             f"{int(reps.min())}-{int(reps.max())} per cell (cells differ)")
    parts.append(f'<p class="muted">{len(summ)} method x condition cells; replicates: {count}. '
                 f"Click a header to sort, type to filter.</p>")
    for k, m in enumerate(metrics):
        parts += [f"<h3>{_e(METRIC_TITLES[m])}</h3>", _metric_tables(summ, m, order, f"t{k}")]
    # comparisons
    parts.append('<h2 id="comparisons">Paired comparisons</h2>')
    if comp is not None and len(comp):
        acc = comp[comp["metric"] == "accuracy"].copy()
        ref = reference or (acc["reference"].iloc[0] if len(acc) else "")
        parts.append(f"<p>Each method minus <b>{_e(ref)}</b> on the same replicates (accuracy): "
                     f"mean difference, its MC SE, 95% interval and wins / ties / losses. "
                     f'<span class="bad">Red</span>: the interval excludes 0 in the reference\'s '
                     f"favour; <span class=\"ok\">green</span>: in the method's. All metrics: "
                     f'<a href="comparison.csv">comparison.csv</a>.</p>')
        cols = _cond_columns(acc) + ["method", "pairs", "mean_diff", "mcse", "ci_low", "ci_high",
                                     "wins", "ties", "losses"]
        acc = acc[[c for c in cols if c in acc.columns]]
        # by effect within each condition: the largest gain over the reference first
        acc = acc.sort_values([*_cond_columns(acc), "mean_diff"],
                              ascending=[True] * len(_cond_columns(acc)) + [False],
                              kind="stable")
        for c in ("mean_diff", "mcse", "ci_low", "ci_high"):
            acc[c] = acc[c].map(lambda v: f"{v:+.4f}" if c != "mcse" else f"{v:.4f}")
        table = _table(acc, "comp")
        parts.append(_colour_intervals(table))
    else:
        parts.append("<p>No paired comparisons (a single method).</p>")
    # the value each rule claims (value_claims != none)
    claims = pd.read_csv(out / "value_claims.csv") if (out / "value_claims.csv").exists() \
        else None
    if claims is not None and len(claims):
        text = md.split("## The value each rule claims", 1)[1].split("\n|")[0] \
            if "## The value each rule claims" in md else ""
        parts += ['<h2 id="claims">The value each rule claims</h2>', _md_to_html(text),
                  _table(claims.round(4), "claims")]
    # figures
    parts.append('<h2 id="figures">Figures</h2>')
    figs = _figures(out)
    if not figs:
        parts.append("<p>No figures were drawn (figures=false); "
                     f"<code>simstudy report {_e(out)}</code> draws them.</p>")
    parts += [_figure(out, path, caption) for path, caption in figs]
    # problems
    parts.append('<h2 id="problems">Warnings and failed fits</h2>')
    warn = summ[summ.get("warnings", 0) > 0] if "warnings" in summ else summ.iloc[:0]
    if len(failures):
        parts += ["<p>Failed fits per cell (the replicate's other methods are kept; "
                  "<code>retry_errors=true</code> recomputes them):</p>",
                  _table(failures, "fails")]
    else:
        parts.append('<p class="ok">No failed fits.</p>')
    kinds = pd.read_csv(out / "warnings.csv") if (out / "warnings.csv").exists() else None
    if kinds is not None and len(kinds):
        text = md.split("## Warnings, by kind", 1)[1].split("\n## ")[0] \
            if "## Warnings, by kind" in md else ""
        cols = [c for c in _cond_columns(kinds) if c in kinds] + [
            "method", "kind", "warned", "fits", "accuracy_warned", "accuracy_other", "difference"]
        parts += ["<p>Fits that succeeded with a warning, by kind: what each means and whether "
                  "warned fits decide differently (their accuracy against the same method's "
                  "other fits in the same cell; texts in metrics.parquet):</p>",
                  _md_to_html(text), _table(kinds[cols].round(3), "warns")]
    elif len(warn):
        cols = _cond_columns(warn) + ["method", "reps", "warnings"]
        parts += ["<p>Fits that succeeded with a warning (texts in metrics.parquet):</p>",
                  _table(warn[cols], "warns")]
    else:
        parts.append('<p class="ok">No warnings.</p>')
    # provenance
    parts.append('<h2 id="provenance">Provenance</h2>')
    facts = provenance(cfg)
    parts.append("<table><tbody>" + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>"
                                            for k, v in facts.items()) + "</tbody></table>")
    conf = (out / "config.yaml").read_text() if (out / "config.yaml").exists() else ""
    parts.append(f"<details><summary>config.yaml (the study's identity and every "
                 f"parameter)</summary><pre>{_e(conf)}</pre></details>")
    parts.append('<p class="muted">Files: <a href="summary.md">summary.md</a>, '
                 '<a href="summary.csv">summary.csv</a>, <a href="comparison.csv">comparison.csv'
                 '</a>, <a href="failures.csv">failures.csv</a>, <a href="measures.csv">'
                 "measures.csv</a>; the rows: metrics.parquet, congruence.parquet.</p>")
    return _write_page(out, f"simstudy report: {name}", parts)


def _write_page(out: Path, title: str, parts: list[str]) -> Path:
    """out/report.html from the body parts: one style, the sort/filter script, written
    atomically (a reader never sees half a page)."""
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_STYLE}</style>"
            f"</head><body>{''.join(parts)}<script>{_SCRIPT}</script></body></html>")
    path = out / "report.html"
    from ..store import _atomic_write_bytes      # the store's one atomic writer
    _atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return path


def _colour_intervals(table: str) -> str:
    """Mark comparison rows whose interval excludes 0 (red: worse than the reference)."""
    def mark(m):
        row = m.group(0)
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
        try:
            lo, hi = float(cells[-5]), float(cells[-4])
        except (ValueError, IndexError):
            return row
        cls = "bad" if hi < 0 else "ok" if lo > 0 else ""
        return row.replace("<tr>", f'<tr class="{cls}">', 1) if cls else row
    return re.sub(r"<tr><td.*?</tr>", mark, table)


APPLY_CAPTIONS = [
    ("values", "Value of each rule (the mean outcome if it decided who is treated): in-sample "
               "(optimistic for learnt rules) and cross-fitted over sites (honest for new sites "
               "like these), with 95% intervals."),
    ("shares_by_", "Share each rule would treat within each group."),
    ("shares", "Share of the trial each rule would treat."),
    ("congruence", "Share of people on whom two rules decide alike (%)."),
    ("tree_depth_", "The policy tree learnt on all rows: its splits and each leaf's action."),
    ("plan_sites", "Calibrated simulation: accuracy of each rule against the number of sites "
                   "(bars: MC 95%); the dotted line is the target."),
    ("scores_by_", "Benefit scores by group; each rule has its own scale, its sign is the "
                   "decision."),
]


SIMULATE_TABLES = [
    ("simulate_headline.csv", "Per scenario: the leader, the rules indistinguishable from it "
                              "(paired 95% interval holds 0), the better constant rule",
     ["scenario", "leader", "leader_mean", "indistinguishable", "constant", "constant_mean"]),
    ("simulate_answer.csv", "Accuracy, regret and value of each rule per scenario (MC SEs)", None),
    ("simulate_calibration.csv", "Calibration check: the real trial against simulated trials",
     None),
    ("simulate_plan_sites.csv", "Planning: the smallest number of sites reaching the target",
     None),
]


def _simulate_section(out: Path) -> list[str]:
    """The calibrated simulation's answer (simulate.md's first paragraphs and its tables)."""
    md = (out / "simulate.md").read_text()
    head = md.split("\n### ", 1)[0]
    parts = ['<h2 id="simulate">Which rule to trust on a trial like this</h2>',
             '<div class="headline">' + _md_to_html(head) + "</div>"]
    for k, (name, caption, cols) in enumerate(SIMULATE_TABLES):
        if (out / name).exists():
            table = pd.read_csv(out / name)
            table = table[[c for c in cols if c in table]] if cols else table
            parts += [f"<h3>{_e(caption)}</h3>", _table(table.round(4), f"simulate{k}")]
    return parts


def write_apply_html(out: Path, title: str, note: str) -> Path:
    """out/report.html for `simstudy apply` output: the values (with the note explaining them),
    the tree rules, shares, every figure with a caption, and the provenance."""
    out = Path(out)
    parts = [f"<h1>Optimal treatment rules: {_e(title)}</h1>",
             f'<p class="muted">written by simstudy {_e(version("simstudy") or "")} &middot; '
             f"files beside this page: values.csv, scores.csv, tree_depth*_rules.csv</p>"]
    head, _, note = note.partition("## Headline\n") if note.startswith("## Headline") else \
        ("", "", note)
    if _:
        head, note = note.split("\n\n", 1)[0], note.split("\n\n", 1)[1] \
            if "\n\n" in note else ""
        parts += ['<h2 id="headline">Headline</h2>', '<div class="headline">'
                  + _md_to_html(head) + "</div>"]
    parts += ['<h2 id="values">Value of each rule</h2>', _md_to_html(note)]
    if (out / "values.csv").exists():
        values = pd.read_csv(out / "values.csv")
        big = values.select_dtypes("number").abs().max().max() >= 100
        parts.append(_table(values.round(2 if big else 4), "values"))   # to its precision
    if (out / "simulate.md").exists():                 # apply --simulate (issue 42)
        parts += _simulate_section(out)
    for k, f in enumerate(sorted(out.glob("tree_depth*_rules.csv"))):
        parts += [f"<h3>{_e(f.stem.replace('_', ' '))}</h3>",
                  _table(pd.read_csv(f).round(3), f"rules{k}")]
    for k, f in enumerate(sorted(out.glob("shares_by_*.csv"))):
        parts += [f"<h3>{_e(f.stem.replace('_', ' '))}</h3>",
                  _table(pd.read_csv(f).round(3), f"shares{k}")]
    parts.append('<h2 id="figures">Figures</h2>')
    found = sorted((out / "figures").glob("*.png")) if (out / "figures").is_dir() else []
    done = set()
    for prefix, caption in APPLY_CAPTIONS:
        for f in found:
            if f.name.startswith(prefix) and f not in done:
                done.add(f)
                parts.append(_figure(out, f"figures/{f.name}", caption))
    parts.append('<h2 id="provenance">Provenance</h2>')
    parts.append("<table><tbody>" + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>"
                                            for k, v in provenance({}).items())
                 + "</tbody></table>")
    return _write_page(out, f"simstudy apply: {title}", parts)
