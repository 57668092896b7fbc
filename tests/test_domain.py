"""The out-of-domain flag: how typical an article is of the training articles
(model/core/domain.py), from a tiny model trained for real (the session's `keyword_run`)
through save, load and every way of predicting."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from model.core.artifact import ArtifactError
from model.core.domain import (
    DOMAIN_NAME,
    DomainReference,
    article_embeddings,
    knn_distances,
    load_domain,
    save_domain,
)
from model.core.lexical import LexicalModel
from model.runtime.classifier import ArticleClassifier
from model.runtime.loading import load_classifier

# The keyword model was trained on sport and business word salads (tests/conftest.py).
LIKE_TRAINING = " ".join(["match goal the striker league of coach season and win team football "
                          "cup the goal striker a match league in the coach season win"] * 4)
FOREIGN = ("Preheat the oven to 200 degrees. Whisk the eggs with the sugar and the butter, "
           "fold in the flour, and bake for twenty minutes until golden.")


def clustered(n: int = 200, hidden: int = 8, seed: int = 0) -> np.ndarray:
    """Training embeddings around one direction: a small, known domain."""
    rng = np.random.default_rng(seed)
    return np.eye(hidden)[0] * 5 + rng.normal(size=(n, hidden))


def test_typicality_ranks_against_held_out_training_articles():
    train = clustered()
    held_out = clustered(100, seed=1)
    reference = DomainReference(train, 10, knn_distances(held_out, train, 10), 99.0)
    inside, outside = reference.typicality(np.stack([train.mean(0), -train.mean(0)]))
    assert inside[0] > 90 and outside[1] == 0.0
    assert list(reference.typicality(np.stack([train.mean(0), -train.mean(0)])).in_domain) \
        == [True, False]
    # By construction about 1 in 100 articles like the held-out ones is flagged.
    fresh = reference.typicality(clustered(2000, seed=2))
    assert 0.0 <= 1 - fresh.in_domain.mean() <= 0.03
    assert reference.embeddings.dtype == np.float16
    assert np.allclose(np.linalg.norm(reference.embeddings.astype(np.float32), axis=1), 1,
                       atol=1e-3)
    with pytest.raises(ValueError, match="embeddings of 3 dimensions, the reference has 8"):
        reference.typicality(np.ones((1, 3)))


def test_article_embeddings_are_the_mean_of_their_windows():
    rows = np.arange(12, dtype=np.float32).reshape(6, 2)
    means = article_embeddings(rows, [1, 3, 2])
    np.testing.assert_allclose(means, [rows[0], rows[1:4].mean(0), rows[4:].mean(0)])
    with pytest.raises(ValueError, match="6 window embeddings for 5 windows"):
        article_embeddings(rows, [2, 3])


def test_trained_reference_round_trips_and_flags_a_foreign_text(keyword_run, tmp_path):
    model = keyword_run / "model"
    assert (model / DOMAIN_NAME).is_file()
    stored = load_domain(model)
    save_domain(tmp_path, stored)
    again = load_domain(tmp_path)
    np.testing.assert_array_equal(again.embeddings, stored.embeddings)
    np.testing.assert_array_equal(again.reference_distances, stored.reference_distances)
    assert (again.k, again.flag_percentile) == (stored.k, stored.flag_percentile) == (10, 99.0)

    clf = load_classifier(model, precision="fp32", quiet=True, early_exit=None)
    like, foreign = clf.predict([LIKE_TRAINING, FOREIGN])
    assert like["domain"]["in_domain"] is True and like["domain"]["typicality"] > 20
    assert foreign["domain"] == {"typicality": 0.0, "in_domain": False}
    # The prediction's typicality is the stored reference's, on the mean window embedding.
    encoded = clf.encode([LIKE_TRAINING])
    rows = article_embeddings(clf.embed_windows(encoded).numpy(), [len(encoded[0].windows)])
    assert like["domain"]["typicality"] == round(float(again.typicality(rows).percentile[0]), 1)
    # And the flag survives every way of reading: int8 backend, early exit, evidence.
    for other in (load_classifier(model, precision="int8", quiet=True),
                  clf.with_settings(early_exit=0.6)):
        assert [p["domain"]["in_domain"] for p in other.predict([LIKE_TRAINING, FOREIGN])] \
            == [True, False], other.backend_name
    explained = clf.predict([LIKE_TRAINING, FOREIGN], evidence=2)
    assert [p["domain"] for p in explained] == [like["domain"], foreign["domain"]]


def constant_lexical(task, texts: list[str]) -> LexicalModel:
    """A lexical model that always gives the task's first label 0.98 or so: easy to see
    in a mix."""
    vectorizer = TfidfVectorizer().fit(texts)
    coef = np.zeros((len(task.labels), len(vectorizer.vocabulary_)))
    return LexicalModel.from_fitted(task.type, vectorizer, coef,
                                    np.linspace(4, -4, len(task.labels)))


def test_lexical_share_follows_typicality_and_is_none_out_of_domain(keyword_run):
    """A lexical weight is chosen on articles like the training ones: it is served in full
    on typical articles, scaled down on atypical ones, and out of domain the network
    answers alone (DomainReference.lexical_trust; docs/inference.md, "Out of domain")."""
    base = load_classifier(keyword_run / "model", precision="fp32", quiet=True, early_exit=None)
    task = base.tasks[0]
    clf = ArticleClassifier(base.network, base.tokenizer, base.metadata,
                            {task.name: constant_lexical(task, [LIKE_TRAINING, FOREIGN])},
                            base.settings, domain=base.domain)
    encoded = clf.encode([LIKE_TRAINING, FOREIGN])
    rows = clf.embed_windows(encoded)
    logits = clf.score(rows, encoded)
    task.lexical_weight = None
    alone = clf.mix(logits, encoded)[task.name][0]
    task.lexical_weight = 0.9
    mixed, domain = clf.answer(rows, encoded)
    served, _, lexical = mixed[task.name]
    trust = clf.domain.lexical_trust(domain)
    assert list(domain.in_domain) == [True, False] and trust[0] > 0.5 and trust[1] == 0
    assert trust[0] == pytest.approx(min(1.0, domain.percentile[0] / 25))
    assert lexical[:, 0].min() > 0.9  # what the lexical model says: returned as it is
    np.testing.assert_allclose(served[1], alone[1], atol=1e-6)  # out of domain: none of it
    task.lexical_weight = 0.9 * float(trust[0])  # in domain: its weight times the trust
    np.testing.assert_allclose(served[0], clf.mix(logits, encoded)[task.name][0][0], atol=1e-6)
    assert served[0, 0] > alone[0, 0] + 0.3
    task.lexical_weight = 0.9
    np.testing.assert_allclose(clf.probabilities(encoded)[task.name], served, atol=1e-6)


def test_artifact_without_a_reference_still_loads_and_predicts(keyword_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(keyword_run / "model", old)
    (old / DOMAIN_NAME).unlink()
    prediction = load_classifier(old, precision="fp32", quiet=True).predict(LIKE_TRAINING)
    assert "domain" not in prediction and prediction["topic"]["label"]
    # A damaged file is refused, naming it.
    (old / DOMAIN_NAME).write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError, match=f"{DOMAIN_NAME}: unreadable domain reference"):
        load_classifier(old, precision="fp32", quiet=True)


def test_prediction_lines_of_the_batch_runner_carry_the_flag(keyword_run, tmp_path):
    from model.batch.local_runner import predict_file

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"a{i}", "text": t}) + "\n"
                              for i, t in enumerate([LIKE_TRAINING, FOREIGN])))
    out = tmp_path / "out.jsonl"
    predict_file(keyword_run / "model", source, out, load={"precision": "fp32", "quiet": True})
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["domain"]["in_domain"] for line in lines] == [True, False]
