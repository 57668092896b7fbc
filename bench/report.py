"""Where a benchmark's numbers go: bench/results/NAME.json (everything, with the machine
they were measured on) and NAME.md (its table), the table printed too."""

from __future__ import annotations

import json
from pathlib import Path


def save_result(name: str, document: dict, table: str, out: Path = Path("bench/results")
                ) -> None:
    """A benchmark's numbers: `out/name.json` (everything) and `out/name.md` (its table),
    and the table printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(document, indent=2))
    (out / f"{name}.md").write_text(table)
    print(table)
