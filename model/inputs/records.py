"""Reading articles from files, one record at a time, with the place of every problem.

Used by batch prediction (`article-classifier predict`) and by the training loaders.
Nothing is read whole into memory, so inputs of any size stream through. Web pages
(`.html`, a JSONL `html` field) and WARC crawls are read through `model/inputs/crawl.py`.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from model.core.text import join_title
from model.inputs.crawl import MAX_PAGE_BYTES, extract_page, iter_warc, site_of

csv.field_size_limit(sys.maxsize)  # real articles exceed the csv module's 128 KB default
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
HTML_SUFFIXES = (".html", ".htm")
WARC_SUFFIXES = (".warc", ".warc.gz")
FOLDER_SUFFIXES = (".txt", *HTML_SUFFIXES, *WARC_SUFFIXES)  # what a folder input reads
PAGE_FIELDS = ("title", "date", "source", "url")  # what a web page adds to its fields


@dataclass
class InputRecord:
    """One input article. `error` is set (and `text` is None) when the record is unusable.

    `origin` says where a web page came from (`source`, `url`, and `file`,
    `warc_record_id` where they apply); every output line of the record carries it.
    """

    id: str
    text: str | None
    where: str
    fields: dict = field(default_factory=dict)
    error: str | None = None
    origin: dict = field(default_factory=dict)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield `(line_number, object, error)` for every non-blank line of a JSONL file."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield number, None, (f"not valid UTF-8 (byte {raw[err.start]:#04x} at column "
                                     f"{err.start + 1})")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield number, None, f"malformed JSON ({err.msg} at column {err.colno})"
                continue
            if not isinstance(obj, dict):
                yield number, None, f"expected a JSON object, got {type(obj).__name__}"
                continue
            yield number, obj, None


def read_csv(path: str | Path, required: tuple[str, ...] = ()
             ) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield `(line_number, row, error)` for every row of a CSV (or TSV) file.

    Undecodable bytes are caught per row, so one bad row never hides the rest.
    Raises ValueError naming the file if a required column is missing.
    """
    delimiter = "\t" if str(path).endswith(".tsv") else ","
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; the header has {header}")
        for row in reader:
            number = reader.line_num
            if None in row or any(v is None for v in row.values()):
                yield number, None, f"expected {len(header)} columns, got a different number"
                continue
            if any(_undecodable(v) for v in row.values()):
                yield number, None, "not valid UTF-8"
                continue
            yield number, row, None


def _undecodable(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def read_text_file(path: Path,
                   fallback_encoding: str | None = None) -> tuple[str | None, str | None]:
    """`(text, error)` for a whole text file, trying UTF-8 then `fallback_encoding`."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as err:
        if fallback_encoding:
            return raw.decode(fallback_encoding), None
        return None, f"not valid UTF-8 (byte {raw[err.start]:#04x} at offset {err.start})"


def iter_articles(path: str | Path, text_column: str = "text", id_column: str = "id",
                  title_column: str = "title",
                  skipped: Counter | None = None) -> Iterator[InputRecord]:
    """Articles from a JSONL file, a CSV/TSV file, an HTML page, a WARC file, or a folder
    of `.txt`, `.html`/`.htm` and `.warc`/`.warc.gz` files (recursive, in sorted order).

    A record's id is its `id_column` value when present, else its line number (the file
    name for a page or a folder's file, the WARC-Record-ID for a WARC page). A title
    column, when present, is read before the text; a JSONL record may give `html` (and
    `url`) instead of text. WARC records that are not 2xx HTML responses are counted in
    `skipped` by reason (`model.inputs.crawl.iter_warc`) and yield nothing.
    """
    path = Path(path)
    if path.is_dir():
        for file in folder_files(path):
            record_id = str(file.relative_to(path).with_suffix(""))
            if _named(file, WARC_SUFFIXES):
                yield from warc_records(file, skipped)
            elif _named(file, HTML_SUFFIXES):
                yield html_file_record(file, record_id)
            else:
                text, error = read_text_file(file)
                if error is None:
                    text, error = record_text({"text": text})
                yield InputRecord(record_id, text, str(file), error=error)
        return
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if _named(path, HTML_SUFFIXES):
        yield html_file_record(path, path.stem)
        return
    if _named(path, WARC_SUFFIXES):
        yield from warc_records(path, skipped)
        return
    if path.suffix.lower() in (".csv", ".tsv"):
        rows = read_csv(path, required=(text_column,))
    elif path.suffix.lower() in JSONL_SUFFIXES:
        rows = read_jsonl(path)
    else:
        raise ValueError(f"{path}: unknown input type; use .jsonl, .csv, .tsv, .html, "
                         ".warc(.gz) or a folder of .txt/.html/.warc(.gz) files")
    for number, row, error in rows:
        where = f"{path}:{number}"
        record_id = str(row[id_column]) if row and row.get(id_column) not in (None, "") \
            else str(number)
        text, origin = None, {}
        if error is None:
            text, page, error = read_record(row, text_column, title_column)
            if uses_html(row, text_column):
                row, origin = _with_page(row, page)
        yield InputRecord(record_id, text, where, row or {}, error, origin)


def _with_page(row: dict, page: dict | None) -> tuple[dict, dict]:
    """`(fields, origin)` of a JSONL record read from its `html`: the page's title, date,
    source and url join the record's fields where the record lacks them."""
    url = row.get("url") if isinstance(row.get("url"), str) else None
    found = page or unread_page(url)
    fields = {**row, **{name: found.get(name) for name in PAGE_FIELDS
                        if row.get(name) in (None, "")}}
    return fields, {"source": fields.get("source"), "url": fields.get("url")}


def unread_page(url: str | None) -> dict:
    """What is known of a page whose article could not be read: where it came from."""
    return {"title": None, "date": None, "source": site_of(url), "url": url}


def _named(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.name.lower().endswith(suffixes)


def folder_files(folder: Path) -> list[Path]:
    """The files a folder input reads (FOLDER_SUFFIXES), recursively, in sorted order."""
    return sorted(p for p in folder.rglob("*") if _named(p, FOLDER_SUFFIXES) and p.is_file())


def count_records(path: Path) -> int | None:
    """Number of records, for the progress bar (lines of a file, files of a folder);
    None where only reading it all would tell (a WARC file, a folder holding one)."""
    if path.is_dir():
        files = folder_files(path)
        return None if any(_named(f, WARC_SUFFIXES) for f in files) else len(files)
    if not path.is_file() or _named(path, WARC_SUFFIXES):
        return None
    if _named(path, HTML_SUFFIXES):
        return 1
    with open(path, "rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return lines - 1 if path.suffix.lower() in (".csv", ".tsv") else lines


def html_file_record(file: Path, record_id: str) -> InputRecord:
    """One saved web page (its URL is not known: `source` comes from the page's own
    canonical link or site name, when it has one)."""
    size = file.stat().st_size
    html, error = (None, f"page over {MAX_PAGE_BYTES} bytes") if size > MAX_PAGE_BYTES \
        else (file.read_bytes(), None)
    return page_record(record_id, str(file), html, None, {"file": str(file)}, error=error)


def warc_records(path: Path, skipped: Counter | None) -> Iterator[InputRecord]:
    """The HTML pages of a WARC file as records, id = WARC-Record-ID (`urn:uuid:...`)."""
    for page in iter_warc(path, skipped):
        record_id = page.record_id or f"{path.name}@{page.offset}"
        where = f"{path}: record {record_id}" + (f" {page.url}" if page.url else "")
        yield page_record(record_id, where, page.html, page.url,
                          {"warc_record_id": page.record_id, "file": str(path)},
                          page.charset, page.error)


def page_record(record_id: str, where: str, html: bytes | None, url: str | None,
                origin: dict, charset: str | None = None,
                error: str | None = None) -> InputRecord:
    """An input record from one web page: its article text (title first, as every
    record is read), its title, date, source and url in `fields`, and `origin`."""
    page = None
    if error is None:
        page, error = extract_page(html, url, charset)
    found = page or unread_page(url)
    origin = {"source": found["source"], "url": found["url"], **origin}
    text = None
    if error is None:
        text, error = record_text(page)
    return InputRecord(record_id, text, where, {**{k: found[k] for k in PAGE_FIELDS},
                                                **origin}, error, origin)


def uses_html(record: dict, text_field: str = "text") -> bool:
    """Whether a record is read from its `html` field: it has one and no text (a record
    that gives its text is read from that, as it always was)."""
    return record.get("html") is not None and record.get(text_field) is None


def read_record(record: dict, text_field: str = "text", title_field: str | None = "title"
                ) -> tuple[str | None, dict | None, str | None]:
    """`(text, page, error)`: `record_text`, or, for a record with `html` (and an optional
    `url`) instead of text, the article extracted from the page; `page` then holds its
    `title`, `text`, `date`, `source` and `url`. The record's own title, if any, wins."""
    if not uses_html(record, text_field):
        text, error = record_text(record, text_field, title_field)
        return text, None, error
    for name in ("html", "url"):
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            return None, None, f"{name!r} is {type(value).__name__}, expected a string"
    page, error = extract_page(record["html"], record.get("url"))
    if error is not None:
        return None, None, error
    title = (record.get(title_field) if title_field else None) or page["title"]
    text, error = record_text({"text": page["text"], "title": title})
    # The title given back is the one read (the record's own, else the page's).
    return text, ({**page, "title": title} if error is None else None), error


def record_text(record: dict, text_field: str = "text",
                title_field: str | None = "title") -> tuple[str | None, str | None]:
    """`(text, error)`: the article text of one record, or why it has none.

    The one rule for turning a record into the text a model reads, used by training,
    batch prediction, the service and the Ray runner alike: the title (when there is
    one and the body does not already open with it) is read first, then the body; a
    record may be a headline alone; a field of the wrong type, a record with neither
    field, and a text of only whitespace are errors that name the problem.
    """
    text = record.get(text_field)
    title = record.get(title_field) if title_field else None
    for name, value in ((text_field, text), (title_field, title)):
        if value is not None and not isinstance(value, str):
            return None, f"{name!r} is {type(value).__name__}, expected a string"
    if text is None and title is None:
        fields = f"{text_field!r}" + (f" or {title_field!r}" if title_field else "")
        return None, f"no {fields} field"
    text = join_title(title, text) if text else title or ""
    if not text.strip():
        return None, "empty text"
    return text, None
