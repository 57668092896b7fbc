"""Lexical evidence adds up: the passages' shares of a lexical model's logit sum to the
logit less its intercept, n-grams that cross a sentence end included. Real TF-IDF +
logistic-regression models fitted here (the trained artifact's case is in
tests/test_evidence.py); no training run needed."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from model.core.lexical import LexicalModel
from model.core.tasks import SINGLE_LABEL
from model.runtime.evidence import lexical_contributions, split_passages

WORDS = {"economy": "tax budget jobs market prices wages", "law": "court judge ruling appeal"}


def fitted(**settings) -> LexicalModel:
    rng = random.Random(0)
    texts, labels = [], []
    for i in range(80):
        label = sorted(WORDS)[i % 2]
        words = WORDS[label].split() + "the a of and said".split()
        texts.append(" ".join(rng.choice(words) for _ in range(30)))
        labels.append(label)
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
