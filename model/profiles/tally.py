"""Counting prediction lines into per-group tallies, line by line, in bounded memory.

A group is a value of the `by` field (a source), or with `over` a (value, period) pair.
For each group and label the tally keeps the articles, how many the served rule gave the
label, and a histogram of the label's served score split by that decision: 2 x BINS
counts and score sums. That is all any estimator of model/profiles/quantify.py needs
(classify and count, probabilistic classify and count, their adjusted forms, EM), and a
bootstrap over articles is a multinomial draw over the same cells; so memory grows with
the groups and labels present, never with the lines (a million-line file profiles in the
memory of its groups).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from model.profiles.reading import labels_of, period_of, scores_of

BINS = 20  # score bins of width 0.05 per label and decision
ROW_FIELDS = ("period", "label", "articles", "count", "raw_share", "share", "ci95_low",
              "ci95_high", "method")
UNKNOWN = "(unknown)"
APART = " (out of domain)"
DOMAIN_RULES = ("keep", "drop", "apart")
# Distinct values of `by` a profile may have. A profile is one row per (group, label), so
# without a bound an upload of N lines, each with a new source and a new label, asks for
# N * N rows. Past the bound the profile is refused with a message naming it (rather than
# folding the rest into an "other" group, whose share would mix unrelated sources): group
# by a coarser field, or raise the bound where the machine has room (`--max-groups`).
MAX_GROUPS = 500
# Distinct labels when the model's own are not known (the `profile` command): a model has
# a few dozen at most, so thousands mean the file is not predictions of one task.
MAX_LABELS = 1000
# Distinct periods with `over`: a century of months. Rows are groups x periods x labels, so
# both are bounded.
MAX_PERIODS = 1200


class TooManyGroups(ValueError):
    """More distinct groups (or labels) than the profile's bound."""


@dataclass
class Tally:
    """Per group: `articles`, and per label the cells (counts, score sums) of shape
    (2, BINS), row 1 for articles given the label. What was left out is counted:
    `skipped` lines (error entries, no prediction of the task), `ignored` label
    occurrences that are not the task's, `undated` articles (with `over`), articles out
    of domain (`out_of_domain`, with the rule `drop` or `apart`) and `unscored` lines."""

    by: str
    task: str
    over: str | None = None
    labels: list[str] = field(default_factory=list)
    articles: Counter = field(default_factory=Counter)
    cells: dict = field(default_factory=dict)
    skipped: int = 0
    ignored: int = 0
    ignored_examples: list[str] = field(default_factory=list)
    undated: int = 0
    out_of_domain: int = 0
    unscored: int = 0

    def groups(self) -> list:
        return sorted(self.articles)

    def cell(self, group, label) -> tuple[np.ndarray, np.ndarray]:
        """The (counts, sums) of `label` in `group`; the group's articles read before the
        label was first seen count as not given it, with score 0."""
        counts, sums = self.cells[group].get(label) or (np.zeros((2, BINS), np.int64),
                                                        np.zeros((2, BINS)))
        counts = counts.copy()
        counts[0, 0] += self.articles[group] - counts.sum()
        return counts, sums


def tally_predictions(lines, by: str, task: str = "frames", labels=None, over: str | None = None,
                      domain: str = "keep", max_groups: int = MAX_GROUPS,
                      max_labels: int = MAX_LABELS) -> Tally:
    """Tally prediction `lines` (dicts) per value of `by` (and period of `date`, `over`).

    `labels`: the task's labels (the served model's); a label outside them is not counted,
    only reported. Without them the labels seen are used, at most `max_labels`. At most
    `max_groups` distinct groups (TooManyGroups beyond). `domain`: what to do with lines
    flagged `domain.in_domain: false` (keep them, drop them, or count them in a group of
    their own, `<group> (out of domain)`).
    """
    if by in ROW_FIELDS:
        # The group's name is stored under `by` in each row, beside these fields.
        raise ValueError(f"cannot group by {by!r}: it names a column of the profile itself")
    if domain not in DOMAIN_RULES:
        raise ValueError(f"out-of-domain rule must be one of {DOMAIN_RULES}, got {domain!r}")
    known = list(labels) if labels is not None else None
    out = Tally(by, task, over, list(known or []))
    seen: set[str] = set(known or [])
    periods: set = set()
    for number, line in enumerate(lines, start=1):
        if "error" in line:
            out.skipped += 1
            continue
        try:
            found = set(labels_of(line, task))
        except ValueError:  # no prediction of this task
            out.skipped += 1
            continue
        try:
            scores = scores_of(line, task)
        except ValueError as err:
            raise ValueError(f"prediction line {number}: {err}") from None
        domain_entry = line.get("domain")
        if domain_entry is not None and not isinstance(domain_entry, dict):
            raise ValueError(f"prediction line {number}: `domain` must be an object such as "
                             f'{{"typicality": 40.0, "in_domain": true}}, got {domain_entry!r}'
                             [:200])
        flagged = (domain_entry or {}).get("in_domain") is False
        if flagged and domain == "drop":
            out.out_of_domain += 1
            continue
        group = str(line.get(by)) if line.get(by) not in (None, "") else UNKNOWN
        if flagged and domain == "apart":
            out.out_of_domain += 1
            group += APART
        if over is not None:
            period = period_of(line.get("date"), over)
            if period is None:
                out.undated += 1
                continue
            group = (group, period)
            if period not in periods:
                periods.add(period)
                if len(periods) > MAX_PERIODS:
                    raise TooManyGroups(f"more than {MAX_PERIODS} distinct periods of `date`: "
                                        "profile over a longer period (quarter, year)")
        if known is not None:
            for label in sorted(found - seen):
                out.ignored += 1
                if len(out.ignored_examples) < 10 and label not in out.ignored_examples:
                    out.ignored_examples.append(label[:100])
            found &= seen
        else:
            new = (found | set(scores or ())) - seen
            if new:
                seen.update(new)
                if len(seen) > max_labels:
                    raise TooManyGroups(f"more than {max_labels} distinct {task!r} labels: "
                                        f"are these predictions of one task?")
                out.labels = sorted(seen)
        if group not in out.articles:
            if len({g[0] if isinstance(g, tuple) else g for g in out.articles} | {
                    group[0] if isinstance(group, tuple) else group}) > max_groups:
                raise TooManyGroups(f"more than {max_groups} distinct values of {by!r}; "
                                    "profile by a field with fewer values, or raise the "
                                    "limit on groups")
            out.cells[group] = {}
        out.articles[group] += 1
        if scores is None:
            out.unscored += 1
        cells = out.cells[group]
        for label in (seen if scores is not None else found):
            counts, sums = cells.get(label) or cells.setdefault(
                label, (np.zeros((2, BINS), np.int64), np.zeros((2, BINS))))
            score = float(scores.get(label, 0.0)) if scores is not None else 1.0
            given = int(label in found)
            b = min(int(score * BINS), BINS - 1)
            counts[given, b] += 1
            sums[given, b] += score
    return out
