"""End to end through the installed `simstudy` command (the path a user takes)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from simstudy.store import read_congruence, read_metrics

HERE = Path(__file__).parent
SMALL = ["J=[4,5]", "n_j=6", "reps=4", "n_jobs=1", "progress=false", "figures=false"]


def simstudy(*args, env=None, check=True, cwd=None):
    full_env = {**os.environ, "PYTHONPATH": str(HERE), **(env or {})}
    res = subprocess.run([sys.executable, "-m", "simstudy.cli", *args], capture_output=True,
                         text=True, env=full_env, cwd=cwd)
    if check and res.returncode != 0:
        raise AssertionError(f"simstudy {args} failed:\n{res.stdout}\n{res.stderr}")
    return res


@pytest.mark.slow
def test_run_and_report(tmp_path):
    out = tmp_path / "study"
    res = simstudy("run", *SMALL[:-1], "figures=true", f"out={out}", cwd=tmp_path)
    assert {p.name for p in out.iterdir()} >= {"metrics.parquet", "congruence.parquet",
                                                "config.yaml", "summary.md", "figures"}
    assert (out / "figures" / "accuracy_design1.png").exists() and "summary.md" in res.stdout
    assert not any(tmp_path.glob("outputs")), "Hydra must not litter the working directory"
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    study = cfg["points"][""]["study"]
    assert study["methods"][:2] == ["Q-base", "Q-fe"] and {"Q-dm-rs", "PT"} <= set(study["methods"])
    m = read_metrics(out)
    assert len(m) == 2 * 4 * 18 and set(m.columns) >= {"accuracy", "f1", "spearman", "auc", "value",
                                                     "regret", "treated_share", "seconds"}
    res = simstudy("report", str(out))
    assert "Q-base" in res.stdout and "accuracy" in res.stdout
    summ = pd.read_csv(out / "summary.csv")
    direct = m[m.status == "ok"].groupby(["J", "method"])["accuracy"].agg(["mean", "std", "count"])
    for _, row in summ.iterrows():
        d = direct.loc[(row["J"], row["method"])]
        assert row["accuracy_mean"] == pytest.approx(d["mean"])
        assert row["accuracy_se"] == pytest.approx(d["std"] / np.sqrt(d["count"]), nan_ok=True)
    results = (out / "summary.md").read_text().split("## Results")[1].split("\n## ")[0]
    assert results.count("| design1 |") == len(summ)


def test_help_and_listing():
    res = simstudy("run", "--help")
    assert "simstudy run" in res.stdout and "reps" in res.stdout and "design1" in res.stdout
    assert "Q-base" in simstudy("methods").stdout
    assert "design4" in simstudy("designs").stdout
    assert "report DIR" in simstudy("--help").stdout


def test_bad_input_messages(tmp_path):
    res = simstudy("run", "design=design9", f"out={tmp_path}", check=False)
    assert res.returncode != 0 and "design1" in res.stderr and "design9" in res.stderr
    res = simstudy("run", "methods=[Q-base,Qrs]", f"out={tmp_path}", check=False)
    assert res.returncode == 2 and "unknown method 'Qrs'" in res.stderr and "oracle" in res.stderr
    res = simstudy("run", "reps=0", f"out={tmp_path}", check=False)
    assert res.returncode == 2 and "reps=0" in res.stderr
    res = simstudy("run", "design.prevalence=1.5", f"out={tmp_path}", check=False)
    assert res.returncode == 2 and "prevalence" in res.stderr
    assert not (tmp_path / "metrics.parquet").exists()
    res = simstudy("report", str(tmp_path / "nothing"), check=False)
    assert res.returncode == 2 and "no such directory" in res.stderr


@pytest.mark.slow
def test_multirun_sweep_into_one_store(tmp_path):
    out = tmp_path / "both"
    simstudy("run", "-m", "design=design1,design2", *SMALL, f"out={out}", cwd=tmp_path)
    m = read_metrics(out)
    assert set(m["design"]) == {"design1", "design2"}
    assert len(m) == 2 * 2 * 4 * 18
    assert set(yaml.safe_load((out / "config.yaml").read_text())["points"][""]["designs"]) == {"design1", "design2"}


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path):
    args = ["J=3", "n_j=5", "reps=40", "n_jobs=1", "progress=false", "flush_seconds=0.2",
            "methods=[Q-base,test-slow]", "plugins=[plugin_methods]"]
    env = {"PYTHONPATH": str(HERE), "SIMSTUDY_TEST_SLEEP": "0.08"}
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "simstudy.cli", "run", *args, f"out={out}"],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / "parts").glob("metrics-*.parquet"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = read_metrics(out)
    assert 0 < partial["replicate"].nunique() < 40, "kill must land mid-run"
    simstudy("run", *args, f"out={out}", env=env)
    simstudy("run", *args, f"out={tmp_path / 'clean'}", env=env)
    a, b = read_metrics(out), read_metrics(tmp_path / "clean")
    assert len(a) == 80 and not a.duplicated(["replicate", "method"]).any()
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"), check_exact=True)
    pd.testing.assert_frame_equal(read_congruence(out), read_congruence(tmp_path / "clean"), check_exact=True)


def test_the_study_schema_covers_config_yaml_and_run_help_lists_every_key(capsys):
    from simstudy.cli import main
    from simstudy.config import NOT_POINT, STUDY_KEYS, study_defaults
    assert set(STUDY_KEYS) == set(study_defaults())
    assert {"seed", "method_options", "method_defaults"}.isdisjoint(NOT_POINT)
    assert main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    for key in [*STUDY_KEYS, "design.site_sizes", "design.outcome", "design.beta1"]:
        assert f"  {key} " in text, key


@pytest.mark.parametrize("arg, says", [
    ("desing=design2", "unknown key 'desing' -- did you mean 'design'?"),
    ("design=design9", "unknown design preset 'design9'"),
    ("design.betta1=0.3", "did you mean 'design.beta1'?"),
    ("method_options.PT.depth=3", "'+method_options.PT.depth=3'"),
])
def test_unknown_keys_are_answered_in_one_line(arg, says, tmp_path, capsys):
    from simstudy.cli import main
    code = main(["run", arg, "reps=1", f"out={tmp_path / 'o'}"])
    err = capsys.readouterr().err
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert "HYDRA_FULL_ERROR" not in err and not (tmp_path / "o").exists()


def test_version(capsys):
    from simstudy import __version__
    from simstudy.cli import main
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"simstudy {__version__}"


def test_python_api_gives_the_cli_store_and_loads_it(tmp_path, capsys):
    """simstudy.run_study and `simstudy run` with the same settings: identical stores (a design
    parameter, a method option and a list key included); load() returns the tables."""
    import simstudy
    from simstudy.cli import main
    from simstudy.store import read_congruence, read_metrics
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    assert main(["run", "design=design2", "design.R_sd=1.2", "J=[3,4]", "n_j=8", "reps=2",
                 "n_jobs=1", "methods=[Q-base,W-aug,oracle]", "+method_options.W-aug.nfolds=4",
                 "progress=false", "figures=false", f"out={cli_out}"]) == 0
    study = simstudy.run_study("design2", design_params={"R_sd": 1.2}, J=[3, 4], n_j=8, reps=2,
                               n_jobs=1, methods=["Q-base", "W-aug", "oracle"],
                               method_options={"W-aug": {"nfolds": 4}}, out=api_out)
    a, b = read_metrics(cli_out), read_metrics(api_out)
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"),
                                  check_exact=True)
    pd.testing.assert_frame_equal(read_congruence(cli_out), read_congruence(api_out),
                                  check_exact=True)
    assert set(a["point"]) == {"design.R_sd=1.2,method_options.W-aug.nfolds=4"}
    assert study.methods == ["Q-base", "W-aug", "oracle"] and len(study.metrics) == len(a)
    s = study.summary()
    assert set(s["method"]) == {"Q-base", "W-aug", "oracle"} and (s["reps"] == 2).all()
    comp = study.compare("Q-base")
    assert "W-aug" in set(comp["method"]) and "Q-base" not in set(comp["method"])
    fig = study.plot("accuracy")
    assert fig.get_axes()
    with pytest.raises(simstudy.ConfigError, match="reps=0"):
        simstudy.run_study("design1", reps=0, out=tmp_path / "bad")
