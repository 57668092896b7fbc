"""Adaptive reading: score an article's first window, read the rest only where needed.

A long article is read as up to `max_chunks` windows, and most of the encoder's work goes
into windows after the first. Many articles are settled by their first window (a topic
usually is), so with `early_exit = c` an article whose every task is already decided
with confidence `c` on its first window stops there:

- single-label task: the best label's probability is at least `c`;
- multi-label task: every label's probability is at least `c` or at most `1 - c`, and on
  the side of its threshold that the decision would give anyway (and, where an article
  with no label gets its most probable one, at least one label is clearly in).

Probabilities are the served ones (network mixed with the lexical model, which reads the
whole article either way, as far as what was read is typical of the training articles:
model/runtime/domain.py). The other articles read all their windows and get exactly what
whole-article reading gives, typicality included. BENCHMARKS.md measures tokens read,
speed and scores.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from model.core.domain import Typicality
from model.core.tasks import confident
from model.core.text import EncodedArticle


def read_adaptively(clf, encoded: list[EncodedArticle], batch_size: int, level: float,
                    at_least_one: bool = True
                    ) -> tuple[dict[str, np.ndarray], list[EncodedArticle], Typicality | None]:
    """Served probabilities of `encoded` by adaptive reading, each article as read (only
    its first window where it stopped there), and how typical each is of the training
    articles, as read (None without a domain reference)."""
    first = [replace(a, windows=a.windows[:1],
                     spans=a.spans[:1] if a.spans is not None else None) for a in encoded]
    first_rows = clf.embed_windows(first, batch_size)
    mixed, domain = clf.answer(first_rows, first)
    probs = {name: served for name, (served, _, _) in mixed.items()}
    lexical = {name: lex for name, (_, _, lex) in mixed.items() if lex is not None}
    done = np.ones(len(encoded), dtype=bool)
    for task in clf.tasks:
        done &= confident(task, probs[task.name], level, at_least_one)
    more = [i for i, a in enumerate(encoded) if not done[i] and len(a.windows) > 1]
    if more:
        rest = [replace(encoded[i], windows=encoded[i].windows[1:], spans=None) for i in more]
        rest_rows = clf.embed_windows(rest, batch_size)
        # Every article's windows in order: its first window's row, then the others'.
        rows, offset = [], 0
        for i, article in zip(more, rest):
            rows += [first_rows[i:i + 1], rest_rows[offset:offset + len(article.windows)]]
            offset += len(article.windows)
        whole = [encoded[i] for i in more]
        # The lexical models read the whole text already: their share is not recomputed.
        again, whole_domain = clf.answer(torch.cat(rows), whole,
                                         {name: lex[more] for name, lex in lexical.items()})
        for name in probs:
            probs[name][more] = again[name][0]
        if domain is not None:
            domain.percentile[more] = whole_domain.percentile
            domain.in_domain[more] = whole_domain.in_domain
    read_whole = set(more)
    read = [encoded[i] if i in read_whole else first[i] for i in range(len(encoded))]
    return probs, read, domain
