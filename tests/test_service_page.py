"""The web page in a real headless Chromium (see tests/test_web_page.py, whose fixtures
these tests share): evidence passages marked in the field they lie in, the reading line
of a long or early-exited article, and a service with an API key, which the page asks
for once and sends on every call, and whose footer says its API links need the key."""

from __future__ import annotations

import pytest

from bench import screenshots as shots
from tests.conftest import request
from tests.servers import free_port, start_service, stop_service
from tests.test_web_page import ARTICLE, bars, text_of

# browser, page_model, page_server and predictions are session fixtures of conftest.py.

try:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the `browser` fixture says so, and skips or fails
    By = expected_conditions = WebDriverWait = None

KEY = "page-key-0123"


def marks(driver, where: str) -> list[str]:
    return [m.text for m in driver.find_elements(By.CSS_SELECTOR, f"{where} mark")]


def answer_with(driver, script: str, *args) -> None:
    """The page's fetch gets the service's real answer, changed by `script` (a function
    body on `body`), to show what the service cannot be made to answer on demand."""
    driver.execute_script("""
        const real = window.fetch, change = new Function('body', 'args', arguments[0]),
              args = arguments[1];
        window.fetch = async (url, init) => {
          const response = await real(url, init);
          const body = await response.json();
          change(body, args);
          return new Response(JSON.stringify(body), {status: response.status});
        };""", script, list(args))


def test_title_passages_are_marked_in_the_title(browser, page_server):
    driver = browser
    shots.open_page(driver, f"http://127.0.0.1:{page_server}")
    # The passage's words are in the text too: it must be marked where it lies, the title.
    title, text = "  The tax budget vote", "Wages rise. the tax budget is late. Jobs follow."
    passage = {"field": "title", "start": 6, "end": 16, "score": 0.7, "text": "tax budget"}
    assert title[6:16] == "tax budget"  # offsets count in the title as sent, spaces too
    answer_with(driver, "body.evidence = {frames: Object.fromEntries(Object.keys("
                        "body.frames.scores).map((l) => [l, args]))}", passage)
    shots.classify(driver, title, text)
    assert marks(driver, "#shown-title") == ["tax budget"]
    assert marks(driver, "#article-text") == []
    assert text_of(driver, "shown-title") == title.strip()
    assert text_of(driver, "article-text") == text


def test_the_reading_line_says_what_was_read(browser, page_server):
    driver = browser
    shots.open_page(driver, f"http://127.0.0.1:{page_server}")
    title, text = ARTICLE[0], " ".join([ARTICLE[1]] * 60)
    shots.classify(driver, title, text)
    api = request(page_server, "POST", "/predict", {"title": title, "text": text,
                                                    "evidence": 3})[1]
    model = request(page_server, "GET", "/metadata")[1]["model"]
    read, total, tokens = api["chunks"], api["chunks_total"], api["tokens"]
    assert read == model["max_chunks"] < total  # longer than the service reads whole
    most = min(tokens, read * (model["max_length"] - 2))
    assert text_of(driver, "reading") == (
        f"The model read {read} of the article's {total} token windows (at most {most} of "
        f"its {tokens} tokens): this service reads at most {read} token windows an "
        "article, spread over it.")
    # Early exit: the first window decided every task (the page asks for evidence, which
    # reads whole articles, so the answer is changed to one an early-exiting model gives).
    answer_with(driver, "Object.assign(body, {chunks: 1, chunks_total: 5, tokens: 300, "
                        "truncated: true})")
    shots.classify(driver, *ARTICLE)
    assert text_of(driver, "reading") == (
        f"The model read 1 of the article's 5 token windows (at most "
        f"{model['max_length'] - 2} of its 300 tokens): its first window already decided "
        "every task, so it stopped there.")
    assert bars(driver, "frames")


@pytest.fixture(scope="module")
def keyed_page(page_model, tmp_path_factory):
    port = free_port()
    proc = start_service(page_model, port, tmp_path_factory.mktemp("keyed") / "log",
                         "--precision", "fp32", "--api-key", KEY, "--max-chunks", "3")
    yield port
    stop_service(proc)


def answer_prompt(driver, key: str) -> str:
    WebDriverWait(driver, 30).until(expected_conditions.alert_is_present())
    alert = driver.switch_to.alert
    question = alert.text
    alert.send_keys(key)
    alert.accept()
    return question


def test_the_page_asks_for_the_key_once_and_classifies(browser, keyed_page):
    driver, base = browser, f"http://127.0.0.1:{keyed_page}"
    driver.get("about:blank")
    driver.get(f"{base}/#article")  # the page itself is open; /metadata is not
    assert "needs an API key" in answer_prompt(driver, "wrong")
    assert "refused" in answer_prompt(driver, KEY)  # a wrong key is asked for again
    shots.wait_for(driver, "document.body.dataset.ready === 'true'")
    # A link cannot send the key, so /openapi.json and /docs would be a 401: the footer
    # says so in place of its links.
    assert not any(a.is_displayed() for a in driver.find_elements(By.CSS_SELECTOR,
                                                                  "footer a"))
    note = driver.find_element(By.CSS_SELECTOR, "footer .key-note")
    assert note.is_displayed() and "need this service's API key" in note.text
    # The card shows the served --max-chunks, and the artifact's own beside it.
    assert "at most 3 per article as served (the model's own setting: 8)" in text_of(
        driver, "card-body")
    shots.classify(driver, *ARTICLE)
    assert text_of(driver, "error") == ""
    api = request(keyed_page, "POST", "/predict", {"title": ARTICLE[0], "text": ARTICLE[1]},
                  headers={"X-API-Key": KEY})[1]
    assert driver.find_element(
        By.CSS_SELECTOR, ".task[data-task='topic'] .answer-label").text == api["topic"]["label"]
    # Kept for the tab: a reload asks nothing and the profile view works with it too.
    shots.open_page(driver, base, "profiles")
    assert text_of(driver, "profile-error") == ""  # 404 (no --profile) is said nothing of
    driver.execute_script("sessionStorage.clear()")
