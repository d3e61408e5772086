"""Texts that tell things apart (issue 40, item 5): one distinguishing line per method, each
option once, and typos or wrong folders answered with a fix that works when followed."""
import re

from simstudy.cli import main

from test_hostile import cli

SMALL = ["J=3", "n_j=8", "reps=2", "n_jobs=1", "progress=false", "figures=true",
         "methods=[Q-base,oracle]"]
PAPER = ["Q-base", "Q-fe", "Q-ri", "Q-rs", "Q-dm", "Q-dm-ri", "Q-dm-rs", "W-base", "W-noaug",
         "W-aug", "W-augID", "WS-noaug", "WS-aug", "WS-augID"]


def test_methods_prints_a_distinct_line_for_every_paper_rule(capsys):
    assert main(["methods"]) == 0
    lines = {ln.split()[0]: ln.split(None, 1)[1] for ln in capsys.readouterr().out.splitlines()
             if ln and not ln.startswith("`")}
    texts = [lines[m].split(None, 1)[1] for m in PAPER]        # after the family
    assert len(set(texts)) == len(PAPER) == 14


def test_a_method_lists_each_option_once(capsys):
    for name in ("PT-CF", "PT", "Q-rs", "W-augID"):
        assert main(["methods", name]) == 0
        opts = re.findall(r"^  (\w+)( =|$)", capsys.readouterr().out.split("options (")[1],
                          flags=re.M)
        names = [o[0] for o in opts]
        assert len(names) == len(set(names)) and names, (name, names)


def _suggested(err: str) -> str:
    """The folder or name a message tells the user to use."""
    m = (re.search(r"did you mean '?([^'?)]+)'?\?", err)
         or re.search(r"inside the study (\S+?)[:;]", err)
         or re.search(r"`simstudy report (\S+)`", err))
    assert m, err
    return m.group(1)


def test_wrong_folders_and_typos_give_a_fix_that_works(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, "run", *SMALL, "out=results/default")[0] == 0
    assert cli(capsys, "run", *SMALL[:-1], "methods=[Q-fe,oracle]", "out=results/d2")[0] == 0
    for args in (["report", "results"], ["report", "results/defualt"],
                 ["report", "results/default/figures"], ["status", "results/defualt"]):
        code, _, err = cli(capsys, *args)
        assert code == 2 and "simstudy run out=" not in err, err
        fix = _suggested(err)
        code, _, err = cli(capsys, args[0], fix)              # followed as told: it works
        assert code == 0, err
    code, _, err = cli(capsys, "run", *SMALL[:-1], "methods=[q-fe,oracle]", "out=results/t")
    assert code == 2 and "did you mean 'Q-fe'" in err
    code, _, err = cli(capsys, "run", *SMALL[:-1], f"methods=[{_suggested(err)},oracle]",
                       "out=results/t")
    assert code == 0, err
