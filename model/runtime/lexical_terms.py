"""What each passage of an article adds to a lexical model's logits (evidence by
attribution, model/runtime/evidence.py): the TF-IDF + logistic-regression component is
linear in its features, so each term occurrence has its share of the logit, and a
passage's share is the sum over the occurrences it holds."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np


def lexical_contributions(lexical, text: str,
                          units: list[tuple[int, int]]) -> np.ndarray:
    """What each passage adds to each label's lexical logit: passages x labels, summing over
    passages to the logit less its intercept (`coef @ features`). A term's share of the
    logit (coefficient x TF-IDF value) is split evenly over its occurrences.

    An occurrence belongs to the passage holding its last word, as a token belongs to the
    passage holding its last character (`token_units`): a bigram across a sentence end
    goes to the later sentence, and whatever lies between or around passages (white
    space, a dropped scrap) to the passage that follows it, or to the last. Word n-grams
    are found once, with offsets, as the vectorizer finds them (`word_ngram_ends`), so
    this is linear in the text; analyzers it cannot follow (character n-grams, code) are
    read by prefixes (`prefix_contributions`), which costs passages x text length."""
    vectorizer = lexical.vectorizer()
    found = word_ngram_ends(vectorizer, text) if units else None
    if found is None:
        return prefix_contributions(vectorizer, lexical.coef, text, units)
    columns, last = found
    ends = np.array([end for _, end in units])
    passage = np.minimum(np.searchsorted(ends, last, side="right"), len(units) - 1)
    terms, term_of, counts = np.unique(columns, return_inverse=True, return_counts=True)
    share = (tfidf_values(vectorizer, terms, counts) / counts)[term_of]
    return np.stack([np.bincount(passage, weights=share * row[term_of], minlength=len(units))
                     for row in lexical.coef[:, terms].astype(np.float64)], axis=1)


def word_ngram_ends(vectorizer, text: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The vocabulary column of each word n-gram occurrence of `text` that the vectorizer
    counts, and the index in `text` of its last character; None for analyzers this does
    not follow. As scikit-learn does: preprocess (lower case, accents), find tokens with
    `token_pattern` (its group if it has one), drop stop words, then join n-grams."""
    if (vectorizer.analyzer != "word" or vectorizer.preprocessor is not None
            or vectorizer.tokenizer is not None or callable(vectorizer.strip_accents)
            or vectorizer.input != "content" or vectorizer.norm not in ("l1", "l2", None)):
        return None
    pattern = re.compile(vectorizer.token_pattern)
    if pattern.groups > 1:
        return None  # the vectorizer refuses it: let the prefix method say so
    processed = vectorizer.build_preprocessor()(text)
    source = source_index(vectorizer, text, processed)
    if source is None:
        return None
    g = pattern.groups
    found = [(m.group(g) or "", m.end(g) if m.end(g) >= 0 else m.end())
             for m in pattern.finditer(processed)]
    stop = vectorizer.get_stop_words()
    if stop is not None:  # before n-grams, as scikit-learn drops them
        found = [(word, end) for word, end in found if word not in stop]
    words = [word for word, _ in found]
    last = source[np.maximum(np.array([end for _, end in found], dtype=np.int64) - 1, 0)]
    vocabulary, columns, at = vectorizer.vocabulary_, [], []
    low, high = vectorizer.ngram_range
    for n in range(low, min(high, len(words)) + 1):
        grams = words if n == 1 else [" ".join(words[i:i + n])
                                      for i in range(len(words) - n + 1)]
        columns.append(np.array([vocabulary.get(t, -1) for t in grams], dtype=np.int64))
        at.append(last[n - 1:])
    if not columns:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    columns, at = np.concatenate(columns), np.concatenate(at)
    keep = columns >= 0
    return columns[keep], at[keep]


def source_index(vectorizer, text: str, processed: str) -> np.ndarray | None:
    """For each character of the preprocessed `text`, the index of the character of
    `text` it comes from; None if that cannot be told. Lower-casing maps a character to
    one (İ alone to two) and accent stripping to zero or more, character by character."""
    if len(processed) == len(text) and not vectorizer.strip_accents:
        return np.arange(max(len(text), 1))  # nothing grew, so nothing moved
    preprocess = vectorizer.build_preprocessor()
    size = {c: len(preprocess(c)) for c in set(text)}
    ends = np.cumsum(np.fromiter((size[c] for c in text), np.int64, len(text)))
    if not len(text) or ends[-1] != len(processed):
        return None
    return np.searchsorted(ends, np.arange(len(processed)), side="right")


def tfidf_values(vectorizer, terms: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The TF-IDF values of a text's terms (vocabulary columns) from their counts, as the
    vectorizer's `transform` computes them."""
    x = np.ones(len(counts)) if vectorizer.binary else counts.astype(np.float64)
    if vectorizer.sublinear_tf:
        x = np.log(x) + 1.0
    if vectorizer.use_idf:
        x = x * vectorizer.idf_[terms]
    norm = {"l2": np.sqrt(np.sum(x * x)), "l1": np.sum(np.abs(x))}.get(vectorizer.norm)
    return x / norm if norm else x


def prefix_contributions(vectorizer, coef: np.ndarray, text: str,
                         units: list[tuple[int, int]]) -> np.ndarray:
    """`lexical_contributions` for any analyzer: the occurrences of passage `u` are those
    of the text up to its end, less those up to the previous passage's end. The
    differences add up to the whole text's terms whatever the analyzer (word or character
    n-grams, stop words), so the sum is exact; a word cut by a passage end is counted
    once, though its fragment's n-grams may move between the two passages."""
    analyze = vectorizer.build_analyzer()
    vocabulary = vectorizer.vocabulary_
    features = vectorizer.transform([text]).tocsr()
    value = dict(zip(features.indices.tolist(), features.data.tolist()))
    totals = Counter(analyze(text))
    out = np.zeros((len(units), coef.shape[0]))
    before: Counter = Counter()
    for u, (_, end) in enumerate(units):
        upto = Counter(analyze(text[:end] if u < len(units) - 1 else text))
        added = upto.copy()
        added.subtract(before)  # keeps what a cut inside a word took back, so it telescopes
        for term, count in added.items():
            j = vocabulary.get(term)
            if count and j is not None and j in value:
                out[u] += coef[:, j] * (value[j] * count / totals[term])
        before = upto
    return out
