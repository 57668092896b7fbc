"""The service's web page, end to end in a real headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium) against `article-classifier serve` running a tiny
two-task model (topic + frames) trained for real in seconds. Its profile view is checked
in tests/test_profile_page.py, against the same model and server.

Outside CI, with no browser installed, the browser tests skip and say why; under CI
(CI=true, where .ci/run installs chromium) a missing browser is a failure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench import screenshots as shots
from tests.conftest import request
from tests.pages import BODY_LIMIT, bars, text_of

try:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
except ImportError:  # the `browser` fixture says so, and skips or fails
    ActionChains = By = Keys = None

ARTICLE = ("Court ruling on the tax budget", "the judge said the court ruling on the tax "
           "budget and the cost of jobs and wages will go to appeal in the market")
# Scripts and symbols the tiny tokenizer never saw: foreign even to its random encoder,
# which tells articles apart by their tokens rather than their meaning.
FOREIGN = "Москва 2024 — 17:45 №12345 ¿qué? 東京 ###### 0000 9999 ——— ★★★ ∑∫√ ¥€£"

# The fixtures these tests use (browser, page_model, predictions, page_server) are in
# tests/conftest.py, at session scope, shared with the other page tests.


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


def test_article_unlike_the_training_articles_is_flagged_beside_the_labels(browser,
                                                                             page_server):
    """The answer's `domain` is drawn above the labels: a quiet line for an article like the
    training ones (word salads of sport, business and frames), a flag for one unlike them."""
    driver = browser
    shots.open_page(driver, f"http://127.0.0.1:{page_server}")
    for title, text in (ARTICLE, ("", FOREIGN)):
        shots.classify(driver, title, text)
        api = request(page_server, "POST", "/predict", {"title": title, "text": text})[1]
        note = driver.find_element(By.CSS_SELECTOR, "#tasks > p.domain:first-child")
        assert note.get_attribute("data-in-domain") == json.dumps(api["domain"]["in_domain"])
        assert float(note.get_attribute("data-typicality")) == api["domain"]["typicality"]
    assert api["domain"]["in_domain"] is False
    assert note.text.startswith("Out of domain: this article is unlike the training articles "
                                "(typicality ")
    assert "out-of-domain" in note.get_attribute("class") and note.is_displayed()


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
