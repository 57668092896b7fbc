"""Serving by domain: how typical each article read is of the training articles
(model/core/domain.py), and the lexical share that allows.

`answer` is what every reading path serves from window embeddings (`ArticleClassifier.read`
and `probabilities`, early exit, evidence): the network's and lexical models'
probabilities mixed by `mix`, with each article's lexical share scaled by its trust
(`DomainReference.lexical_trust`: all of it on typical articles, none out of domain, where
the network alone answers), and each article's typicality.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from model.core.domain import Typicality, article_embeddings
from model.core.text import EncodedArticle


class Reading(NamedTuple):
    """Articles as `ArticleClassifier.read` serves them: per-task probabilities (one row
    per article), each article as read, and how typical each is (None without a domain
    reference)."""

    probabilities: dict[str, np.ndarray]
    articles: list[EncodedArticle]
    domain: Typicality | None


def typicality(clf, embeddings: torch.Tensor,
               encoded: list[EncodedArticle]) -> Typicality | None:
    """How typical each article of `encoded` is of `clf`'s training articles, from its
    window `embeddings` (the mean of the windows read); None without a reference."""
    if clf.domain is None:
        return None
    rows = article_embeddings(embeddings.numpy(), [len(a.windows) for a in encoded])
    return clf.domain.typicality(rows)


def answer(clf, embeddings: torch.Tensor, encoded: list[EncodedArticle],
           lexical_probs: dict[str, np.ndarray] | None = None
           ) -> tuple[dict[str, tuple], Typicality | None]:
    """Per task, `(served, network, lexical)` as `clf.mix` gives them, the lexical share
    of each article scaled by its trust; and the articles' typicality (or None).

    The rows with less than full trust are mixed again with `trust * lexical + (1 -
    trust) * network` standing in for the lexical probabilities, which `mix` turns into
    `w * trust` of the lexical model: whatever `mix` does after mixing (calibration)
    applies to them as to the rest, and the lexical probabilities returned stay the
    lexical model's own."""
    domain = typicality(clf, embeddings, encoded)
    logits = clf.score(embeddings, encoded)
    mixed = clf.mix(logits, encoded, lexical_probs)
    if domain is None or not any(t.lexical_weight for t in clf.tasks):
        return mixed, domain
    trust = clf.domain.lexical_trust(domain)
    rows = np.flatnonzero(trust < 1.0)
    if not len(rows):
        return mixed, domain
    share = trust[rows, None]
    again = clf.mix({name: value[rows] for name, value in logits.items()},
                    [encoded[i] for i in rows],
                    {name: share * lexical[rows] + (1 - share) * network[rows]
                     for name, (_, network, lexical) in mixed.items() if lexical is not None})
    for name, (served, _, _) in mixed.items():
        served[rows] = again[name][0]
    return mixed, domain
