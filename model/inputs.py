"""Reading articles from files, one record at a time, with the place of every problem.

Used by batch prediction (`article-classifier predict`) and by the training loaders.
Nothing is read whole into memory, so inputs of any size stream through.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .text import join_title

csv.field_size_limit(sys.maxsize)  # real articles exceed the csv module's 128 KB default
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


@dataclass
class InputRecord:
    """One input article. `error` is set (and `text` is None) when the record is unusable."""

    id: str
    text: str | None
    where: str
    fields: dict = field(default_factory=dict)
    error: str | None = None


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
                  title_column: str = "title") -> Iterator[InputRecord]:
    """Articles from a JSONL file, a CSV/TSV file, or a folder of `.txt` files.

    A record's id is its `id_column` value when present, else its line number (or the
    file name for a folder). A title column, when present, is read before the text.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        for file in files:
            text, error = read_text_file(file)
            if error is None:
                text, error = record_text({"text": text})
            yield InputRecord(str(file.relative_to(path).with_suffix("")), text, str(file),
                              error=error)
        return
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.suffix.lower() in (".csv", ".tsv"):
        rows = read_csv(path, required=(text_column,))
    elif path.suffix.lower() in JSONL_SUFFIXES:
        rows = read_jsonl(path)
    else:
        raise ValueError(f"{path}: unknown input type; use .jsonl, .csv, .tsv or a folder "
                         "of .txt files")
    for number, row, error in rows:
        where = f"{path}:{number}"
        record_id = str(row[id_column]) if row and row.get(id_column) not in (None, "") \
            else str(number)
        text = None
        if error is None:
            text, error = record_text(row, text_column, title_column)
        yield InputRecord(record_id, text, where, row or {}, error)


def record_text(record: dict, text_field: str = "text",
                title_field: str | None = "title") -> tuple[str | None, str | None]:
    """`(text, error)`: the article text of one record, or why it has none.

    The one rule for turning a record into the text a model reads, used by training,
    batch prediction, the service and the Ray engine alike: the title (when there is
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
