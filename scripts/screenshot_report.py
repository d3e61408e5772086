"""The first screen of a report (top of page, 1400 x 1000, headless Chromium), as a PNG: what a
reader sees before scrolling. Needs Debian's chromium + chromium-driver and selenium (the test
extra).

    python scripts/screenshot_report.py results/paper/report.html results/paper/report.png
"""
import shutil
import sys
from pathlib import Path


def main(page: str, png: str) -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        print("screenshot_report.py: needs chromium and chromedriver (apt-get install chromium "
              "chromium-driver)", file=sys.stderr)
        return 2
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1400,1000", "--hide-scrollbars"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        d.set_window_size(1400, 1000)
        d.get(Path(page).resolve().as_uri())
        d.save_screenshot(png)
    finally:
        d.quit()
    print(f"{png}: the first screen of {page}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
