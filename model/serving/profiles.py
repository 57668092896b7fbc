"""Per-source framing profiles: for each news source, the share of its articles that
use each frame, with counts and 95% Wilson score intervals.

    article-classifier predict MODEL articles.tsv --id-column ID --keep source -o pred.jsonl
    article-classifier profile pred.jsonl --by source --out profile/
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

Z95 = 1.959963984540054
ROW_FIELDS = ("label", "articles", "count", "share", "ci95_low", "ci95_high")


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n (sound for small n and k = 0 or n)."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


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


# Distinct values of `by` a profile may have. A profile is one row per (group, label), so
# without a bound an upload of N lines, each with a new source and a new label, asks for
# N * N rows. Past the bound the profile is refused with a message naming it (rather than
# folding the rest into an "other" group, whose share would mix unrelated sources): group
# by a coarser field, or raise the bound where the machine has room (`--max-groups`).
MAX_GROUPS = 500
# Distinct labels when the model's own are not known (the `profile` command): a model has
# a few dozen at most, so thousands mean the file is not predictions of one task.
MAX_LABELS = 1000


class TooManyGroups(ValueError):
    """More distinct groups (or labels) than the profile's bound."""


@dataclass
class Profile:
    """A profile's rows and what was left out: `skipped` lines (error entries, no
    prediction of the task) and `ignored` label occurrences that are not the task's."""

    rows: list[dict]
    skipped: int = 0
    ignored: int = 0
    ignored_examples: list[str] = field(default_factory=list)


def count_profile(lines, by: str, task: str = "frames", labels=None,
                  max_groups: int = MAX_GROUPS, max_labels: int = MAX_LABELS) -> Profile:
    """Count, per value of `by`, the articles and how many carry each label, line by line.

    `labels`: the task's labels (the served model's); a label outside them is not counted,
    only reported (`Profile.ignored`). Without them the labels seen are used, at most
    `max_labels`. At most `max_groups` distinct groups (TooManyGroups beyond). Counts are
    kept per group as the lines are read, so memory grows with the groups and labels
    actually present, and the rows (groups x labels) are bounded by the two caps.
    """
    if by in ROW_FIELDS:
        # The group's name is stored under `by` in each row, beside these fields.
        raise ValueError(f"cannot group by {by!r}: it names a column of the profile itself")
    known = set(labels) if labels is not None else None
    articles: Counter = Counter()
    hits: dict[str, Counter] = defaultdict(Counter)
    seen: set[str] = set()
    out = Profile([])
    for line in lines:
        if "error" in line:
            out.skipped += 1
            continue
        try:
            found = set(labels_of(line, task))
        except ValueError:
            out.skipped += 1
            continue
        group = str(line.get(by)) if line.get(by) not in (None, "") else "(unknown)"
        if group not in articles and len(articles) >= max_groups:
            raise TooManyGroups(f"more than {max_groups} distinct values of {by!r}; profile "
                                "by a field with fewer values, or raise the limit on groups")
        if known is not None:
            for label in sorted(found - known):
                out.ignored += 1
                if len(out.ignored_examples) < 10 and label not in out.ignored_examples:
                    out.ignored_examples.append(label[:100])
            found &= known
        else:
            seen.update(found)
            if len(seen) > max_labels:
                raise TooManyGroups(f"more than {max_labels} distinct {task!r} labels: are "
                                    f"these predictions of one task?")
        articles[group] += 1
        hits[group].update(found)
    names = sorted(known if known is not None else seen)
    for group in sorted(articles):
        n = articles[group]
        for label in names:
            k = hits[group][label]
            low, high = wilson_interval(k, n)
            out.rows.append({by: group, "label": label, "articles": n, "count": k,
                             "share": k / n, "ci95_low": low, "ci95_high": high})
    return out


def framing_profile(lines, by: str, task: str = "frames", labels=None,
                    max_groups: int = MAX_GROUPS):
    """`(rows, skipped)` of `count_profile`: one row per (group, label) with n, count,
    share and the interval, and the number of lines left out."""
    profile = count_profile(lines, by, task, labels, max_groups)
    return profile.rows, profile.skipped


def write_profile(rows: list[dict], by: str, out_dir: Path, title: str) -> list[Path]:
    """Write profile.csv, profile.md and profile.png (a heatmap) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "profile.csv", out_dir / "profile.md", out_dir / "profile.png"]
    with open(paths[0], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else [by])
        writer.writeheader()
        writer.writerows(rows)
    groups = sorted({r[by] for r in rows})
    labels = sorted({r["label"] for r in rows})
    cell = {(r[by], r["label"]): r for r in rows}
    md = [f"# {title}", "", f"Share of each {by}'s articles predicted to carry each label "
          "(count / articles, 95% Wilson interval).", "",
          f"| {by} | articles | " + " | ".join(labels) + " |",
          "|---|---|" + "---|" * len(labels)]
    for g in groups:
        n = cell[(g, labels[0])]["articles"] if labels else 0
        md.append(f"| {g} | {n} | " + " | ".join(
            f"{cell[(g, lab)]['share']:.2f} ({cell[(g, lab)]['count']}; "
            f"{cell[(g, lab)]['ci95_low']:.2f}-{cell[(g, lab)]['ci95_high']:.2f})"
            for lab in labels) + " |")
    paths[1].write_text("\n".join(md) + "\n")
    _heatmap(groups, labels, cell, by, paths[2], title)
    return paths


def _heatmap(groups, labels, cell, by, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    shares = np.array([[cell[(g, lab)]["share"] for lab in labels] for g in groups])
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 3, 0.35 * len(groups) + 2))
    image = ax.imshow(shares, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right")
    ax.set_yticks(range(len(groups)),
                  [f"{g} (n={cell[(g, labels[0])]['articles']})" for g in groups])
    for i in range(len(groups)):
        for j in range(len(labels)):
            ax.text(j, i, f"{shares[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if shares[i, j] < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="share of articles")
    ax.set_title(title)
    ax.set_ylabel(by)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
