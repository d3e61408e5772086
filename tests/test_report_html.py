"""report.html (issue 26): written by every run and report, every image and link it names exists,
and in a real browser (Debian's headless Chromium; skipped when it is not installed, CI installs
it) the page loads without a console error, every image renders, sorting and filtering work."""
import re
import shutil
from pathlib import Path

import pytest

from simstudy.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "study"
    code = main(["run", "-m", "design=design1,design2", "J=4", "n_j=8", "reps=3", "n_jobs=1",
                 "progress=false", "methods=[Q-base,Q-fe,W-aug,PT,oracle]", f"out={out}"])
    assert code == 0
    return out


def _local_refs(page: str) -> list[str]:
    refs = re.findall(r'(?:src|href)="([^"#][^"]*)"', page)
    return [r for r in refs if not r.startswith(("http:", "https:", "mailto:"))]


def test_report_html_is_written_and_every_reference_resolves(store):
    page = (store / "report.html").read_text()
    for section in ("Protocol (ADEMP)", "Results: mean (Monte Carlo SE)", "Paired comparisons",
                    "Figures", "Warnings and failed fits", "Provenance"):
        assert section in page
    refs = _local_refs(page)
    imgs = [r for r in refs if r.endswith(".png")]
    on_disk = sorted(p.name for p in (store / "figures").glob("*.png"))
    assert sorted(Path(r).name for r in imgs) == on_disk and on_disk    # every figure shown
    for r in refs:
        assert (store / r).exists(), r
    assert "Each method minus <b>Q-fe</b>" in page            # the default reference
    assert "numpy" in page and "python" in page                  # provenance


def test_report_command_rewrites_it(store, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    (copy / "report.html").unlink()
    assert main(["report", str(copy), "--no-figures"]) == 0
    assert (copy / "report.html").exists()
    printed = capsys.readouterr().out                   # the terminal too opens with the answer
    assert printed.index("Headline (accuracy") < printed.index("mean (Monte Carlo SE)")


def _driver():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("no Chromium / ChromeDriver (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1280,1600"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(chromedriver), options=opts)


def test_report_in_a_real_browser(store, tmp_path):
    driver = _driver()
    from selenium.webdriver.common.by import By
    try:
        driver.get((store / "report.html").as_uri())
        driver.execute_script("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
        import time
        deadline = time.time() + 20          # the page loads figures lazily; wait for them all
        while time.time() < deadline and not driver.execute_script(
                "return Array.from(document.images).every(i => i.complete)"):
            time.sleep(0.2)
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
            ".map(i => i.src)")
        assert driver.execute_script("return document.images.length") > 0 and broken == []
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        table = driver.find_element(By.ID, "t0_0")
        first = lambda: table.find_element(By.CSS_SELECTOR, "tbody tr td").text   # noqa: E731
        header = table.find_elements(By.TAG_NAME, "th")[0]
        header.click()
        names = [r.find_element(By.TAG_NAME, "td").text
                 for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert names == sorted(names, key=str.lower) and first() == names[0]   # localeCompare
        header.click()
        assert first() == names[-1]
        box = driver.find_element(By.CSS_SELECTOR, 'input[data-table="t0_0"]')
        box.send_keys("Q-")
        shown = [r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr") if r.is_displayed()]
        assert {r.find_element(By.TAG_NAME, "td").text for r in shown} == {"Q-base", "Q-fe"}
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        # every figure legible at the page's width: its smallest text (the PNG records its
        # point size) is at least 9 px high as the browser shows the image (1400 px window)
        driver.set_window_size(1400, 1000)
        for src, shown, natural in driver.execute_script(
                "return Array.from(document.images).map(i => [i.getAttribute('src'), "
                "i.clientWidth, i.naturalWidth])"):
            assert _text_px(store / src, shown / natural) >= 9, src
        # the headline is the first section and names, per condition, summary.csv's argmax
        first_h2 = driver.find_element(By.CSS_SELECTOR, "h2")
        assert first_h2.get_attribute("id") == "headline" and first_h2.is_displayed()
        text = driver.find_element(By.CSS_SELECTOR, "div.headline").text
        for (design, J, n_j), leader in _argmax(store).items():
            assert f"{design}, (J, n_j) = ({J}, {n_j}): {leader} " in text, (design, text)
    finally:
        driver.quit()


def _text_px(png, scale: float) -> float:
    """On-screen height in px of a figure's smallest text shown at `scale` of its pixels."""
    from PIL import Image
    info = Image.open(png).info
    return float(info["simstudy:min_font_pt"]) * 130 / 72 * scale


def test_every_figure_is_legible_at_the_page_width(store):
    """Without a browser: the page shows a figure at most 1160 px wide (body 1200 px less its
    padding); its smallest text must still be >= 9 px high there. The congruence of a design
    is one image."""
    from PIL import Image
    pngs = sorted((store / "figures").glob("*.png"))
    assert pngs
    for png in pngs:
        width = Image.open(png).size[0]
        assert _text_px(png, min(1.0, 1160 / width)) >= 9, png.name
    assert sorted(p.name for p in pngs if p.name.startswith("congruence_")) == [
        "congruence_design1.png", "congruence_design2.png"]


def _argmax(store) -> dict:
    """The best mean accuracy per condition among the estimators, read from summary.csv (the
    first in the table's row order on equal means)."""
    import pandas as pd
    summ = pd.read_csv(store / "summary.csv")
    summ = summ[~summ["method"].isin(["oracle", "treat-all", "treat-none"])]
    return {k: g.loc[g["accuracy_mean"].idxmax(), "method"]
            for k, g in summ.groupby(["design", "J", "n_j"], sort=False)}


def test_the_headline_opens_summary_md_and_names_the_argmax(store):
    md = (store / "summary.md").read_text()
    assert md.startswith("## Headline (accuracy")
    head = md.split("## Protocol")[0]
    for (design, J, n_j), leader in _argmax(store).items():
        assert f"**{design}, (J, n_j) = ({J}, {n_j})**: **{leader}** " in head
    for f in ("headline.csv", "warnings.csv"):          # the files the report promises
        assert (store / f).exists(), f


@pytest.mark.slow
def test_api_example_runs_top_to_bottom(tmp_path):
    """experiments/api_example.py (README's notebook-style example) runs as a user would and
    writes what it promises: the store, report.html and its figure."""
    import subprocess
    import sys
    out = tmp_path / "api"
    res = subprocess.run([sys.executable, "experiments/api_example.py", "--out", str(out),
                          "--reps", "3"], capture_output=True, text=True, timeout=600,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr[-2000:]
    assert "mean_diff" in res.stdout and "Q-fe" in res.stdout
    for f in ("metrics.parquet", "report.html", "accuracy_tree.png"):
        assert (out / f).exists(), f


def test_provenance_in_the_store_summary_and_page(store):
    """Issue 26, item 4: config.yaml records what the last run computed with (readable YAML: no
    complex keys), summary.md and report.html show it."""
    import yaml
    text = (store / "config.yaml").read_text()
    assert "? " not in text
    prov = yaml.safe_load(text)["provenance"]
    for key in ("simstudy", "python", "numpy", "numba", "scikit-learn", "platform", "date",
                "run wall seconds", "run cpu seconds (main process)"):
        assert key in prov, key
    assert float(prov["run wall seconds"]) > 0
    assert "## Provenance (the last run)" in (store / "summary.md").read_text()
    assert f"run: numpy</td><td>{prov['numpy']}" in (store / "report.html").read_text()
