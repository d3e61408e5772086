"""Sweeps over any key into one store, backends, status, partial runs and merging (issue 7)."""
import pandas as pd
import pytest
import yaml
from test_cli import simstudy

from simstudy.config import StudyConfig
from simstudy.runner import run_study
from simstudy.store import Store, read_congruence, read_metrics

TINY = ["J=4", "n_j=6", "reps=3", "n_jobs=1", "progress=false", "methods=[Q-base,Q-fe,oracle]"]


@pytest.mark.slow
def test_sweep_over_a_design_parameter_and_a_method_option(tmp_path):
    """Every sweep point lands in one store with its swept keys as columns; the report draws
    the metric against the swept value; points share the data seeds (common random numbers)."""
    out = tmp_path / "sweep"
    simstudy("run", "-m", "design.beta1=0,0.5", "+method_options.Q-base.moderators=[X3],[X3,X4]",
             *TINY, "figures=true", f"out={out}", cwd=tmp_path)
    m = read_metrics(out)
    labels = sorted(m["point"].unique())
    # design1's beta1 is 0: at its default a key does not name the point (canonical labels)
    assert len(labels) == 4 and sum("design.beta1=0.5" in p for p in labels) == 2
    assert "method_options.Q-base.moderators=[X3]" in labels
    assert len(m) == 4 * 3 * 3
    summ = pd.read_csv(out / "summary.csv")
    assert set(summ["design.beta1"]) == {0, 0.5}
    assert set(summ["method_options.Q-base.moderators"]) == {"[X3]", "[X3,X4]"}
    assert (out / "figures" / "sweep_accuracy_vs_design.beta1.png").exists()
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    betas = {p["keys"]["design.beta1"]: p["designs"]["design1"]["beta1"] for p in cfg["points"].values()}
    assert betas == {"0": 0.0, "0.5": 0.5}
    # Q-fe does not use the swept Q-base option: same beta1 -> identical results
    qfe = m[m["method"] == "Q-fe"].set_index(["point", "replicate"])["accuracy"]
    a = qfe.xs("method_options.Q-base.moderators=[X3]", level="point")
    b = qfe.xs("method_options.Q-base.moderators=[X3,X4]", level="point")
    assert a.equals(b)
    # a point is still identity-checked: same point, different study -> refused
    res = simstudy("run", "design.beta1=0.5", "+method_options.Q-base.moderators=[X3]",
                   *TINY[:-1], "methods=[Q-base]", f"out={out}", check=False, cwd=tmp_path)
    assert res.returncode == 2 and "sweep point" in res.stderr


@pytest.mark.slow
def test_sweep_over_J_draws_a_line_against_J(tmp_path):
    out = tmp_path / "J"
    simstudy("run", "J=[3,4,6]", *TINY[1:], "figures=true", f"out={out}", cwd=tmp_path)
    assert (out / "figures" / "sweep_accuracy_vs_J.png").exists()


def _cfg(**kw):
    base = dict(design={"name": "design1"}, J=[4], n_j=[6, 8], reps=4,
                methods=["Q-base", "W-aug", "oracle"], n_jobs=2)
    return StudyConfig.from_config({**base, **kw})


@pytest.mark.slow
def test_dask_local_cluster_is_bit_identical_to_loky(tmp_path):
    pytest.importorskip("distributed")
    a = run_study(_cfg(backend="loky"), tmp_path / "loky", progress=False).out
    b = run_study(_cfg(backend="dask"), tmp_path / "dask", progress=False).out
    cols = ["accuracy", "f1", "spearman", "auc", "value", "regret", "treated_share"]
    ma, mb = read_metrics(a), read_metrics(b)
    assert len(ma) == 2 * 4 * 3
    pd.testing.assert_frame_equal(ma[cols], mb[cols], check_exact=True)
    pd.testing.assert_frame_equal(read_congruence(a), read_congruence(b), check_exact=True)


def test_split_replicates_status_and_merge(tmp_path):
    """Half the replicates here, half 'elsewhere', merged: equals one full run; merging again
    adds nothing; status shows the gaps before and none after."""
    from simstudy.report.tables import status_table
    full = run_study(_cfg(n_jobs=1), tmp_path / "full", progress=False).out
    a = run_study(_cfg(n_jobs=1, replicates="0:2"), tmp_path / "a", progress=False).out
    b = run_study(_cfg(n_jobs=1, replicates="2:4"), tmp_path / "b", progress=False).out
    table, text = status_table(a)
    assert list(table["done"]) == [2, 2] and list(table["missing"]) == ["2-3", "2-3"]
    assert "simstudy merge" in text
    with Store(a) as store:
        assert store.merge_from(b) == (2 * 2, 0)
        assert store.merge_from(b) == (0, 2 * 2)
    table, _ = status_table(a)
    assert list(table["done"]) == [4, 4] and set(table["missing"]) == {"-"}
    cols = ["point", "design", "J", "n_j", "replicate", "method", "accuracy", "auc", "regret"]
    pd.testing.assert_frame_equal(read_metrics(a)[cols], read_metrics(full)[cols], check_exact=True)
    pd.testing.assert_frame_equal(read_congruence(a), read_congruence(full), check_exact=True)
    # through the CLI too, and a different study is refused
    other = run_study(_cfg(n_jobs=1, seed=7), tmp_path / "other", progress=False).out
    res = simstudy("merge", str(other), str(a), check=False)
    assert res.returncode == 2 and "seed" in res.stderr
    res = simstudy("status", str(a))
    assert "8 of 8 planned replicates done" in res.stdout


@pytest.mark.slow
def test_concurrent_jobs_write_one_store(tmp_path):
    """Hydra's submitit launcher (local executor, as SLURM jobs would) runs two sweep points as
    separate processes at once into one store; nothing is lost or duplicated."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = tmp_path / "jobs"
    simstudy("run", "-m", "hydra/launcher=submitit_local", "design.beta1=0.1,0.4", *TINY,
             "figures=false", f"out={out}", "hydra.launcher.timeout_min=10", cwd=tmp_path)
    m = read_metrics(out)
    assert sorted(m["point"].unique()) == ["design.beta1=0.1", "design.beta1=0.4"]
    assert len(m) == 2 * 3 * 3 and not m.duplicated(["point", "replicate", "method"]).any()


@pytest.mark.parametrize("kw, msg", [
    (dict(replicates="5:2"), "replicates"), (dict(replicates="abc"), "start:stop"),
    (dict(backend="spark"), "dask"),
])
def test_bad_sweep_config(kw, msg):
    from simstudy.designs import ConfigError
    with pytest.raises(ConfigError, match=msg):
        _cfg(**kw)


def test_slurm_preset_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    from simstudy.cli import config_dir
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "n_jobs=8"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.cpus_per_task == 8
