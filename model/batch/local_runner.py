"""The local runner: `article-classifier predict MODEL INPUT -o OUT` on this machine.

Records are read as a stream (JSONL, CSV/TSV, text files, web pages, WARC crawls;
model/inputs) and predicted in slices of 256, each slice written and flushed whole, so
memory stays flat and an interrupted run goes on where it stopped (`resume`: the complete
lines already written are kept, a torn last line is cut off). Unreadable records get an
error line naming the record and the problem, in their place.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from itertools import islice
from pathlib import Path

from tqdm.auto import tqdm

from model.inputs.crawl import describe_skipped
from model.inputs.records import count_records, iter_articles
from model.runtime.evidence import in_fields
from model.runtime.loading import load_classifier


def predict_file(model: str | Path, source: Path, output: Path, *, resume: bool = False,
                 batch_size: int = 32, threshold: float | None = None,
                 top_k: int | None = None, evidence: int = 0, evidence_method: str = "auto",
                 text_column: str = "text", id_column: str = "id",
                 title_column: str = "title", keep=(), load: dict | None = None
                 ) -> tuple[int, int]:
    """Predict every record of `source` into the JSONL file `output`; `load` holds the
    options of `load_classifier`. Returns the lines written and how many were errors."""
    if output.resolve() == source.resolve():
        raise ValueError("--output must not be the input file")
    options = {"batch_size": batch_size, "threshold": threshold, "top_k": top_k,
               "evidence": evidence, "evidence_method": evidence_method}
    columns = (title_column, text_column)
    total = count_records(source)
    done = completed_lines(output) if resume else 0
    check_writable(output, (total or 0) - done)
    clf = load_classifier(model, **(load or {}))
    skipped: Counter = Counter()  # WARC records that are not pages, by reason
    records = islice(iter_articles(source, text_column, id_column, title_column, skipped),
                     done, None)
    n_errors = n_written = 0
    try:
        with open(output, "a" if done else "w", encoding="utf-8") as out, \
                tqdm(total=total, initial=done, unit="article", file=sys.stderr) as bar:
            # Slices keep memory flat: only one slice of articles is held at a time, and
            # each slice is flushed whole, so a rerun with --resume loses nothing.
            while batch := list(islice(records, 256)):
                lines, errors = predict_slice(clf, batch, options, keep, columns)
                out.write("".join(lines))
                out.flush()
                n_errors += errors
                n_written += len(batch)
                bar.update(len(batch))
    except OSError as err:
        raise RuntimeError(f"writing {output} failed after {done + n_written} records "
                           f"({err.strerror}); free space and rerun with --resume") from err
    print(f"wrote {n_written} predictions to {output}"
          + (f" after the {done} already there" if done else "")
          + f" ({n_errors} record{'' if n_errors == 1 else 's'} with errors)", file=sys.stderr)
    if skipped:
        print(describe_skipped(skipped), file=sys.stderr)
    return n_written, n_errors


def predict_slice(clf, batch, options: dict, keep, columns: tuple[str, str]
                  ) -> tuple[list[str], int]:
    """One output line per input record, in order; unreadable records get an error line.
    `options` go to `clf.predict`; `columns` name the title and text fields."""
    good = [r for r in batch if r.error is None]
    predictions = iter(clf.predict([r.text for r in good], **options))
    lines, errors = [], 0
    for record in batch:
        kept = {name: record.fields.get(name) for name in keep}
        if record.error is None:
            line = {"id": record.id, **record.origin, **kept, **next(predictions)}
            if "evidence" in line:
                in_fields(line["evidence"], *record_fields(record, columns))
                if record.origin:  # a web page: offsets count in the text read, given here
                    line["text"] = record.text
        else:
            errors += 1
            line = {"id": record.id, **record.origin, **kept, "error": record.error,
                    "where": record.where}
        lines.append(json.dumps(line, ensure_ascii=False) + "\n")
    return lines, errors


def record_fields(record, columns: tuple[str, str]) -> tuple[str | None, str | None]:
    """The title and text a record's evidence offsets count in (a .txt file or a web page:
    the text as read, title first)."""
    if not record.fields or record.origin:
        return None, record.text
    title, text = (record.fields.get(name) for name in columns)
    return (title if isinstance(title, str) else None), (text if isinstance(text, str)
                                                         else None)


def completed_lines(output: Path) -> int:
    """How many whole, valid lines `output` holds; a torn last line is cut off."""
    if not output.is_file():
        return 0
    good_bytes = count = 0
    with open(output, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break
            try:
                json.loads(line)
            except ValueError:
                break
            good_bytes += len(line)
            count += 1
    with open(output, "r+b") as handle:
        handle.truncate(good_bytes)
    return count


def check_writable(output: Path, records_left: int) -> None:
    """Fail before any work when the output cannot be written or clearly will not fit."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "a", encoding="utf-8"):
            pass
    except OSError as err:
        raise RuntimeError(f"cannot write {output}: {err.strerror}") from err
    needed = records_left * 600  # a prediction line is a few hundred bytes
    free = shutil.disk_usage(output.parent).free
    if needed > free:
        raise RuntimeError(f"{output.parent} has {free // 2**20} MiB free; about "
                           f"{needed // 2**20} MiB are needed for {records_left} predictions")
