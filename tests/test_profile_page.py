"""The service's profile view and its /profile endpoint: the framing profile of a file of
predictions, drawn as a sortable heatmap and as trends over time in a real headless
Chromium, against the page server and tiny two-task model of tests/test_web_page.py
(session fixtures in tests/conftest.py), and checked against `article-classifier profile`.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import screenshots as shots
from model.profiles import model_task, profile_predictions
from model.profiles.reading import read_predictions
from tests.conftest import request
from tests.pages import BODY_LIMIT, text_of, write_predictions

try:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
except ImportError:  # the `browser` fixture says so, and skips or fails
    By = Keys = Select = None


# --- without a browser ---------------------------------------------------------------------
def frame_labels(port) -> list[str]:
    """The served model's frames labels: a profile has a column for each, no other."""
    tasks = request(port, "GET", "/metadata")[1]["tasks"]
    return next(t["labels"] for t in tasks if t["name"] == "frames")


def command_profile(model: Path, predictions: Path, **options):
    """The profile `article-classifier profile --model MODEL` makes of `predictions`: the
    model's frames labels and its held-out error estimates, as the service uses them."""
    labels, heldout = model_task(model, "frames")
    return profile_predictions(read_predictions(predictions), "source", "frames", labels,
                               heldout, **options)


def test_profile_endpoint_reuses_the_profile_command(page_server, page_model, predictions):
    assert model_task(page_model, "frames")[0] == frame_labels(page_server)
    found = command_profile(page_model, predictions)
    expected, skipped = found.rows, found.tally.skipped
    status, served = request(page_server, "GET", "/profile?by=source&task=frames")
    assert status == 200 and served["rows"] == expected and served["skipped"] == skipped == 1
    assert served["ignored_labels"] == 0
    raw = predictions.read_bytes()
    status, uploaded = request(page_server, "POST", "/profile", raw=raw)
    assert status == 200 and uploaded["rows"] == expected
    status, bad = request(page_server, "POST", "/profile", raw=raw + b"{not json\n")
    assert status == 422 and ":32: malformed JSON" in bad["detail"]
    status, bad = request(page_server, "POST", "/profile?task=topic", raw=raw)
    assert status == 422 and "no 'topic' predictions" in bad["detail"]
    status, bad = request(page_server, "POST", "/profile?by=count", raw=raw)
    assert status == 422 and "cannot group by 'count'" in bad["detail"]
    assert request(page_server, "POST", "/profile", raw=raw * 20)[0] == 413


# --- in the browser ------------------------------------------------------------------------
def heatmap_cells(driver) -> list[list]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#heatmap td.cell')].map(td => ["
        "td.closest('tr').dataset.group, td.dataset.label, Number(td.dataset.count),"
        " Number(td.dataset.share), td.querySelector('.ci').textContent, td.textContent])")


def expected_cells(rows: list[dict]) -> list[list]:
    """What each heatmap cell shows of a profile row: corrected share, interval, raw count."""
    return [[r["source"], r["label"], r["count"], r["share"],
             f"{r['ci95_low']:.2f}–{r['ci95_high']:.2f}",
             f"{r['share']:.2f} ({r['ci95_low']:.2f}–{r['ci95_high']:.2f}) · {r['count']} of "
             f"{r['articles']} counted"] for r in rows]


def test_profile_view_draws_a_sortable_heatmap(browser, page_server, page_model, predictions,
                                               tmp_path):
    driver, base = browser, f"http://127.0.0.1:{page_server}"
    shots.open_page(driver, base, "profiles")
    # The file given to `serve --profile` is drawn at once.
    shots.wait_for(driver, "document.querySelectorAll('#heatmap tbody tr').length === 3")
    assert heatmap_cells(driver) == expected_cells(command_profile(page_model, predictions).rows)
    assert "corrected for the classifier's errors by probabilistic classify and count" in \
        text_of(driver, "heatmap-method")
    assert "method pcc. In brackets: the 95% interval" in text_of(driver, "heatmap-method")
    assert not driver.find_element(By.ID, "trends-wrap").is_displayed()  # no period chosen

    # An uploaded file replaces it; sorting by a column, by mouse and by keyboard.
    upload = write_predictions(tmp_path / "upload.jsonl", {
        "a": {"Economic": 2, "Legality": 9}, "b": {"Economic": 7, "Legality": 4},
        "c": {"Economic": 5, "Legality": 1}, "d": {"Economic": 8, "Legality": 0}}, n=10)
    upload.write_text(upload.read_text() + json.dumps(
        {"id": "e1", "source": "e", "frames": {"labels": [], "scores": {}}}) + "\n")
    driver.find_element(By.ID, "profile-file").send_keys(str(upload))
    driver.find_element(By.ID, "profile-submit").click()
    shots.wait_for(driver, "document.querySelectorAll('#heatmap tbody tr').length === 5")
    groups = lambda: driver.execute_script(  # noqa: E731
        "return [...document.querySelectorAll('#heatmap tbody tr')].map(r => r.dataset.group)")
    assert groups() == ["a", "b", "c", "d", "e"]
    driver.find_element(By.CSS_SELECTOR, "th[data-key='Economic'] button").click()
    assert groups() == ["d", "b", "c", "a", "e"]
    assert driver.find_element(By.CSS_SELECTOR, "th[data-key='Economic']").get_attribute(
        "aria-sort") == "descending"
    driver.switch_to.active_element.send_keys(Keys.ENTER)  # focus stayed on that button
    assert groups() == ["e", "a", "c", "b", "d"]
    legality = driver.find_element(By.CSS_SELECTOR, "th[data-key='Legality'] button")
    legality.send_keys(Keys.ENTER)
    assert groups() == ["a", "b", "c", "d", "e"]  # d and e tie at 0: by name
    assert "Sorted by Legality, highest first." in text_of(driver, "profile-status")
    shots.save_full_page(driver, tmp_path / "page-profiles.png")

    too_big = tmp_path / "big.jsonl"
    too_big.write_text(predictions.read_text() * 20)
    driver.find_element(By.ID, "profile-file").send_keys(str(too_big))
    driver.find_element(By.ID, "profile-submit").click()
    shots.wait_for(driver, "document.getElementById('profile-error').textContent"
                           ".includes('HTTP 413')")
    assert f"larger than the service accepts ({BODY_LIMIT} bytes" in text_of(
        driver, "profile-error")


def trend_points(driver) -> list[list]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#trends circle.point')].map(c => ["
        "c.closest('figure').dataset.label, c.dataset.period, Number(c.dataset.share),"
        " Number(c.dataset.low), Number(c.dataset.high), Number(c.dataset.count)])")


def test_profile_view_draws_trends_and_changes_method(browser, page_server, page_model,
                                                     predictions, tmp_path):
    driver, base = browser, f"http://127.0.0.1:{page_server}"
    shots.open_page(driver, base, "profiles")
    shots.wait_for(driver, "document.querySelectorAll('#heatmap tbody tr').length === 3")
    done = ("document.getElementById('profile-status').textContent.startsWith('Profile of')"
            " || document.getElementById('profile-error').textContent !== ''")

    # By month: one panel per label for the chosen source, the share as a line over the
    # three months and its interval as a band; the undated articles are counted.
    Select(driver.find_element(By.ID, "profile-over")).select_by_value("month")
    shots.wait_for(driver, "!document.getElementById('trends-wrap').hidden")
    labels = frame_labels(page_server)
    trends = command_profile(page_model, predictions, over="month")
    panels = driver.find_elements(By.CSS_SELECTOR, "#trends figure.trend")
    assert [p.get_attribute("data-label") for p in panels] == labels
    for kind in ("line", "band"):
        paths = driver.find_elements(By.CSS_SELECTOR, f"#trends svg path.{kind}")
        assert [p.get_attribute("data-label") for p in paths] == labels
        assert all(p.get_attribute("d").count("L") >= 2 for p in paths)  # three months
    for source in ("bbc", "guardian"):  # the first source, then another one chosen
        if source != "bbc":
            Select(driver.find_element(By.ID, "trend-source")).select_by_value(source)
        mine = sorted((r for r in trends.rows if r["source"] == source),
                      key=lambda r: (labels.index(r["label"]), r["period"]))
        assert trend_points(driver) == [[r["label"], r["period"], r["share"], r["ci95_low"],
                                         r["ci95_high"], r["count"]] for r in mine]
        assert {r["period"] for r in mine} == {"2024-01", "2024-02", "2024-03"}
    assert trends.tally.undated == 3
    assert text_of(driver, "trends-undated").startswith(
        "3 articles without a usable date were left out")
    shots.save_full_page(driver, tmp_path / "page-profiles-trends.png")

    # Another method redraws the heatmap and the trends from the same file.
    Select(driver.find_element(By.ID, "profile-method")).select_by_value("cc")
    shots.wait_for(driver, "document.getElementById('heatmap-method').textContent"
                           ".includes('method cc')")
    shots.wait_for(driver, done)
    assert heatmap_cells(driver) == expected_cells(
        command_profile(page_model, predictions, method="cc").rows)
    assert driver.execute_script("return [...document.querySelectorAll('#trends circle')]"
                                 ".every(c => Number(c.dataset.share) ==="
                                 " Number(c.dataset.count) / Number(c.dataset.articles))")

    # A method the file cannot be profiled by shows the service's 422 and keeps the page;
    # choosing one it can redoes that same upload.
    Select(driver.find_element(By.ID, "profile-method")).select_by_value("pcc")
    shots.wait_for(driver, done)
    unscored = write_predictions(tmp_path / "unscored.jsonl", {
        "p": {"Economic": 4}, "q": {"Economic": 1}}, n=6, scores=False)
    driver.find_element(By.ID, "profile-file").send_keys(str(unscored))
    driver.find_element(By.ID, "profile-submit").click()
    shots.wait_for(driver, "document.getElementById('profile-error').textContent !== ''")
    error = text_of(driver, "profile-error")
    assert "carry no 'frames' scores; method 'pcc' reads them" in error and "(HTTP 422)" in error
    Select(driver.find_element(By.ID, "profile-method")).select_by_value("cc")
    shots.wait_for(driver, "document.querySelectorAll('#heatmap tbody tr').length === 2")
    shots.wait_for(driver, done)
    assert text_of(driver, "profile-error") == ""
    assert text_of(driver, "trends-undated") == "Every article has a date."
