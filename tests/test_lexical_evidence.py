"""Lexical evidence adds up: the passages' shares of a lexical model's logit sum to the
logit less its intercept, n-grams that cross a sentence end included. Real TF-IDF +
logistic-regression models fitted here (the trained artifact's case is in
tests/test_evidence.py); no training run needed."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from model.core.lexical import LexicalModel
from model.core.tasks import SINGLE_LABEL
from model.runtime.evidence import split_passages
from model.runtime.lexical_terms import (
    lexical_contributions,
    prefix_contributions,
    word_ngram_ends,
)
from tests.conftest import bbc_texts

WORDS = {"economy": "tax budget jobs market prices wages", "law": "court judge ruling appeal"}


def fitted(texts: list[str] | None = None, **settings) -> LexicalModel:
    """Fitted on two labels told apart by `WORDS`, or on `texts` with made-up labels."""
    rng = random.Random(0)
    labels = [sorted(WORDS)[i % 2] for i in range(len(texts or range(80)))]
    if texts is None:
        texts = [" ".join(rng.choice(WORDS[label].split() + "the a of and said".split())
                          for _ in range(30)) for label in labels]
    vectorizer = TfidfVectorizer(**settings)
    model = LogisticRegression(max_iter=500).fit(vectorizer.fit_transform(texts), labels)
    # Two labels: scikit-learn keeps one row; the softmax form needs both logits.
    coef = np.vstack([-model.coef_[0] / 2, model.coef_[0] / 2])
    intercept = np.array([-model.intercept_[0] / 2, model.intercept_[0] / 2])
    return LexicalModel.from_fitted(SINGLE_LABEL, vectorizer, coef, intercept)


# Every sentence end falls between two frame words, so word bigrams cross it.
TEXT = ("Said the court and the judge. Tax budget and jobs. Market prices, wages.\n"
        "Ruling on the appeal, said the judge. Court budget")


@pytest.mark.parametrize("settings", [
    {"ngram_range": (1, 2), "sublinear_tf": True, "min_df": 2},  # as train/linear.py fits
    {"ngram_range": (1, 3), "stop_words": "english"},
    {"analyzer": "char_wb", "ngram_range": (2, 4)},
], ids=["word-bigrams", "trigrams-stop-words", "char-ngrams"])
def test_passage_shares_sum_to_the_lexical_logit(settings):
    lexical = fitted(**settings)
    units = split_passages(TEXT)
    assert len(units) == 5
    shares = lexical_contributions(lexical, TEXT, units)
    features = lexical.vectorizer().transform([TEXT])
    np.testing.assert_allclose(shares.sum(0), np.asarray(features @ lexical.coef.T)[0],
                               rtol=1e-6, atol=1e-9)


def test_a_bigram_across_a_sentence_end_goes_to_the_later_passage():
    lexical = fitted(ngram_range=(1, 2), min_df=2)
    text = "Judge said. Tax budget."
    units = split_passages(text)
    assert [text[s:e] for s, e in units] == ["Judge said.", "Tax budget."]
    vectorizer = lexical.vectorizer()
    value = vectorizer.transform([text]).toarray()[0]
    assert value[vectorizer.vocabulary_["said tax"]] > 0  # a feature of the text
    share = {term: lexical.coef[:, vectorizer.vocabulary_[term]]
             * value[vectorizer.vocabulary_[term]]
             for term in ("judge", "said", "judge said", "said tax", "tax", "budget",
                          "tax budget")}
    got = lexical_contributions(lexical, text, units)
    np.testing.assert_allclose(got[0], share["judge"] + share["said"] + share["judge said"],
                               rtol=1e-6)
    np.testing.assert_allclose(got[1], share["said tax"] + share["tax"] + share["budget"]
                               + share["tax budget"], rtol=1e-6)


def test_gaps_and_cuts_inside_words_still_add_up():
    """Passages that leave text out, or cut a word, lose nothing: the text they leave goes
    to the next passage, and a split word is counted once."""
    lexical = fitted(ngram_range=(1, 2), min_df=2)
    units = [(6, 20), (25, 40), (44, 47), (60, 75)]  # gaps between, 44:47 cuts words
    shares = lexical_contributions(lexical, TEXT, units)
    features = lexical.vectorizer().transform([TEXT])
    np.testing.assert_allclose(shares.sum(0), np.asarray(features @ lexical.coef.T)[0],
                               rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def bbc() -> list[str]:
    return bbc_texts(200)


BBC_SETTINGS = [{"ngram_range": (1, 2), "sublinear_tf": True, "min_df": 2},
                {"ngram_range": (1, 3), "stop_words": "english", "min_df": 2}]


@pytest.mark.parametrize("settings", BBC_SETTINGS, ids=["word-bigrams", "trigrams-stop-words"])
def test_word_ngrams_read_once_give_what_prefixes_give(bbc, settings):
    """The linear path (each n-gram found once, with its offsets) gives the numbers of the
    prefix method, which reads the analyzer's own output, on real articles."""
    lexical = fitted(bbc[::2], **settings)
    vectorizer = lexical.vectorizer()
    for text in random.Random(1).sample(bbc[1::2], 6):
        units = split_passages(text)
        assert len(units) > 5 and word_ngram_ends(vectorizer, text) is not None
        expected = prefix_contributions(vectorizer, lexical.coef, text, units)
        np.testing.assert_allclose(lexical_contributions(lexical, text, units), expected,
                                   rtol=1e-6, atol=1e-6)
        assert np.abs(expected).max() > 1e-3  # the texts carry terms of the model


@pytest.mark.parametrize("strip_accents", [None, "unicode", "ascii"])
def test_offsets_are_the_callers_when_preprocessing_changes_the_length(strip_accents):
    """Lower-casing İ gives two characters and stripping accents may drop or add some; an
    n-gram still goes to the passage holding its last word in the caller's text."""
    lexical = fitted(ngram_range=(1, 2), min_df=2, strip_accents=strip_accents)
    text = "ﬁﬁﬁﬁﬁﬁ İİİİİİ Judgé said the court. Tax budget, Çourt judge\u0301 ruling."
    units = split_passages(text)
    assert len(units) == 2
    expected = prefix_contributions(lexical.vectorizer(), lexical.coef, text, units)
    np.testing.assert_allclose(lexical_contributions(lexical, text, units), expected,
                               rtol=1e-6, atol=1e-9)
    assert np.abs(expected[0]).max() > 1e-3 and np.abs(expected[1]).max() > 1e-3


def test_character_ngrams_are_read_by_prefixes():
    lexical = fitted(analyzer="char_wb", ngram_range=(2, 4))
    assert word_ngram_ends(lexical.vectorizer(), TEXT) is None


def test_a_long_article_is_explained_in_linear_time(bbc):
    """200 kB in some 2,000 passages: reading prefixes took about 28 s; once, milliseconds."""
    lexical = fitted(bbc[:100], ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    text = "\n".join(bbc)[:200_000]
    units = split_passages(text)
    assert len(units) > 1500
    start = time.perf_counter()
    shares = lexical_contributions(lexical, text, units)
    assert time.perf_counter() - start < 2.0
    features = lexical.vectorizer().transform([text])
    np.testing.assert_allclose(shares.sum(0), np.asarray(features @ lexical.coef.T)[0],
                               rtol=1e-6, atol=1e-9)
