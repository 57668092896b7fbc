"""Evidence: the passages of an article that carry each predicted label, from the model itself.

The method ("attribution", the default) reads the trained model as the sum it is. With
mean token pooling, a window's embedding is the mean of its token states, and every head is
linear, so a label's article logit is exactly a sum over tokens of `head(h_t) / n_tokens`,
weighted by how windows are pooled (mean, attention weights, or the max window). The
lexical component is linear in its TF-IDF features too, so each term occurrence has its
share of that logit. A passage's score is what its tokens and terms add to the label's
*probability*, to first order (through the sigmoid or softmax, and the lexical mixing
weight): "this sentence adds about 0.12 to Economic". Passages are sentences, split on
the cleaned text and given back as offsets into the text the caller passed in.

All of it comes out of the same forward pass as the prediction (the token states are
there anyway), so evidence costs little beyond the prediction itself. BENCHMARKS.md
measures its faithfulness (ERASER comprehensiveness and sufficiency) against random
passages of the same length and against the other method here, "sentences": the model's
probability for each sentence read on its own (one more encoder pass over the article).
That one also serves encoders pooled by [CLS], where the sum above does not exist.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import torch

from model.core.domain import Typicality
from model.core.tasks import MULTI_LABEL, TaskSpec
from model.core.text import chunk_articles, title_prefix
from model.runtime.lexical_terms import lexical_contributions

METHODS = ("attribution", "sentences")

# A sentence ends at . ! ? or … (with closing quotes or brackets) before white space and an
# upper-case letter, a digit or an opening quote; a line break always ends a passage.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’»)\]]*\s+(?=[\"'“‘«(\[]?[^\W_a-z])|\n+")
# Words whose full stop rarely ends a sentence in news text.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st sen rep gov gen lt col sgt capt cmdr adm jr sr inc corp ltd co "
    "vs no nos fig jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k u.n e.u a.m p.m "
    "mt ft approx dept est rev hon".split())


def split_passages(text: str, min_chars: int = 2) -> list[tuple[int, int]]:
    """`[start, end)` of each sentence of `text`, in order, without surrounding space.

    A rule-based splitter: fast, the same in every language that marks sentences with
    . ! ? and capitals, and aware of common abbreviations (Mr., U.S.) and initials
    (J. Smith), so passages are rarely cut inside a name."""
    bounds, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.group()[0] == ".":
            word = re.search(r"(\S+)$", text[start:match.start()])
            word = word.group(1).rstrip(".").lstrip("(\"'“") if word else ""
            if word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper()):
                continue  # Mr. Smith, U.S. officials, J. Smith
        bounds.append((start, match.start() + len(match.group().rstrip())))
        start = match.end()
    bounds.append((start, len(text)))
    out = []
    for begin, end in bounds:
        piece = text[begin:end]
        begin += len(piece) - len(piece.lstrip())
        end = begin + len(piece.strip())
        if end - begin >= min_chars:
            out.append((begin, end))
    return out


def token_units(spans: list[np.ndarray], units: list[tuple[int, int]]) -> list[np.ndarray]:
    """For each window, the passage index of each token (-1: a special or prefix token).
    A token belongs to the passage holding its last character."""
    ends = np.array([end for _, end in units])
    out = []
    for window in spans:
        last = window[:, 1] - 1
        index = np.searchsorted(ends, last, side="right")
        index[(window[:, 0] < 0) | (index >= len(units))] = -1
        out.append(index)
    return out


def network_contributions(token_scores: list[np.ndarray], window_weights: np.ndarray,
                          unit_of_token: list[np.ndarray], n_units: int) -> np.ndarray:
    """What each passage adds to each label's network logit: passages x labels.

    `token_scores[w]` holds `head(h_t) / n_tokens` for the tokens of window `w` (labels as
    columns) and `window_weights[w]` the share each window has in the article's logit."""
    n_labels = window_weights.shape[1]
    out = np.zeros((n_units, n_labels))
    for scores, weight, units in zip(token_scores, window_weights, unit_of_token):
        keep = units >= 0
        np.add.at(out, units[keep], scores[keep] * weight)
    return out


def probability_change(task: TaskSpec, probs: np.ndarray, contributions: np.ndarray
                       ) -> np.ndarray:
    """Logit contributions (passages x labels) as first-order changes of the labels'
    probabilities: through a sigmoid per label, or through the softmax, where a passage
    that raises every logit alike changes nothing."""
    if task.type == MULTI_LABEL:
        return contributions * (probs * (1.0 - probs))
    centred = contributions - contributions @ probs[:, None]
    return centred * probs


def top_passages(scores: np.ndarray, units: list[tuple[int, int]], origin: np.ndarray,
                 original: str, k: int) -> list[dict]:
    """The `k` best passages with a positive score, best first, as offsets into `original`
    (the caller's text, through the cleaning map `origin`). Scores are what a passage adds
    to the label's probability (attribution) or the label's probability for the passage
    alone (sentences)."""
    order = np.argsort(-scores, kind="stable")[:k]
    out = []
    for u in order:
        if scores[u] <= 0:
            break
        start, end = in_original(units[u], origin, original)
        out.append({"start": start, "end": end, "score": round(float(scores[u]), 4),
                    "text": original[start:end]})
    return out


def in_original(unit: tuple[int, int], origin: np.ndarray, original: str) -> tuple[int, int]:
    """`[start, end)` of a passage of the cleaned text in the caller's text."""
    start, end = int(origin[unit[0]]), int(origin[unit[1] - 1]) + 1
    while end < len(original) and unicodedata.combining(original[end]):
        end += 1  # a character NFC composed: the passage ends after its marks
    return start, end


def given_labels(answer: dict) -> list[str]:
    """The labels a task's prediction gives: a multi-label task's list, else its label."""
    return answer["labels"] if "labels" in answer else [answer["label"]]


@dataclass
class ArticleEvidence:
    """Every passage's score for every label of every task, for one article."""

    units: list[tuple[int, int]]       # passages, as [start, end) in the cleaned text
    origin: np.ndarray                 # cleaned-text index -> index in the caller's text
    original: str                      # the caller's text
    scores: dict[str, np.ndarray]      # task -> passages x labels
    labels: dict[str, list[str]]

    def passages(self, task: str, label: str, k: int) -> list[dict]:
        column = self.labels[task].index(label)
        return top_passages(self.scores[task][:, column], self.units, self.origin,
                            self.original, k)

    def select(self, prediction: dict, k: int) -> dict:
        """`{task: {label: [passage, ...]}}` for the labels `prediction` gives."""
        out = {}
        for task in self.scores:
            out[task] = {label: self.passages(task, label, k)
                         for label in given_labels(prediction[task])}
        return out


def resolve_method(clf, method: str) -> str:
    if method == "auto":
        return "attribution" if clf.config.token_pooling == "mean" else "sentences"
    if method not in METHODS:
        raise ValueError(f"evidence method must be auto or one of {METHODS}, got {method!r}")
    if method == "attribution" and clf.config.token_pooling != "mean":
        raise ValueError("attribution evidence needs an encoder pooled by the mean of its "
                         "tokens; this one is pooled by [CLS]: use the sentences method")
    return method


def explain(clf, encoded: list, originals: list[str], batch_size: int = 32,
            method: str = "auto") -> tuple[dict[str, np.ndarray], list[ArticleEvidence],
                                           Typicality | None]:
    """The served probabilities of `encoded` (made with `spans=True` from `originals`),
    every passage's score for every label, from one forward pass, and how typical each
    article is (None without a domain reference)."""
    method = resolve_method(clf, method)
    tasks = clf.tasks
    if method == "attribution":
        heads = torch.cat([clf.network.heads[t.name].weight for t in tasks]).detach().float()
        embeddings, per_token = clf.embed_windows(encoded, batch_size, token_heads=heads.T)
    else:
        embeddings = clf.embed_windows(encoded, batch_size)
    mixed, domain = clf.answer(embeddings, encoded)
    trust = None if domain is None else clf.domain.lexical_trust(domain)
    units = [split_passages(article.text) or [(0, len(article.text))] for article in encoded]
    if method == "sentences":
        alone = sentence_probabilities(clf, encoded, units, batch_size, trust)
    out, first = [], 0
    for a, article in enumerate(encoded):
        rows = slice(first, first + len(article.windows))
        first = rows.stop
        scores = (alone[a] if method == "sentences" else
                  attributed(clf, article, units[a], a, per_token[rows], embeddings[rows], mixed,
                             1.0 if trust is None else float(trust[a])))
        out.append(ArticleEvidence(units[a], article.origin, originals[a], scores,
                                   {t.name: t.labels for t in tasks}))
    return {name: m[0] for name, m in mixed.items()}, out, domain


def attributed(clf, article, units: list[tuple[int, int]], a: int, per_token: list,
               embeddings: torch.Tensor, mixed: dict,
               trust: float = 1.0) -> dict[str, np.ndarray]:
    """Article `a`'s passages x labels scores by attribution, task by task: the network's
    token terms and the lexical model's term shares, each through its own probability
    and mixed by the task's lexical weight times the article's `trust` in it, as it is
    served (`ArticleClassifier.answer`: none out of domain). `per_token` and `embeddings`
    are the article's windows' (columns of `per_token`: all tasks' labels, in task order)."""
    unit_of_token = token_units(article.spans, units)
    scores, first = {}, 0
    for task in clf.tasks:
        columns = slice(first, first + len(task.labels))
        first = columns.stop
        weights = window_weights(clf.network, task, embeddings, clf.config.pooling)
        _, network, lexical = mixed[task.name]
        change = probability_change(task, network[a], network_contributions(
            [t[:, columns] for t in per_token], weights, unit_of_token, len(units)))
        if lexical is not None and trust > 0:
            lexical_change = probability_change(task, lexical[a], lexical_contributions(
                clf.lexical[task.name], article.text, units))
            weight = task.lexical_weight * trust
            change = weight * lexical_change + (1.0 - weight) * change
        scores[task.name] = change
    return scores


@torch.inference_mode()
def window_weights(network, task: TaskSpec, embeddings: torch.Tensor,
                   pooling: str) -> np.ndarray:
    """The share of each window of one article in each label's logit (windows x labels),
    as `pooling` pools windows: equal (mean), by attention, or all to the max window."""
    n, n_labels = embeddings.shape[0], len(task.labels)
    device = next(network.parameters()).device
    embeddings = embeddings.to(device)
    if pooling == "attention":
        scores = network.chunk_attention[task.name](embeddings).squeeze(-1).float()
        return np.repeat(torch.softmax(scores, 0).cpu().numpy()[:, None], n_labels, 1)
    if pooling == "max":
        best = network.heads[task.name](embeddings).float().argmax(0).cpu().numpy()
        weights = np.zeros((n, n_labels))
        weights[best, np.arange(n_labels)] = 1.0
        return weights
    return np.full((n, n_labels), 1.0 / n)


def sentence_probabilities(clf, encoded: list, units: list[list[tuple[int, int]]],
                           batch_size: int, trust: np.ndarray | None = None
                           ) -> list[dict[str, np.ndarray]]:
    """Each passage's probabilities read on its own (its first window), for ranking the
    passages of an article: mixed with the lexical share its article is served with
    (`trust`), not by a passage's own typicality (a sentence alone is rarely typical of
    whole articles, and passages of one article must be scored alike), and before
    calibration (a monotone map per label, so the order is the same, without the ties a
    calibration's flat steps and bounds would make)."""
    texts = [article.text[s:e] for article, spans in zip(encoded, units) for s, e in spans]
    config = clf.config
    pieces = chunk_articles(clf.tokenizer, texts, config.max_length, config.stride, 1,
                            config.text_prefix or "")
    logits = clf.score(clf.embed_windows(pieces, batch_size), pieces)
    share = np.ones(len(pieces)) if trust is None else np.repeat(
        np.asarray(trust, dtype=float), [len(spans) for spans in units])
    probs, mixed = {}, clf.mix(logits, pieces, calibrated=False)
    for task in clf.tasks:
        _, network, lexical = mixed[task.name]
        weight = (task.lexical_weight or 0.0) * share[:, None]
        probs[task.name] = (network if lexical is None
                            else weight * lexical + (1.0 - weight) * network)
    out, first = [], 0
    for spans in units:
        out.append({name: p[first:first + len(spans)] for name, p in probs.items()})
        first += len(spans)
    return out


def in_fields(evidence: dict, title: str | None, text: str | None) -> dict:
    """Evidence of a record that was read as `record_text` reads it (`join_title`: the
    title, a blank line, then the text), with each passage's offsets moved into the field
    it lies in, which `field` names ("title" or "text"). Passages never cross the blank
    line, which always ends a passage."""
    if not text:  # a headline alone was read as it is
        prefix, field = "", "title"
    else:
        prefix, field = title_prefix(title, text), "text"
    lead = len(title or "") - len((title or "").lstrip())
    for passages in (p for labels in evidence.values() for p in labels.values()):
        for passage in passages:
            if prefix and passage["start"] < len(prefix):
                passage.update(field="title", start=passage["start"] + lead,
                               end=passage["end"] + lead)
            else:
                passage.update(field=field, start=passage["start"] - len(prefix),
                               end=passage["end"] - len(prefix))
    return evidence
