"""Evidence passages: offsets into the caller's text, exact decomposition of the model's
logits, stability across batches, and the CLI and Python entry points, on a model trained
for real (frozen tiny encoder + lexical component, frames with their own vocabularies)."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModel, AutoTokenizer

from model.core.config import ModelConfig
from model.core.network import ArticleClassifierNetwork
from model.core.tasks import TaskSpec
from model.core.text import clean_text, clean_text_mapped, join_title
from model.runtime.classifier import ArticleClassifier
from model.runtime.devices import native_bf16
from model.runtime.evidence import (
    explain,
    in_fields,
    lexical_contributions,
    probability_change,
    split_passages,
    top_passages,
    window_weights,
)
from model.runtime.loading import load_classifier
from model.runtime.settings import ServingSettings
from tests.conftest import request, run_cli
from tests.servers import free_port, start_service, stop_service
from tests.test_frozen_and_lexical import frozen_overrides, write_frames_jsonl

SENTENCES = {
    "Legality": "The judge issued a ruling in court on the lawsuit and the appeal.",
    "Security": "Army troops moved missile units to the border after an attack.",
    "Health": "Doctors at the hospital gave the vaccine to patients with the virus.",
    "Economic": "The budget raised tax on jobs as market prices and wages rose.",
}
FILLER = "It was said on the day, and it was in the news for a while."
PAGE = ("<html><head><title>Court report</title></head><body><nav>Home</nav>"
        "<article><h1>Court report</h1>"
        + "".join(f"<p>{SENTENCES[f]} {FILLER}</p>" for f in ("Legality", "Economic"))
        + "</article><footer>Subscribe</footer></body></html>")


@pytest.fixture(scope="module")
def run(tiny_encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("evidence")
    data = write_frames_jsonl(root / "frames.jsonl", n=200)
    out = root / "run"
    run_cli("-m", "train", "--config", "configs/bbc_topic_finetune.yaml",
            *frozen_overrides(tiny_encoder, out, data, root / "cache", "tasks.0.lexical=true"))
    return out


@pytest.fixture(scope="module")
def clf(run):
    return load_classifier(run / "model", precision="fp32", device="cpu")


def article(*frames: str, messy: bool = False) -> str:
    parts = [FILLER] + [SENTENCES[f] for f in frames] + [FILLER]
    if not messy:
        return " ".join(parts)
    # What real input looks like: CRLF, runs of spaces and tabs, decomposed accents,
    # a control character, an emoji before the passages (one code point, two UTF-16 units).
    return ("  Caf\u0065\u0301 report 😀\r\n\r\n" + "\t \x07".join(parts[:2]) + "\r\n\r\n\r\n"
            + "   ".join(parts[2:]) + "  \n")


def test_split_passages_keeps_abbreviations_and_initials_inside_sentences():
    text = ("Mr. Smith met U.S. officials on Monday. J. R. Jones said no! "
            "\u201cWe will see,\u201d he said.\nA new line starts here")
    got = [text[s:e] for s, e in split_passages(text)]
    assert got == ["Mr. Smith met U.S. officials on Monday.", "J. R. Jones said no!",
                   "\u201cWe will see,\u201d he said.", "A new line starts here"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("ab .\n\r\t\x00\u00a0\u3000") +
                                ["e\u0301", "\u1100\u1161", "😀", "\nLatest News\n"]),
                max_size=60).map("".join), st.booleans())
def test_cleaning_map_points_back_at_the_same_characters(text, boilerplate):
    cleaned, origin = clean_text_mapped(text, boilerplate)
    assert cleaned == clean_text(text, boilerplate)
    assert len(origin) == len(cleaned) + 1 and np.all(np.diff(origin) >= 0)
    if unicodedata.is_normalized("NFC", text):
        for i, ch in enumerate(cleaned):
            if not ch.isspace():
                assert text[origin[i]] == ch


def test_a_passage_ending_in_a_composed_character_keeps_its_marks():
    text = "Le cafe\u0301 ferme. Fini le cafe\u0301"  # decomposed accents, as typed on some systems
    cleaned, origin = clean_text_mapped(text)
    units = split_passages(cleaned)
    found = top_passages(np.array([1.0, 0.5]), units, origin, text, 2)
    assert [p["text"] for p in found] == ["Le cafe\u0301 ferme.", "Fini le cafe\u0301"]


@pytest.mark.parametrize("word", ["\u0995\u09c7\u09be", "\u1100\u1161\u11a8", "cafe\u0301"])
def test_text_that_composes_across_clusters_shifts_no_later_offset(word):
    """Bengali two-part vowels and Hangul jamo compose across base characters, which
    cluster-by-cluster normalisation cannot follow; only that word is approximate."""
    text = f"Een {word} here. First sentence here. Last one here"
    cleaned, origin = clean_text_mapped(text)
    units = split_passages(cleaned)
    found = top_passages(np.arange(len(units), 0, -1.0), units, origin, text, 3)
    assert [p["text"] for p in found] == [f"Een {word} here.", "First sentence here.",
                                          "Last one here"]


def test_offsets_point_at_the_passages_in_the_callers_text(clf):
    text = article("Legality", "Health", messy=True)
    out = clf.predict(text, evidence=2)
    passages = [p for labels in out["evidence"].values() for ps in labels.values() for p in ps]
    assert passages
    for p in passages:
        assert text[p["start"]:p["end"]] == p["text"]
        # A passage is a whole sentence of the article, as cleaning reads it.
        sentences = (FILLER, "Caf\u00e9 report 😀", *SENTENCES.values())
        assert clean_text(p["text"]) in sentences


def test_each_frame_is_shown_by_its_own_sentence(clf):
    out = clf.predict(article("Legality", "Security", "Health"), evidence=1)
    given = out["frames"]["labels"]
    assert set(given) >= {"Legality", "Security", "Health"}, out["frames"]
    for frame in ("Legality", "Security", "Health"):
        [best] = out["evidence"]["frames"][frame]
        assert best["text"] == SENTENCES[frame]
        assert best["score"] > 0


def test_network_attribution_sums_to_the_networks_logit(clf):
    """With mean token pooling and linear heads, the token terms plus the bias are the
    logit exactly: the evidence is the model's own arithmetic, not an approximation."""
    texts = [article("Economic", "Health") * 12, article("Security")]  # many windows, one
    encoded = clf.encode(texts, spans=True)
    heads = clf.network.heads["frames"]
    embeddings, per_token = clf.embed_windows(encoded, 4, token_heads=heads.weight.detach().T)
    logits = clf.score(embeddings, encoded)["frames"]
    first = 0
    for a, art in enumerate(encoded):
        terms = per_token[first:first + len(art.windows)]
        first += len(art.windows)
        total = sum(t.sum(0) for t in terms) / len(terms) + heads.bias.detach().numpy()
        np.testing.assert_allclose(total, logits[a], rtol=1e-4, atol=1e-4)
    assert len(encoded[0].windows) > 1


def test_lexical_attribution_of_the_whole_text_is_its_logit(clf):
    lexical = clf.lexical["frames"]
    text = clean_text(article("Economic", "Legality"))
    whole = lexical_contributions(lexical, text, [(0, len(text))])[0]
    features = lexical.vectorizer().transform([text])
    np.testing.assert_allclose(whole, np.asarray(features @ lexical.coef.T)[0], rtol=1e-5,
                               atol=1e-6)


def test_lexical_attribution_of_passages_adds_up_across_sentence_ends(clf):
    """The passages' lexical shares sum to the logit less the intercept even where a
    learnt bigram crosses a sentence end (it goes to the later sentence)."""
    lexical = clf.lexical["frames"]
    vocabulary = lexical.vectorizer().vocabulary_
    bigrams = sorted((t for t in vocabulary if " " in t),
                     key=lambda t: -np.abs(lexical.coef[:, vocabulary[t]]).sum())[:4]
    text = " ".join(f"It was {a}. {b.capitalize()} was in the news." for a, b in
                    (t.split() for t in bigrams))
    units = split_passages(text)
    assert len(units) == 2 * len(bigrams)
    shares = lexical_contributions(lexical, text, units)
    features = lexical.vectorizer().transform([text])
    np.testing.assert_allclose(shares.sum(0), np.asarray(features @ lexical.coef.T)[0],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["attribution", "sentences"])
def test_evidence_does_not_depend_on_the_batch(clf, method):
    texts = [article("Legality", "Health", messy=True), article("Economic") * 9,
             article("Security", "Economic"), FILLER]
    alone = [clf.predict(t, evidence=3, evidence_method=method, batch_size=1) for t in texts]
    together = clf.predict(texts, evidence=3, evidence_method=method, batch_size=64)
    assert [a["evidence"] for a in alone] == [b["evidence"] for b in together]
    plain = clf.predict(texts)
    assert [p["frames"] for p in plain] == [t["frames"] for t in together]


@pytest.mark.skipif(not native_bf16("cpu"), reason="this CPU runs bf16 only by emulation")
def test_bf16_evidence_keeps_its_passages_across_batches(run):
    """bf16 kernels block a batch by its shape, so scores may move in the last digits;
    the passages and their order must not."""
    clf = load_classifier(run / "model", precision="bf16", device="cpu")
    texts = [article("Legality", "Health", messy=True), article("Economic") * 9,
             article("Security", "Economic")]
    alone = [clf.predict(t, evidence=3, batch_size=1)["evidence"] for t in texts]
    together = [p["evidence"] for p in clf.predict(texts, evidence=3, batch_size=64)]
    for a, b in zip(alone, together):
        for label, passages in a["frames"].items():
            assert [p["text"] for p in passages] == [p["text"] for p in b["frames"][label]]
            for p, q in zip(passages, b["frames"][label]):
                assert p["score"] == pytest.approx(q["score"], abs=5e-3)


def test_both_methods_and_the_choice_for_cls_pooled_encoders(clf):
    encoded = clf.encode([article("Health")], spans=True)
    _, [by_attribution], _ = explain(clf, encoded, [article("Health")], method="attribution")
    _, [by_sentence], _ = explain(clf, encoded, [article("Health")], method="sentences")
    column = clf.tasks[0].labels.index("Health")
    for found in (by_attribution, by_sentence):
        best = found.units[int(np.argmax(found.scores["frames"][:, column]))]
        assert encoded[0].text[best[0]:best[1]] == SENTENCES["Health"]
    clf.config.token_pooling = "cls"
    try:
        with pytest.raises(ValueError, match="pooled by \\[CLS\\]"):
            clf.predict("A text.", evidence=1, evidence_method="attribution")
        out = clf.predict(article("Health"), evidence=1)  # auto: sentences
        assert out["evidence"]["frames"]
    finally:
        clf.config.token_pooling = "mean"
    with pytest.raises(ValueError, match="evidence method"):
        clf.predict("A text.", evidence=1, evidence_method="occlusion")
    with pytest.raises(ValueError, match="passages >= 0"):
        clf.predict("A text.", evidence=-1)


def test_cli_evidence_offsets_count_in_the_title_or_the_text(run, tmp_path):
    records = [{"id": "a", "title": "  Hospital doctors and the vaccine for patients",
                "text": article("Health")},
               {"id": "b", "text": article("Legality", messy=True)},
               {"id": "c", "html": PAGE, "url": "https://www.example.org/a"}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out.jsonl"
    run_cli("-m", "model.cli", "predict", str(run / "model"), str(source), "-o", str(out),
            "--evidence", "--precision", "fp32")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    fields = set()
    for record, line in zip(records, lines):
        # A web page's line carries the text read (title first); its offsets count there.
        sent = line if "html" in record else record
        assert ("text" in line) == ("html" in record)
        # Each given label has its best passages, up to 3 (none when no passage raises it).
        assert set(line["evidence"]["frames"]) == set(line["frames"]["labels"])
        assert any(line["evidence"]["frames"].values())
        for passages in line["evidence"]["frames"].values():
            assert len(passages) <= 3
            for p in passages:
                fields.add(p["field"])
                assert sent[p["field"]][p["start"]:p["end"]] == p["text"]
    assert fields == {"title", "text"}
    assert lines[2]["source"] == "example.org" and lines[2]["text"].startswith("Court report")


def test_service_gives_evidence_in_the_fields_sent_and_for_pages(run, clf, tmp_path):
    port = free_port()
    proc = start_service(run / "model", port, tmp_path / "serve.log", "--precision", "fp32")
    try:
        title, text = "  Hospital doctors and the vaccine for patients", article(
            "Legality", "Health", messy=True)
        status, out = request(port, "POST", "/predict",
                              {"title": title, "text": text, "evidence": 2})
        assert status == 200, out
        # The same passages as the Python API, moved into the fields they lie in.
        expected = in_fields(clf.predict(join_title(title, text), evidence=2)["evidence"],
                             title, text)
        assert out["evidence"] == expected
        sent = {"title": title, "text": text}
        for passages in out["evidence"]["frames"].values():
            for p in passages:
                assert sent[p["field"]][p["start"]:p["end"]] == p["text"]
        assert "evidence" not in request(port, "POST", "/predict", {"text": text})[1]
        status, out = request(port, "POST", "/predict", {"articles": [
            {"id": 1, "html": PAGE, "url": "https://www.example.org/a"}], "evidence": 1})
        assert status == 200, out
        [answer] = out["predictions"]
        assert answer["source"] == "example.org"
        passages = [p for ps in answer["evidence"]["frames"].values() for p in ps]
        assert passages
        for p in passages:
            assert answer[p["field"]][p["start"]:p["end"]] == p["text"]
        status, out = request(port, "POST", "/predict", {"text": text, "evidence": 1,
                                                         "evidence_method": "occlusion"})
        assert status == 422
    finally:
        stop_service(proc)


@pytest.mark.parametrize("pooling", ["mean", "max", "attention"])
def test_token_terms_weighted_as_windows_are_pooled_add_up_to_the_logit(tiny_encoder, pooling):
    """Every pooling of windows: the token terms, weighted by `window_weights`, plus the
    bias are each label's logit (max and attention pooling included)."""
    torch.manual_seed(0)
    tasks = [TaskSpec("topic", "single_label", ["a", "b", "c"]),
             TaskSpec("frames", "multi_label", ["x", "y"])]
    config = ModelConfig(encoder=str(tiny_encoder), max_length=32, stride=4, max_chunks=8,
                         pooling=pooling, dropout=0.0, token_pooling="mean")
    network = ArticleClassifierNetwork(AutoModel.from_pretrained(tiny_encoder), tasks, config)
    clf = ArticleClassifier(network, AutoTokenizer.from_pretrained(tiny_encoder),
                            settings=ServingSettings(precision="fp32", device="cpu"))
    encoded = clf.encode([article("Economic", "Health") * 4], spans=True)
    assert len(encoded[0].windows) > 2
    heads = torch.cat([network.heads[t.name].weight for t in tasks]).detach()
    embeddings, per_token = clf.embed_windows(encoded, 3, token_heads=heads.T)
    logits = clf.score(embeddings, encoded)
    columns = {"topic": slice(0, 3), "frames": slice(3, 5)}
    for task in tasks:
        weights = window_weights(network, task, embeddings, clf.config.pooling)
        total = sum(w * t[:, columns[task.name]].sum(0) for w, t in zip(weights, per_token))
        np.testing.assert_allclose(total + network.heads[task.name].bias.detach().numpy(),
                                   logits[task.name][0], rtol=1e-4, atol=1e-5)


def test_first_order_probability_change_is_the_jacobian():
    """A passage's score is the Jacobian of the probabilities times its logit terms:
    checked against autograd for the softmax and the sigmoid."""
    rng = np.random.default_rng(0)
    logits, terms = rng.normal(size=4), rng.normal(size=(5, 4))
    for kind, link in (("single_label", lambda z: torch.softmax(z, 0)),
                       ("multi_label", torch.sigmoid)):
        task = TaskSpec("t", kind, list("abcd"))
        z = torch.tensor(logits)
        jacobian = torch.autograd.functional.jacobian(link, z).numpy()
        probs = link(z).numpy()
        np.testing.assert_allclose(probability_change(task, probs, terms),
                                   terms @ jacobian.T, rtol=1e-10, atol=1e-12)
