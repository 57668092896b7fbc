"""Screenshots of the service's web page, for the README, taken in a real headless Chromium.

    python -m bench.screenshots --model runs/news_topic_frames/model \\
        --predictions predictions.jsonl --out docs/img [--article story.html] [--sort Economic] \\
        [--over month]

Starts `article-classifier serve MODEL --profile PREDICTIONS` on a free local port, opens
the page, classifies an article (a built-in sample, or `--article`: a .txt whose first line
is the title, or a saved .html page, which goes through the page's own file reader), and
writes page-article.png and page-profiles.png into `--out` (with `--over`, the profile view
draws the trend lines of the first source below its heatmap).

Needs Debian's `chromium` and `chromium-driver` (apt-get install chromium chromium-driver)
and selenium (the `dev` extra). Nothing is downloaded: Selenium is pointed at the system
chromedriver, so its driver manager never runs. tests/test_web_page.py uses these helpers.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from tests.servers import free_port, start_service, stop_service

ROOT = Path(__file__).resolve().parents[1]
# Without the background-networking flags Chromium phones home at start, and on an
# offline machine that stalls or refuses the session; a fresh profile every time keeps
# one run from seeing another's state.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars"]
SAMPLE_TITLE = "Council delays vote on harbour tax as shipping firms warn of job losses"
SAMPLE_TEXT = (
    "The city council postponed a vote on a new harbour levy on Tuesday after shipping "
    "companies warned that the charge would cost hundreds of jobs and push cargo to "
    "rival ports.\n\n"
    "The levy, worth about 40 million a year, was meant to pay for dredging and a new "
    "sea wall. Council leaders said the money was needed to protect homes from flooding, "
    "and that the port's owners had profited for years from public works.\n\n"
    "Opposition members accused the leadership of rushing the plan through without a "
    "proper assessment, and a group of dock workers protested outside the chamber. "
    "\"We are the ones who will pay for this,\" one of them said.\n\n"
    "Lawyers for the shipping firms said they would challenge the levy in court if it was "
    "approved, arguing that the council had no power to tax international cargo. The "
    "vote is now expected next month.")


def find_browser() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or why they cannot be used."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver))
               if path is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if missing:
        return (f"no {' or '.join(missing)} here; install them with apt-get install "
                "chromium chromium-driver")
    return chromium, driver


def start_browser(profile_dir: Path, width: int = 1280, height: int = 900):
    """A headless Chromium under Selenium, offline-safe, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if isinstance(found, str):
        raise RuntimeError(found)
    chromium, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}",
                 f"--window-size={width},{height}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def wait_for(driver, script: str, timeout: float = 60):
    """Wait until the JavaScript expression `script` is truthy; returns its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: d.execute_script(f"return {script}"))


def open_page(driver, base: str, view: str = "article") -> None:
    """Load the page afresh (a new URL differing only in its #view would not reload it)."""
    driver.get("about:blank")
    driver.get(f"{base}/#{view}")
    wait_for(driver, "document.body.dataset.ready === 'true'")


def save_full_page(driver, path: Path) -> Path:
    """A screenshot of the whole page, not just the window: the window grows to fit."""
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, 900)  # from the usual height, not an earlier page's
    for _ in range(3):  # the window's frame takes some height: grow until the page fits
        missing = driver.execute_script(
            "return document.documentElement.scrollHeight - window.innerHeight")
        if missing <= 0:
            break
        driver.set_window_size(width, driver.get_window_size()["height"] + missing)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path


def classify(driver, title: str, text: str, timeout: float = 120) -> None:
    """Fill the article form and submit it; returns once a result or an error is shown."""
    from selenium.webdriver.common.by import By

    for field, value in (("title", title), ("text", text)):
        element = driver.find_element(By.ID, field)
        element.clear()
        # send_keys types character by character: slow for long text, so set it directly.
        driver.execute_script("arguments[0].value = arguments[1]", element, value)
    driver.execute_script("document.getElementById('status').textContent = ''")
    driver.find_element(By.ID, "submit").click()
    wait_for(driver, "document.getElementById('status').textContent.startsWith('Classified')"
                     " || document.getElementById('error').textContent !== ''", timeout)


def open_file(driver, path: Path, timeout: float = 30) -> None:
    """Give the article form a saved page or text file, as a user choosing it would."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "file").send_keys(str(Path(path).resolve()))
    wait_for(driver, "document.getElementById('status').textContent.startsWith('Read ')",
             timeout)


def take(model: Path, predictions: Path, out: Path, article: Path | None = None,
         sort: str | None = None, by: str = "source", over: str | None = None) -> list[Path]:
    """Both screenshots of the page serving `model`; returns their paths."""
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory(prefix="page-shots-") as tmp:
        port = free_port()
        proc = start_service(model, port, Path(tmp) / "serve.log", "--profile",
                             str(predictions))
        driver = None
        try:
            driver = start_browser(Path(tmp) / "chromium")
            base = f"http://127.0.0.1:{port}"
            open_page(driver, base)
            if article is not None and article.suffix.lower() in (".html", ".htm"):
                open_file(driver, article)
                classify(driver, driver.find_element(By.ID, "title").get_attribute("value"),
                         driver.find_element(By.ID, "text").get_attribute("value"))
            elif article is not None:
                title, _, text = article.read_text(encoding="utf-8").partition("\n")
                classify(driver, title.strip(), text.strip())
            else:
                classify(driver, SAMPLE_TITLE, SAMPLE_TEXT)
            error = driver.find_element(By.ID, "error").text
            if error:
                raise RuntimeError(f"the page showed an error: {error}")
            shots = [save_full_page(driver, out / "page-article.png")]
            driver.set_window_size(1280, 900)
            open_page(driver, base, "profiles")
            # The view draws the server's file by itself; its button shows once it has.
            wait_for(driver, "!document.getElementById('profile-server').hidden")
            driver.find_element(By.ID, "profile-by").clear()
            driver.find_element(By.ID, "profile-by").send_keys(by)
            # Set without a change event: the click below draws it, once.
            driver.execute_script("document.getElementById('profile-over').value = "
                                  "arguments[0]", over or "")
            # Drawn again for `by`: wait for this drawing, not the one already there.
            driver.execute_script("document.getElementById('profile-status').textContent = ''")
            driver.find_element(By.ID, "profile-server").click()
            wait_for(driver, "document.getElementById('profile-status').textContent"
                             ".startsWith('Profile of') || "
                             "document.getElementById('profile-error').textContent !== ''")
            error = driver.find_element(By.ID, "profile-error").text
            if error:
                raise RuntimeError(f"the profile view showed an error: {error}")
            if sort:
                driver.find_element(
                    By.CSS_SELECTOR, f'#heatmap th[data-key="{sort}"] button').click()
            shots.append(save_full_page(driver, out / "page-profiles.png"))
            return shots
        finally:
            if driver is not None:
                driver.quit()
            stop_service(proc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="model artifact folder")
    parser.add_argument("--predictions", required=True, type=Path,
                        help="predictions JSONL with the --by field (predict --keep source)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--article", type=Path, help=".txt (title on line 1) or .html page")
    parser.add_argument("--by", default="source", help="the field naming the source")
    parser.add_argument("--sort", metavar="LABEL", help="sort the heatmap by this label")
    parser.add_argument("--over", choices=("month", "quarter", "year"),
                        help="also draw the trend lines by this period (needs dated lines)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for path in take(args.model, args.predictions, args.out, args.article, args.sort,
                     args.by, args.over):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
