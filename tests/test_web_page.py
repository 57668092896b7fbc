"""The service's web page, end to end in a real headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium) against `article-classifier serve` running a tiny
two-task model (topic + frames) trained for real in seconds.

Outside CI, with no browser installed, the browser tests skip and say why; under CI
(CI=true, where .ci/run installs chromium) a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from bench import screenshots as shots
from model.serving.profiles import framing_profile, read_predictions
from tests.conftest import request, run_cli
from tests.servers import free_port, start_service, stop_service
from tests.test_frozen_and_lexical import write_frames_jsonl

try:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
except ImportError:  # the `browser` fixture says so, and skips or fails
    ActionChains = By = Keys = None

ARTICLE = ("Court ruling on the tax budget", "the judge said the court ruling on the tax "
           "budget and the cost of jobs and wages will go to appeal in the market")
BODY_LIMIT = 20_000


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    found = shots.find_browser()
    if isinstance(found, str):
        if in_ci():
            pytest.fail(f"CI must run the browser tests, but there is {found}")
        print(f"\ntest_web_page: skipping the browser tests: {found}")
        pytest.skip(found)
    driver = shots.start_browser(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_model(tiny_encoder, keyword_data, tmp_path_factory) -> Path:
    """Topic (single-label) and frames (multi-label) in one model, frozen-trained."""
    root = tmp_path_factory.mktemp("page_model")
    frames = write_frames_jsonl(root / "frames.jsonl", n=120)
    config = {
        "model": {"encoder": str(tiny_encoder), "max_length": 64, "stride": 8,
                  "max_chunks": 8, "pooling": "mean"},
        "tasks": [{"name": "topic", "type": "single_label",
                   "dataset": {"format": "jsonl", "path": str(keyword_data)}},
                  {"name": "frames", "type": "multi_label", "threshold_tuning": "global",
                   "dataset": {"format": "jsonl", "path": str(frames)}}],
        "training": {"output_dir": str(root / "run"), "mode": "frozen", "precision": "fp32",
                     "embedding_cache": str(root / "cache")}}
    (root / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    run_cli("-m", "train", "--config", str(root / "config.yaml"))
    return root / "run" / "model"


def write_predictions(path: Path, shares: dict[str, dict[str, int]], n: int = 10) -> Path:
    """Prediction lines as `predict --keep source` writes them: per source, `shares[source]
    [frame]` of its `n` articles carry the frame; one error line is left out."""
    with open(path, "w") as handle:
        for source, counts in shares.items():
            for i in range(n):
                labels = [f for f, k in counts.items() if i < k]
                scores = {f: (0.9 if f in labels else 0.1) for f in counts}
                handle.write(json.dumps({"id": f"{source}{i}", "source": source,
                                         "frames": {"labels": labels, "scores": scores}})
                             + "\n")
        handle.write(json.dumps({"id": "bad", "source": "x", "error": "empty text"}) + "\n")
    return path


@pytest.fixture(scope="module")
def predictions(tmp_path_factory) -> Path:
    return write_predictions(tmp_path_factory.mktemp("pred") / "predictions.jsonl", {
        "bbc": {"Economic": 9, "Legality": 1}, "breitbart": {"Economic": 3, "Legality": 6},
        "guardian": {"Economic": 5, "Legality": 8}})


@pytest.fixture(scope="module")
def page_server(page_model, predictions, tmp_path_factory):
    port = free_port()
    proc = start_service(page_model, port, tmp_path_factory.mktemp("serve") / "log",
                               "--precision", "fp32", "--max-body-bytes", str(BODY_LIMIT),
                               "--profile", str(predictions))
    yield port
    stop_service(proc)


def text_of(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).get_attribute("textContent").strip()


def bars(driver, task: str) -> list[dict]:
    return driver.execute_script(
        "return [...document.querySelectorAll(`.task[data-task='${arguments[0]}'] li`)]"
        ".map(li => ({...li.dataset}))", task)


# --- without a browser: what the page is made of and how it is served ---------------------
def test_page_and_its_files_are_served_from_here_alone(page_server):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", page_server, timeout=30)
    conn.request("GET", "/")
    response = conn.getresponse()
    html = response.read().decode()
    assert response.status == 200 and "text/html" in response.getheader("content-type")
    assert "default-src 'none'" in response.getheader("content-security-policy")
    conn.close()
    assert request(page_server, "GET", "/web/app.js")[0] == 200
    for bad in ("/web/..%2Fservice.py", "/web/ui.py", "/web/nothing.js"):
        assert request(page_server, "GET", bad)[0] == 404
    # Every reference is to this service: no scheme, no protocol-relative URL.
    for ref in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert not re.match(r"^[a-z]+:|^//", ref), ref
    web = Path(__file__).resolve().parents[1] / "model" / "serving" / "static"
    for path in web.iterdir():
        text = path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/", text), path.name


def frame_labels(port) -> list[str]:
    """The served model's frames labels: a profile has a column for each, no other."""
    tasks = request(port, "GET", "/metadata")[1]["tasks"]
    return next(t["labels"] for t in tasks if t["name"] == "frames")


def test_profile_endpoint_reuses_the_profile_command(page_server, predictions):
    expected, skipped = framing_profile(read_predictions(predictions), "source",
                                        labels=frame_labels(page_server))
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
def test_article_submitted_by_keyboard_shows_the_apis_answer(browser, page_server, tmp_path):
    driver, base = browser, f"http://127.0.0.1:{page_server}"
    shots.open_page(driver, base)
    title, text = ARTICLE
    # Keys go to whatever has the focus, as a user's do (an element's send_keys would
    # hand a file input a path instead).
    keyboard = lambda *keys: ActionChains(driver).send_keys(*keys).perform()  # noqa: E731
    driver.find_element(By.ID, "title").click()
    keyboard(title, Keys.TAB, text)
    for _ in range(10):  # Tab on to the button: it must be reachable without a mouse
        if driver.switch_to.active_element.get_attribute("id") == "submit":
            break
        keyboard(Keys.TAB)
    assert driver.switch_to.active_element.get_attribute("id") == "submit"
    keyboard(Keys.ENTER)
    shots.wait_for(driver, "document.getElementById('status').textContent"
                           ".startsWith('Classified')")
    assert text_of(driver, "error") == ""

    status, api = request(page_server, "POST", "/predict", {"title": title, "text": text,
                                                            "evidence": 3})
    assert status == 200
    topic = driver.find_element(By.CSS_SELECTOR, ".task[data-task='topic'] .answer-label")
    assert topic.text == api["topic"]["label"]
    score = driver.find_element(By.CSS_SELECTOR, ".task[data-task='topic'] .answer-score")
    assert float(score.get_attribute("data-score")) == pytest.approx(api["topic"]["score"],
                                                                     abs=1e-5)
    assert score.text == f"{100 * api['topic']['score']:.1f}%"
    shown = bars(driver, "frames")
    ranked = sorted(api["frames"]["scores"].items(), key=lambda kv: -kv[1])
    assert [b["label"] for b in shown] == [label for label, _ in ranked]
    for bar, (_, expected) in zip(shown, ranked):
        assert float(bar["score"]) == pytest.approx(expected, abs=1e-5)
    assert [b["label"] for b in shown if b["given"] == "true"] == api["frames"]["labels"]
    meta = request(page_server, "GET", "/metadata")[1]
    frames_task = next(t for t in meta["tasks"] if t["name"] == "frames")
    cuts = dict(zip(frames_task["labels"], frames_task["thresholds"]))
    assert all(float(b["threshold"]) == pytest.approx(cuts[b["label"]]) for b in shown)
    assert text_of(driver, "article-text") == text
    # The evidence of the label chosen at first is marked where each passage lies: the
    # API's passages in the text in the shown text, those in the title in the title.
    chosen = driver.find_element(By.CSS_SELECTOR, "input.evidence-choice:checked")
    label = chosen.find_element(By.XPATH, "./ancestor::li").get_attribute("data-label")
    task = chosen.find_element(By.XPATH, "./ancestor::*[@data-task]").get_attribute("data-task")
    for field, where in (("text", "#article-text"), ("title", "#shown-title")):
        expected = {p["text"] for p in api["evidence"][task][label] if p["field"] == field}
        marks = {m.text for m in driver.find_elements(By.CSS_SELECTOR, f"{where} mark")}
        assert marks == expected, field
    assert f"for {label} ({task})" in text_of(driver, "evidence-note")
    # Nothing was fetched from anywhere but this service.
    assert driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith(location.origin))") == []
    assert shots.save_full_page(driver, tmp_path / "page-article.png").stat().st_size > 10_000

    # One threshold for every frame, as the API takes it.
    driver.find_element(By.TAG_NAME, "summary").click()
    driver.find_element(By.ID, "threshold").send_keys("0.99")
    shots.classify(driver, title, text)
    api = request(page_server, "POST", "/predict", {"title": title, "text": text,
                                                    "threshold": 0.99})[1]
    shown = bars(driver, "frames")
    assert [b["label"] for b in shown if b["given"] == "true"] == api["frames"]["labels"]
    assert {b["threshold"] for b in shown} == {"0.99"}


def test_errors_are_said_in_words(browser, page_server, tmp_path):
    driver, base = browser, f"http://127.0.0.1:{page_server}"
    shots.open_page(driver, base)
    shots.classify(driver, "Too long", "word " * (BODY_LIMIT // 4))
    error = text_of(driver, "error")
    assert f"larger than the service accepts ({BODY_LIMIT} bytes" in error and "413" in error
    assert not driver.find_element(By.ID, "results").is_displayed()
    shots.save_full_page(driver, tmp_path / "page-413.png")

    shots.classify(driver, "", "   ")  # the API's own validation message, shown as is
    detail = request(page_server, "POST", "/predict", {"text": "   "})[1]["detail"]
    assert text_of(driver, "error") == (f"The service could not accept this article: "
                                        f"{detail} (HTTP 422)")
    # 503 and a service that is gone cannot be caused here on demand: the page's fetch is
    # answered in the browser instead, to check the words it shows for them.
    driver.execute_script("window.fetch = async () => new Response(JSON.stringify("
                          "{detail: 'the service is at capacity; retry shortly'}), "
                          "{status: 503})")
    shots.classify(driver, *ARTICLE)
    assert "busy or its model is not ready: the service is at capacity" in text_of(
        driver, "error")
    driver.execute_script("window.fetch = async () => { throw new TypeError('Failed to fetch') }")
    shots.classify(driver, *ARTICLE)
    assert text_of(driver, "error").startswith("Could not reach the service at")


def test_evidence_of_the_chosen_frame_is_marked(browser, page_server, tmp_path):
    """The page's fetch puts known passages into the answer, to check that offsets count
    in code points (an emoji before a passage), that a passage found by its offsets alone
    is marked, and that the marks follow the chosen label, also from the keyboard."""
    driver, base = browser, f"http://127.0.0.1:{page_server}"
    shots.open_page(driver, base)
    text = "\U0001F4B0 the tax budget and wages. Then the court ruling and the judge."
    spans = {"Economic": "tax budget and wages", "Legality": "court ruling"}
    evidence = {label: [{"start": text.index(s), "end": text.index(s) + len(s), "score": 0.8,
                         "text": s}] for label, s in spans.items()}
    del evidence["Economic"][0]["text"]  # found by its offsets alone: code points, not UTF-16
    driver.execute_script("""
        const real = window.fetch, evidence = arguments[0];
        window.fetch = async (url, init) => {
          const response = await real(url, init);
          const body = await response.json();
          body.evidence = {frames: evidence};
          return new Response(JSON.stringify(body), {status: response.status});
        };""", evidence)
    shots.classify(driver, "", text)
    marks = lambda: [m.text for m in driver.find_elements(By.CSS_SELECTOR, "#article-text mark")]  # noqa: E731
    ranked = [b for b in bars(driver, "frames") if b["label"] in spans]
    first = next((b for b in ranked if b["given"] == "true"), ranked[0])["label"]
    assert marks() == [spans[first]]
    other = next(label for label in spans if label != first)
    radio = driver.find_element(
        By.CSS_SELECTOR, f".task[data-task='frames'] li[data-label='{other}'] input")
    radio.send_keys(Keys.SPACE)  # radios are operated from the keyboard too
    assert marks() == [spans[other]]
    assert text_of(driver, "article-text") == text
    shots.save_full_page(driver, tmp_path / "page-evidence.png")


def test_saved_html_page_is_read_in_the_browser(browser, page_server, tmp_path):
    page = tmp_path / "story.html"
    page.write_text("<html><head><title>Judge rules on budget</title><style>p{}</style>"
                    "<script>document.title='hacked'</script></head><body><nav>Home News"
                    "</nav><article><h1>Judge rules on budget</h1><p>The court ruling on "
                    "the tax budget.</p><p>Jobs and wages<br>will follow.</p></article>"
                    "<footer>Copyright</footer></body></html>")
    driver = browser
    shots.open_page(driver, f"http://127.0.0.1:{page_server}")
    shots.open_file(driver, page)
    assert driver.find_element(By.ID, "title").get_attribute("value") == "Judge rules on budget"
    assert driver.find_element(By.ID, "text").get_attribute("value") == (
        "Judge rules on budget\n\nThe court ruling on the tax budget.\n\nJobs and wages\n"
        "will follow.")
    shots.classify(driver, "Judge rules on budget",
                   driver.find_element(By.ID, "text").get_attribute("value"))
    assert text_of(driver, "error") == "" and bars(driver, "frames")


def test_model_card_shows_tasks_labels_metrics_and_encoder(browser, page_server):
    driver = browser
    shots.open_page(driver, f"http://127.0.0.1:{page_server}")
    meta = request(page_server, "GET", "/metadata")[1]
    for task in meta["tasks"]:
        section = driver.find_element(By.CSS_SELECTOR, f"#card .card-task[data-task="
                                                       f"'{task['name']}']")
        rows = section.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert [r.get_attribute("data-label") for r in rows] == task["labels"]
        test = meta["metrics"]["test"][task["name"]]
        key = "accuracy" if task["type"] == "single_label" else "micro-F1"
        value = test["accuracy" if key == "accuracy" else "micro_f1"]
        assert f"{key} {value:.3f}" in section.text
        assert f"on {test['n']} test articles" in section.text
    assert meta["model"]["encoder"] in text_of(driver, "card-body")
    assert "frames (4 labels)" in text_of(driver, "model-line")
    # Without an API key the footer links to the API description (with one, a note:
    # tests/test_service_page.py).
    assert [a.text for a in driver.find_elements(By.CSS_SELECTOR, "footer a")
            if a.is_displayed()] == ["/openapi.json", "/docs"]
    assert not driver.find_element(By.CSS_SELECTOR, "footer .key-note").is_displayed()


def test_profile_view_draws_a_sortable_heatmap(browser, page_server, predictions, tmp_path):
    driver, base = browser, f"http://127.0.0.1:{page_server}"
    shots.open_page(driver, base, "profiles")
    # The file given to `serve --profile` is drawn at once.
    shots.wait_for(driver, "document.querySelectorAll('#heatmap tbody tr').length === 3")
    expected, _ = framing_profile(read_predictions(predictions), "source",
                                  labels=frame_labels(page_server))
    cells = driver.execute_script(
        "return [...document.querySelectorAll('#heatmap td.cell')].map(td => ["
        "td.closest('tr').dataset.group, td.dataset.label, Number(td.dataset.count),"
        " td.querySelector('.ci').textContent])")
    assert cells == [[r["source"], r["label"], r["count"],
                      f"{r['ci95_low']:.2f}–{r['ci95_high']:.2f}"] for r in expected]

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
