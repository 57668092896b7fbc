"""What the web page's tests share (tests/test_web_page.py, test_profile_page.py and
test_service_page.py; their fixtures, one browser, one two-task model and one page server
for all of them, are in tests/conftest.py): the page server's body limit, the prediction
lines a profile is made of, and reading the page."""

from __future__ import annotations

import json
import os
from pathlib import Path

try:
    from selenium.webdriver.common.by import By
except ImportError:  # the `browser` fixture says so, and skips or fails
    By = None

BODY_LIMIT = 20_000


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def write_predictions(path: Path, shares: dict[str, dict[str, int]], n: int = 10,
                      undated: int = 0, scores: bool = True) -> Path:
    """Prediction lines as `predict --keep source,date` writes them: per source, `shares
    [source][frame]` of its `n` articles carry the frame, dated over three months but the
    last `undated`; one error line is left out. Without `scores` the lines carry labels
    alone (as from an older predict), which only classify-and-count can profile."""
    with open(path, "w") as handle:
        for source, counts in shares.items():
            for i in range(n):
                labels = [f for f, k in counts.items() if i < k]
                line = {"id": f"{source}{i}", "source": source, "frames": {"labels": labels}}
                if scores:
                    line["frames"]["scores"] = {f: (0.9 if f in labels else 0.1) for f in counts}
                if i < n - undated:
                    line["date"] = f"2024-{1 + i % 3:02d}-{1 + i:02d}"
                handle.write(json.dumps(line) + "\n")
        handle.write(json.dumps({"id": "bad", "source": "x", "error": "empty text"}) + "\n")
    return path


def text_of(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).get_attribute("textContent").strip()


def bars(driver, task: str) -> list[dict]:
    return driver.execute_script(
        "return [...document.querySelectorAll(`.task[data-task='${arguments[0]}'] li`)]"
        ".map(li => ({...li.dataset}))", task)
