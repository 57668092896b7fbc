"""Reading prediction lines for profiles: their labels, scores and date, one rule each."""

from __future__ import annotations

import json
import re
from pathlib import Path

PERIODS = ("month", "quarter", "year")
_DATE = re.compile(r"^\s*(\d{4})(?:-(\d{1,2})(?!\d))?(?![\d])")


def labels_of(prediction: dict, task: str) -> list[str]:
    """The labels a prediction line gives for `task` (multi- or single-label)."""
    answer = prediction.get(task)
    if not isinstance(answer, dict):
        raise ValueError(f"no {task!r} prediction")
    found = answer["labels"] if "labels" in answer else [answer.get("label")]
    if not isinstance(found, list) or not all(isinstance(x, str) for x in found):
        raise ValueError(f"{task!r}: labels must be a list of strings (or one `label` "
                         f"string), got {found!r}"[:200])
    return list(found)


def scores_of(prediction: dict, task: str) -> dict | None:
    """The served score of every label of `task` (multi-label `scores`, single-label
    `probabilities`), or None when the line has none."""
    answer = prediction.get(task) or {}
    scores = answer.get("scores", answer.get("probabilities"))
    if scores is None:
        return None
    if not isinstance(scores, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0
            for v in scores.values()):
        raise ValueError(f"{task!r}: scores must map labels to numbers in [0, 1]")
    return scores


def period_of(value, over: str) -> str | None:
    """The month (`2019-04`), quarter (`2019-Q2`) or year (`2019`) of a date such as
    `2019-04-30`, `2019-04` or `2019-04-30T10:00:00Z`; None when there is no usable date."""
    if over not in PERIODS:
        raise ValueError(f"--over must be one of {PERIODS}, got {over!r}")
    if not isinstance(value, str):
        return None
    match = _DATE.match(value)
    if not match:
        return None
    year, month = match.group(1), match.group(2)
    if over == "year":
        return year
    if month is None or not 1 <= int(month) <= 12:
        return None
    if over == "month":
        return f"{year}-{int(month):02d}"
    return f"{year}-Q{(int(month) - 1) // 3 + 1}"


def read_predictions(path: Path):
    """Prediction lines of a JSONL file; a broken line is an error naming its number."""
    with open(path, encoding="utf-8") as handle:
        yield from parse_predictions(handle, str(path))


def parse_predictions(lines, where: str):
    """Prediction objects of JSONL `lines` (a file, or an upload to the service's /profile).

    A line that is not a JSON object is a ValueError naming `where` and its line number.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}:{number}: malformed JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{where}:{number}: expected a JSON object, got "
                             f"{type(obj).__name__}")
        yield obj
