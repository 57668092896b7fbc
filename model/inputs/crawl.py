"""Web pages and web crawls as articles: the article text of an HTML page, and the pages
of a WARC file (what Common Crawl, Heritrix, wget --warc-file and browsertrix write).

    article-classifier predict MODEL page.html -o out.jsonl
    article-classifier predict MODEL crawl.warc.gz -o out.jsonl
    article-classifier profile out.jsonl --by source --task topic

`extract_page` asks trafilatura for a page's main text, title, date and site; a page
with no article in it (a home page of link lists, an error page, a cookie wall) is an
error string, never an exception, so one odd page never stops a crawl. `iter_warc`
streams a WARC record by record (warcio), keeping only HTTP 2xx HTML responses and
counting what it skips; a damaged or truncated file ends in an error that names the file
and how far it got, after the pages before the damage. `model/inputs/records.py` turns both into
input records; the service (`model/serving/service.py`) extracts `html` articles with the same
function.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

# What is left of a page without an article ("Page not found", "Subscribe to continue
# reading", a consent notice) is a line or two, under 200 characters, while a news
# story of even two or three sentences runs past it. Characters, not words, so that
# languages written without spaces are measured alike.
MIN_ARTICLE_CHARS = 200
# Above this share of list-item text, a page is a list of links, not an article (articles
# with a bulleted passage stay well under it).
LIST_SHARE = 0.6
# trafilatura's own limit (MAX_FILE_SIZE); a WARC response body is read up to this much.
MAX_PAGE_BYTES = 20_000_000
HTML_TYPES = ("text/html", "application/xhtml+xml")
NO_ARTICLE = "no article text found in the page"
READ_BLOCK = 1 << 16
META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""",
                          re.IGNORECASE)


def extract_page(html: str | bytes, url: str | None = None,
                 charset: str | None = None) -> tuple[dict | None, str | None]:
    """`(fields, error)` for one HTML page: fields are `title`, `text`, `date`, `source`
    and `url`, or `error` says why the page has no article.

    `charset` is the one an HTTP header declared, for bytes; `source` is the site's
    domain (see `site_of`).
    """
    from trafilatura import bare_extraction  # imported here: ~0.2 s; most inputs are text

    if isinstance(html, bytes):
        html = decode_page(html, charset)
    try:
        # favor_precision: a home page or section front is kept whole in trafilatura's
        # balanced mode (its link lists become "text"); precision drops link lists and
        # teasers, and with them such pages, at the cost of an odd paragraph of a real
        # article. Reader comments are not the article, so they stay out.
        doc = bare_extraction(html, url=url, with_metadata=True, favor_precision=True,
                              include_comments=False)
    except Exception as err:  # noqa: BLE001 - a crawl holds every kind of broken page
        return None, f"could not parse the page ({type(err).__name__}: {err})"[:300]
    text = (doc.text or "").strip() if doc is not None else ""
    if len(text) < MIN_ARTICLE_CHARS or _mostly_lists(text):
        return None, NO_ARTICLE
    page_url = url or doc.url
    return {"title": doc.title or None, "text": text, "date": doc.date or None,
            "source": site_of(page_url) or site_of(doc.hostname) or doc.sitename or None,
            "url": page_url or None}, None


def _mostly_lists(text: str) -> bool:
    """Whether most of an extracted text is list items ("- " lines, as trafilatura writes
    them): a front page of long headline links can pass for text, an article cannot."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    listed = sum(len(line) for line in lines if line.startswith("- "))
    return listed > LIST_SHARE * sum(len(line) for line in lines)


def site_of(url: str | None) -> str | None:
    """The domain a URL (or bare host name) names, lowercase and without `www.`."""
    if not url:
        return None
    try:
        host = urlsplit(url if "//" in url else f"//{url}").hostname
    except ValueError:  # a malformed port or IPv6 literal
        return None
    return host.removeprefix("www.") if host else None


def decode_page(raw: bytes, declared: str | None = None) -> str | bytes:
    """The page as text: UTF-8 when it is valid UTF-8 (headers often claim Latin-1 for
    UTF-8 pages), else the charset the HTTP header or a `<meta>` tag declares; failing
    both, the bytes, whose encoding trafilatura guesses (never failing: it falls back to
    replacement characters)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    match = META_CHARSET.search(raw[:4096])
    for charset in (declared, match and match.group(1).decode("ascii")):
        if not charset:
            continue
        # As browsers do (WHATWG Encoding): pages labelled Latin-1 are windows-1252.
        if charset.lower() in ("iso-8859-1", "latin1", "latin-1", "us-ascii", "ascii"):
            charset = "cp1252"
        try:
            return raw.decode(charset)
        except (LookupError, UnicodeDecodeError):
            continue
    return raw


@dataclass
class WarcPage:
    """One HTML response of a WARC file, or (`error` set) why reading stopped."""

    record_id: str | None  # WARC-Record-ID; None where a damaged header hid it
    url: str | None
    html: bytes | None
    offset: int = 0  # where the record starts in the file
    charset: str | None = None
    error: str | None = None


def iter_warc(path: Path, skipped: Counter | None = None) -> Iterator[WarcPage]:
    """The HTML pages of a WARC (or .warc.gz) file, streamed one record at a time.

    Only `response` records of an HTML content type with an HTTP status of 200-299 are
    pages; every other record is counted in `skipped` by reason (`request`, `warcinfo`,
    `not HTML`, `HTTP 404`, ...; see `describe_skipped`). A record id is the
    WARC-Record-ID without its angle brackets (`urn:uuid:...`). Memory stays flat: a
    page's body is read up to MAX_PAGE_BYTES, everything else is read past in blocks.
    A damaged or truncated file yields one last page with `error` set.
    """
    from warcio.archiveiterator import ArchiveIterator

    skipped = Counter() if skipped is None else skipped
    size, read = path.stat().st_size, 0
    with open(path, "rb") as handle:
        records = ArchiveIterator(handle)
        while True:
            record = None
            try:
                record = next(records, None)
                if record is None:
                    break
                page, reason = _page_of(record, records.offset)
                while record.raw_stream.read(READ_BLOCK):
                    pass
            # On a damaged file warcio raises whatever its parser hit (zlib.error,
            # ArchiveLoadFailed, EOFError, AttributeError on a header cut short, ...).
            except Exception as err:  # noqa: BLE001 - each one means "damaged here"
                first_line = (str(err).strip() or "-").splitlines()[0][:200]
                yield _damaged(path, record, read, records.offset, size,
                               f"unreadable record ({type(err).__name__}: {first_line})")
                return
            if getattr(record.raw_stream, "limit", 0) > 0:  # its Content-Length not met
                yield _damaged(path, record, read, records.offset, size,
                               "the file ends inside this record (truncated)")
                return
            read += 1
            if page is None:
                skipped[reason] += 1
            else:
                yield page
    # warcio ends quietly where a record's header is cut short: bytes left over mean
    # the file was truncated there (or holds something that is not WARC).
    if records.offset < size:
        yield _damaged(path, None, read, records.offset, size,
                       "the file ends inside a record header (truncated) or is not WARC")


def _page_of(record, offset: int) -> tuple[WarcPage | None, str | None]:
    """`(page, None)` for an HTML 2xx response, else `(None, why it is skipped)`."""
    if record.rec_type != "response":
        return None, record.rec_type or "unknown"
    http = record.http_headers
    if http is None:
        return None, "not HTTP"
    content_type = (http.get_header("Content-Type")
                    or record.rec_headers.get_header("WARC-Identified-Payload-Type") or "")
    if content_type.split(";")[0].strip().lower() not in HTML_TYPES:
        return None, "not HTML"
    status = (http.get_statuscode() or "").strip()
    if not (status.isdigit() and 200 <= int(status) < 300):
        return None, f"HTTP {status or '?'}"
    record_id = (record.rec_headers.get_header("WARC-Record-ID") or "").strip("<> ")
    url = record.rec_headers.get_header("WARC-Target-URI")
    body = record.content_stream().read(MAX_PAGE_BYTES + 1)
    if len(body) > MAX_PAGE_BYTES:
        return WarcPage(record_id, url, None, offset,
                        error=f"page over {MAX_PAGE_BYTES} bytes"), None
    charset = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", content_type, re.IGNORECASE)
    return WarcPage(record_id, url, body, offset, charset and charset.group(1)), None


def _damaged(path: Path, record, read: int, offset: int, size: int, why: str) -> WarcPage:
    headers = getattr(record, "rec_headers", None)
    record_id = (headers.get_header("WARC-Record-ID") or "").strip("<> ") if headers else ""
    url = headers.get_header("WARC-Target-URI") if headers else None
    return WarcPage(record_id or None, url, None, offset, error=(
        f"damaged WARC file {path}: {why}, at byte {offset} of {size}, after {read} "
        "complete records"))


def describe_skipped(skipped: Counter) -> str:
    """One line for the user: `skipped 3 WARC records that are not 2xx HTML responses
    (1 HTTP 404, 2 request)`."""
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
    return (f"skipped {sum(skipped.values())} WARC records that are not 2xx HTML responses "
            f"({parts})")
