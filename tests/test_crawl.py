"""Web pages and WARC crawls as input: extraction, the WARC reader, `predict` and the
service, on pages and crawls built in code (no network)."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from model.inputs import crawl
from model.inputs.crawl import NO_ARTICLE, _mostly_lists, extract_page, iter_warc, site_of
from model.inputs.records import count_records, iter_articles
from tests.conftest import request, run_cli
from tests.test_predict_cli import predict_cli, read_jsonl

STORY = [
    "The central bank raised interest rates by a quarter of a percentage point on Thursday, "
    "the third increase this year, as policymakers moved to cool inflation that has stayed "
    "above target for eighteen months.",
    "Governor Maria Alvarez told reporters that the committee had weighed the risk of "
    "slowing growth against the cost of letting prices rise further, and that most members "
    "judged the second danger the greater one.",
    "Markets had expected the move. Shares of the largest lenders rose modestly in early "
    "trading, while the currency strengthened and government bond yields edged higher.",
]
FURNITURE = ["We use cookies", "Accept all", "Latest News", "Rival club signs striker",
             "Copyright 2024", "Privacy policy", "Subscribe to our newsletter"]


def article_page(title: str = "Central bank raises rates again", date: str = "2024-03-14",
                 paragraphs: list[str] = STORY, head: str = "") -> str:
    """A news page as sites serve them: a cookie banner, navigation, the story, a
    "Latest News" list and a footer around it."""
    latest = "".join(f'<li><a href="/news/{i}">{h}</a></li>' for i, h in enumerate(
        ["Rival club signs striker", "Storm closes motorway", "Film festival opens"]))
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{head}
<title>{title} | Daily Ledger</title><meta property="og:title" content="{title}">
<meta property="article:published_time" content="{date}T09:30:00Z">
<meta property="og:site_name" content="Daily Ledger"></head><body>
<div id="cookie-banner" class="cookie-consent"><p>We use cookies to improve your
experience.</p><button>Accept all</button></div>
<header><nav><ul><li><a href="/">Home</a></li><li><a href="/world">World</a></li>
<li><a href="/business">Business</a></li></ul></nav></header>
<main><article><h1>{title}</h1><p class="byline">By Sam Reporter</p>{body}</article>
<aside><h2>Latest News</h2><ul>{latest}</ul></aside></main>
<footer><p>Copyright 2024 Daily Ledger Media Group.</p><a href="/privacy">Privacy policy</a>
<a href="/newsletter">Subscribe to our newsletter</a></footer></body></html>"""


def home_page() -> str:
    """A front page: section after section of headline links, no article."""
    sections = "".join(
        f"<section><h2>{name}</h2><ul>" + "".join(
            f'<li><a href="/{name}/{i}">Headline {i} about the day in {name}</a></li>'
            for i in range(10)) + "</ul></section>" for name in ("world", "business", "sport"))
    return (f"<!DOCTYPE html><html><head><title>Daily Ledger</title></head><body><nav>"
            f'<a href="/">Home</a></nav><main>{sections}</main></body></html>')


def http_response(writer: WARCWriter, url: str, body: bytes, status: str = "200 OK",
                  content_type: str = "text/html; charset=utf-8", headers=()) -> str:
    """Write one response record; returns its WARC-Record-ID as the reader gives it."""
    http = StatusAndHeaders(status, [("Content-Type", content_type), *headers],
                            protocol="HTTP/1.1")
    record = writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                       http_headers=http)
    writer.write_record(record)
    return record.rec_headers.get_header("WARC-Record-ID").strip("<>")


def write_crawl(path: Path) -> dict[str, str]:
    """A gzipped WARC as a crawler writes it: warcinfo, a request, two articles from two
    sites, a front page, an image, a 404 and a redirect. Returns the article ids."""
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "test"}))
        writer.write_record(writer.create_warc_record(
            "https://www.alpha.com/rates", "request",
            payload=io.BytesIO(b"GET /rates HTTP/1.1\r\nHost: www.alpha.com\r\n\r\n")))
        ids = {"alpha": http_response(writer, "https://www.Alpha.com/rates",
                                      article_page().encode()),
               "beta": http_response(writer, "https://beta.org/markets", article_page(
                   "Lenders gain as rates rise", paragraphs=STORY[::-1]).encode())}
        ids["front"] = http_response(writer, "https://www.alpha.com/", home_page().encode())
        http_response(writer, "https://www.alpha.com/logo.png", b"\x89PNG\r\n" + bytes(300),
                      content_type="image/png")
        http_response(writer, "https://www.alpha.com/gone", b"<html>Not found</html>",
                      status="404 Not Found")
        http_response(writer, "https://www.alpha.com/old", b"", status="301 Moved Permanently",
                      headers=[("Location", "https://www.alpha.com/rates")])
    return ids


# --- extraction -------------------------------------------------------------------------

def test_article_text_title_date_and_source_without_the_page_furniture():
    page, error = extract_page(article_page(), "https://www.Daily-Ledger.co.uk/news/1")
    assert error is None
    for paragraph in STORY:
        assert paragraph in page["text"]
    for furniture in FURNITURE:
        assert furniture not in page["text"]
    assert page["title"] == "Central bank raises rates again"
    assert page["date"] == "2024-03-14"
    assert page["source"] == "daily-ledger.co.uk"
    assert page["url"] == "https://www.Daily-Ledger.co.uk/news/1"


def test_source_without_a_url_comes_from_the_page():
    canonical = '<link rel="canonical" href="https://www.Example.org/story/7">'
    page, _ = extract_page(article_page(head=canonical))
    assert page["source"] == "example.org" and page["url"] == "https://www.example.org/story/7"
    page, _ = extract_page(article_page())
    assert page["source"] == "Daily Ledger" and page["url"] is None  # og:site_name
    assert site_of("https://WWW.News.Example.com:8080/a?b=1") == "news.example.com"
    assert site_of(None) is None and site_of("") is None


@pytest.mark.parametrize("html", [
    home_page(), "", "<html><body></body></html>", b"\xff\xfe\x00\x81 not html at all",
    "<html><body><h1>Page not found</h1><p>The page you asked for does not exist. "
    "Return to the home page.</p></body></html>",
    article_page(paragraphs=["Subscribe to continue reading this article."]),
])
def test_pages_without_an_article_are_errors_not_exceptions(html):
    assert extract_page(html, "https://example.com/x") == (None, NO_ARTICLE)


def test_a_page_extracted_as_a_list_of_headlines_is_no_article():
    """trafilatura keeps some front pages' long headline lists as "- " items; an article
    with a bulleted passage in it is still an article."""
    headlines = "\n".join(f"- {STORY[i % 2][:90]}" for i in range(30))
    assert _mostly_lists(headlines) and _mostly_lists(f"Top stories\n{headlines}")
    bulleted = "\n".join([STORY[0], "- lower rates", "- more jobs", STORY[1]])
    assert not _mostly_lists(bulleted) and not _mostly_lists("\n".join(STORY))


def test_bytes_are_decoded_with_the_declared_charset():
    words = "Caf\u00e9 owners in Z\u00fcrich paid \u20ac3 more per kilo"
    paragraphs = [f"{words}, the survey found. {STORY[0]}", STORY[1]]
    raw = article_page(paragraphs=paragraphs).replace('charset="utf-8"', "")
    meta = raw.replace("<head>", '<head><meta charset="windows-1252">').encode("cp1252")
    assert words in extract_page(meta)[0]["text"]
    assert words in extract_page(raw.encode("cp1252"), charset="windows-1252")[0]["text"]


# --- reading files ----------------------------------------------------------------------

def test_warc_pages_are_records_and_the_rest_is_counted(tmp_path):
    ids = write_crawl(tmp_path / "crawl.warc.gz")
    skipped: Counter = Counter()
    records = list(iter_articles(tmp_path / "crawl.warc.gz", skipped=skipped))
    assert [r.id for r in records] == [ids["alpha"], ids["beta"], ids["front"]]
    alpha = records[0]
    assert alpha.text.startswith("Central bank raises rates again") and STORY[2] in alpha.text
    assert alpha.origin == {"source": "alpha.com", "url": "https://www.Alpha.com/rates",
                            "warc_record_id": ids["alpha"],
                            "file": str(tmp_path / "crawl.warc.gz")}
    assert alpha.fields["title"] == "Central bank raises rates again"
    assert alpha.fields["date"] == "2024-03-14"
    assert alpha.where == f"{tmp_path / 'crawl.warc.gz'}: record {ids['alpha']} " \
                          "https://www.Alpha.com/rates"
    assert records[2].error == NO_ARTICLE and records[2].origin["source"] == "alpha.com"
    assert skipped == {"warcinfo": 1, "request": 1, "not HTML": 1, "HTTP 404": 1,
                       "HTTP 301": 1}
    assert count_records(tmp_path / "crawl.warc.gz") is None


def test_a_truncated_warc_gives_the_records_before_the_damage_and_an_error(tmp_path):
    whole = tmp_path / "crawl.warc.gz"
    ids = write_crawl(whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.warc.gz"
    # Cut inside the front page's record: the two articles before it are whole.
    front = [p.offset for p in iter_warc(whole) if p.record_id == ids["front"]][0]
    cut.write_bytes(data[:front + 600])
    records = list(iter_articles(cut))
    assert [r.id for r in records[:2]] == [ids["alpha"], ids["beta"]]
    assert all(r.error is None for r in records[:2]) and len(records) == 3
    error = records[2].error
    assert str(cut) in error and "the file ends inside this record (truncated)" in error
    assert f"at byte {front} of {front + 600}" in error and "after 4 complete records" in error
    cut.write_bytes(data[:front + 20])  # inside the record's header this time
    records = list(iter_articles(cut))
    assert [r.error is None for r in records] == [True, True, False]
    assert "ends inside a record header (truncated)" in records[2].error
    assert str(cut) in records[2].error


def test_warc_memory_stays_flat(tmp_path, monkeypatch):
    """A 20 MB image record and 2,000 small records stream through a few MB; a page over
    the size limit is an error entry, not a read of the whole body."""
    import random

    path = tmp_path / "big.warc.gz"
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        http_response(writer, "https://a.com/big.png", random.Random(0).randbytes(20_000_000),
                      content_type="image/png")
        for i in range(2000):
            http_response(writer, f"https://a.com/{i}.css", b"p{}" * 50, content_type="text/css")
        http_response(writer, "https://a.com/huge", b"<p>" + b"x" * 200_000,
                      content_type="text/html")
    monkeypatch.setattr(crawl, "MAX_PAGE_BYTES", 100_000)
    skipped: Counter = Counter()
    tracemalloc.start()
    pages = list(iter_warc(path, skipped))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert skipped == {"not HTML": 2001}
    assert [p.error for p in pages] == ["page over 100000 bytes"]
    assert peak < 4_000_000, peak


# --- the command line -------------------------------------------------------------------

def test_predict_a_crawl_then_profile_it_by_source(trained_run, tmp_path):
    ids = write_crawl(tmp_path / "crawl.warc.gz")
    out = tmp_path / "out.jsonl"
    proc = predict_cli(str(trained_run / "model"), str(tmp_path / "crawl.warc.gz"),
                       "-o", str(out))
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [ids["alpha"], ids["beta"], ids["front"]]
    for row, source, url in zip(rows, ("alpha.com", "beta.org"),
                                ("https://www.Alpha.com/rates", "https://beta.org/markets")):
        assert row["source"] == source and row["url"] == url
        assert row["warc_record_id"] == row["id"] and "topic" in row
    assert rows[2]["error"] == NO_ARTICLE and rows[2]["url"] == "https://www.alpha.com/"
    assert "1 record with errors" in proc.stderr
    assert ("skipped 5 WARC records that are not 2xx HTML responses (1 HTTP 301, 1 HTTP 404, "
            "1 not HTML, 1 request, 1 warcinfo)") in proc.stderr
    run_cli("-m", "model.cli", "profile", str(out), "--by", "source", "--task", "topic",
            "--out", str(tmp_path / "profile"))
    with open(tmp_path / "profile" / "profile.csv") as handle:
        groups = {(r["source"], r["articles"]) for r in csv.DictReader(handle)}
    assert groups == {("alpha.com", "1"), ("beta.org", "1")}


def test_a_folder_mixes_text_pages_and_crawls(trained_run, tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "a_note.txt").write_text("Shares in the bank rose after the rate decision.")
    ids = write_crawl(folder / "b_crawl.warc.gz")
    data = (folder / "b_crawl.warc.gz").read_bytes()
    (folder / "c_cut.warc.gz").write_bytes(data[:len(data) // 3])
    (folder / "sub" / "d_story.html").write_text(article_page())
    (folder / "sub" / "e_front.htm").write_text(home_page())
    assert count_records(folder) is None  # WARC files: unknown until read
    out = tmp_path / "out.jsonl"
    proc = predict_cli(str(trained_run / "model"), str(folder), "-o", str(out))
    rows = read_jsonl(out)
    assert rows[0]["id"] == "a_note" and "topic" in rows[0] and "source" not in rows[0]
    assert [r["id"] for r in rows[1:4]] == [ids["alpha"], ids["beta"], ids["front"]]
    assert "c_cut.warc.gz" in rows[-3]["error"] and "truncated" in rows[-3]["error"]
    story, front = rows[-2:]
    assert story["id"] == "sub/d_story" and "topic" in story
    assert story["file"] == str(folder / "sub" / "d_story.html")
    assert story["source"] == "Daily Ledger"
    assert front["id"] == "sub/e_front" and front["error"] == NO_ARTICLE
    assert "skipped" in proc.stderr
    (folder / "b_crawl.warc.gz").unlink()
    (folder / "c_cut.warc.gz").unlink()
    assert count_records(folder) == 3


def test_jsonl_records_may_give_html(trained_run, tmp_path):
    src = tmp_path / "pages.jsonl"
    lines = [{"id": "p1", "html": article_page(), "url": "https://www.alpha.com/rates",
              "section": "economy"},
             {"id": "p2", "html": article_page(), "source": "Given Source", "title": "Mine"},
             {"id": "p3", "html": home_page(), "url": "https://beta.org/"},
             {"id": "p4", "html": 5},
             {"id": "t1", "text": "Shares in the bank rose."}]
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))
    records = list(iter_articles(src))
    assert records[1].fields["title"] == "Mine" and records[1].text.startswith("Mine\n\n")
    assert records[1].fields["date"] == "2024-03-14"
    out = tmp_path / "out.jsonl"
    predict_cli(str(trained_run / "model"), str(src), "-o", str(out), "--keep", "section",
                "--keep", "title")
    p1, p2, p3, p4, t1 = read_jsonl(out)
    assert (p1["source"], p1["url"], p1["section"]) == ("alpha.com",
                                                        "https://www.alpha.com/rates", "economy")
    assert p1["title"] == "Central bank raises rates again" and "topic" in p1
    assert p2["source"] == "Given Source" and p2["title"] == "Mine"
    assert p3["error"] == NO_ARTICLE and p3["source"] == "beta.org"
    assert p4["error"] == "'html' is int, expected a string"
    assert "source" not in t1 and "topic" in t1


@pytest.mark.slow
def test_the_ray_runner_refuses_pages(trained_run, tmp_path):
    write_crawl(tmp_path / "crawl.warc.gz")
    proc = predict_cli(str(trained_run / "model"), str(tmp_path / "crawl.warc.gz"), "-o",
                       str(tmp_path / "out"), "--runner", "ray", check=False)
    assert proc.returncode == 2 and "does not read web pages or WARC files" in proc.stderr


# --- the service ------------------------------------------------------------------------

def test_the_service_reads_html_articles(server):
    status, out = request(server, "POST", "/predict", {"articles": [
        {"id": "p", "html": article_page(), "url": "https://www.alpha.com/rates"},
        {"id": "t", "text": "goal team striker"}]})
    assert status == 200
    page, text = out["predictions"]
    assert (page["title"], page["source"], page["url"]) == (
        "Central bank raises rates again", "alpha.com", "https://www.alpha.com/rates")
    assert STORY[1] in page["text"] and "Latest News" not in page["text"]
    assert "source" not in text and text["topic"]["label"] == "sport"
    # The page is read as the same article given as title and text.
    same = request(server, "POST", "/predict", {"title": page["title"], "text": page["text"]})
    assert same[1]["topic"]["probabilities"] == pytest.approx(page["topic"]["probabilities"],
                                                              abs=1e-4)
    status, single = request(server, "POST", "/predict", {"html": article_page()})
    assert status == 200 and single["source"] == "Daily Ledger" and "topic" in single


def test_the_service_names_a_page_without_an_article(server):
    articles = [{"text": "bank shares"}] * 3 + [{"html": home_page()}]
    assert request(server, "POST", "/predict", {"articles": articles}) == (422, {
        "detail": "articles[3].html: no article text found in the page"})
    assert request(server, "POST", "/predict", {"html": ""}) == (422, {
        "detail": "html: no article text found in the page"})
