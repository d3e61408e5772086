"""The example notebook (issue 40, item 6) runs top to bottom in a real Jupyter kernel
(nbclient), as a user opening it would run it, and shows the headline and the figure."""
import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_example_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(HERE / "experiments" / "example.ipynb", as_version=4)
    monkeypatch.setenv("SIMSTUDY_NOTEBOOK_OUT", str(tmp_path / "nb"))
    monkeypatch.setenv("SIMSTUDY_NOTEBOOK_REPS", "3")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(HERE)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "\n".join(str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "## Headline (accuracy" in text and "tree, (J, n_j) = (25, 25)" in text
    assert (tmp_path / "nb" / "report.html").exists()
