"""Windowing of long articles, text cleaning, and pooling of chunks in the network."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from model.core.config import ModelConfig
from model.core.network import ArticleClassifierNetwork
from model.core.tasks import TaskSpec
from model.core.text import (
    chunk_articles,
    clean_text,
    pick_training_windows,
    spread_indices,
    strip_boilerplate,
)
from model.runtime.classifier import ArticleClassifier


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    return AutoTokenizer.from_pretrained(tiny_encoder)


def test_windows_cover_the_whole_article_with_overlap(tokenizer):
    text = " ".join(f"word{i % 50} market" for i in range(400))
    full = tokenizer(text, add_special_tokens=False)["input_ids"]
    [art] = chunk_articles(tokenizer, [text], max_length=64, stride=16, max_chunks=100)
    assert art.n_tokens == len(full) and not art.truncated
    body = [w[1:-1] for w in art.windows]  # strip [CLS] ... [SEP]
    assert all(len(w) <= 64 for w in art.windows)
    for prev, nxt in zip(body, body[1:]):
        assert prev[-16:] == nxt[:16]  # consecutive windows share `stride` tokens
    rebuilt = body[0] + [t for w in body[1:] for t in w[16:]]
    assert rebuilt == full


def test_short_article_is_one_window(tokenizer):
    [art] = chunk_articles(tokenizer, ["Shares rose."], 64, 16, 8)
    assert len(art.windows) == 1 and art.n_windows_total == 1 and art.n_tokens >= 2


def test_too_long_article_keeps_windows_spread_and_says_so(tokenizer):
    text = " ".join(["market"] * 3000)
    [art] = chunk_articles(tokenizer, [text], 64, 8, 4)
    assert len(art.windows) == 4 and art.n_windows_total > 4 and art.truncated
    assert art.n_tokens == 3000


def test_spread_and_training_windows():
    assert spread_indices(3, 5) == [0, 1, 2]
    assert spread_indices(10, 3) == [0, 4, 9] or spread_indices(10, 3) == [0, 5, 9]
    rng = random.Random(0)
    assert pick_training_windows(10, 2, "first", rng) == [0, 1]
    starts = {pick_training_windows(10, 2, "random", rng)[0] for _ in range(200)}
    assert starts == set(range(9))


def test_clean_text_normalises_and_keeps_content():
    raw = "Title\r\n\r\n\r\nBody\x00 with\t\ttabs\u00a0and\x1b controls"
    assert clean_text(raw) == "Title\n\nBody with tabs and controls"


def test_boilerplate_is_cut_only_at_the_end():
    body = "\n".join(f"Paragraph {i} of the story." for i in range(12))
    page = body + "\nLatest News\nLink one\nLink two\nReceive our daily newsletter"
    assert strip_boilerplate(page) == body
    early = "Read more about it below.\n" + body
    assert strip_boilerplate(early) == early


def test_boilerplate_cut_moves_up_over_headline_lists_to_their_heading():
    """Page furniture that starts above the last third: headline lists under their own
    headings, as the scraped sample article has them. A short line of the story with no
    marker above it stays."""
    story = "\n\n".join(f"Paragraph {i} of the story about the call." for i in range(5))
    lists = ("Featured Video\nPutin warns the West\nMarkets fall again\nEditorial Pick\n"
             "A new look at the war\nLatest News\n" + "\n".join(f"Headline {i}" for i in range(8)))
    assert strip_boilerplate(f"{story}\n\n{lists}") == story
    signed = f"{story}\nBy John Smith\nWashington bureau\nLatest News\nHeadline"
    assert strip_boilerplate(signed).endswith("call.\nBy John Smith\nWashington bureau")
    # A list of headlines under a heading no marker names goes with the furniture below it.
    unnamed = (f"{story}\n\nWatch now\n" + "\n".join(f"Headline {i}" for i in range(6))
               + "\nCopyright 2025 The Daily Example")
    assert strip_boilerplate(unnamed) == story


def test_boilerplate_cutter_leaves_sentences_and_mid_story_boxes_alone():
    # A sentence that starts with a marker's words is no marker (French "Comment ...").
    french = "\n".join(["Le gouvernement a tranché."] * 6
                       + ["Comment ? La solution est simple, non violente.", "À suivre."])
    assert strip_boilerplate(french) == french
    # A sign-up box with the story going on after it: cutting there would lose most of it.
    # (Paragraphs under 200 characters: only the rule "never more than half" keeps them.)
    paragraph = ("A paragraph of the story, with its facts. " * 3).strip()
    boxed = "\n".join([f"Lead sentence {i}." for i in range(12)] + ["Email *"]
                      + [paragraph] * 5)
    assert strip_boilerplate(boxed) == boxed
    leads = "\n".join(f"Lead sentence {i}." for i in range(6))
    assert strip_boilerplate(f"{leads}\nEmail *\nName\nSend") == leads  # a box at the end


STORY = [f"Paragraph {i} of the story, which goes on at the length of a real one." for i in
         range(14)]


@pytest.mark.parametrize("tail", [
    # An advert or a photo credit inside the story, with paragraphs after it.
    ["Advertisement", "A" * 220 + ".", "B" * 220 + "."],
    ["\u00a9 Reuters Bishop Barros (centre) at the mass", "A" * 220 + ".", "B" * 220 + "."],
    # A sentence that merely starts like a marker, longer than a furniture line.
    ["Subscribe " + "to the idea that the council will act, as many residents do, " * 2 + "."],
])
def test_the_cutter_keeps_story_that_only_looks_like_furniture(tail):
    text = "\n".join(STORY + tail)
    assert strip_boilerplate(text) == text


def test_the_cutter_keeps_a_story_list_and_a_byline_above_named_furniture():
    key_points = STORY + ["Key points:"] + [f"Point {i} of the plan" for i in range(6)]
    text = "\n".join(key_points + ["Subscribe to our newsletter"])
    assert strip_boilerplate(text) == "\n".join(key_points)
    signed = STORY + ["By John Smith", "Reporting from Kyiv"]
    text = "\n".join(signed + ["Related stories"] + [f"Headline {i}" for i in range(12)])
    assert strip_boilerplate(text) == "\n".join(signed)


def test_the_cutter_walks_up_at_most_its_limit():
    verse = [f"Line {i} of a long poem" for i in range(150)]
    story = STORY * 6  # long enough that "never more than half" does not decide here
    text = "\n".join(story + verse + ["Related stories", "Headline", "\u00a9 2025 Site"])
    kept = strip_boilerplate(text).split("\n")
    assert kept[:len(story)] == story and len(kept) >= len(story) + 150 - 62


@pytest.mark.parametrize("pooling", ["mean", "max", "attention"])
def test_pooling_groups_chunks_by_article(tiny_encoder, pooling):
    torch.manual_seed(0)
    tasks = [TaskSpec("topic", "single_label", ["a", "b", "c"]),
             TaskSpec("frames", "multi_label", ["x", "y"])]
    net = ArticleClassifierNetwork(AutoModel.from_pretrained(tiny_encoder), tasks,
                                   ModelConfig(pooling=pooling, dropout=0.0)).eval()
    ids = torch.randint(5, 100, (5, 12))
    mask = torch.ones_like(ids)
    chunk_article = torch.tensor([0, 0, 0, 1, 2])
    out = net(ids, mask, chunk_article)["logits"]
    assert out["topic"].shape == (3, 3) and out["frames"].shape == (3, 2)
    # Each article's logits depend only on its own chunks.
    alone = net(ids[:3], mask[:3], torch.zeros(3, dtype=torch.long))["logits"]
    assert torch.allclose(alone["topic"][0], out["topic"][0], atol=1e-5)
    if pooling == "mean":
        per_chunk = net(ids[:3], mask[:3], torch.arange(3))["logits"]["topic"]
        assert torch.allclose(per_chunk.mean(0), out["topic"][0], atol=1e-5)


def test_each_head_loss_sees_only_its_task(tiny_encoder):
    tasks = [TaskSpec("topic", "single_label", ["a", "b"]),
             TaskSpec("frames", "multi_label", ["x", "y"])]
    net = ArticleClassifierNetwork(AutoModel.from_pretrained(tiny_encoder), tasks,
                                   ModelConfig(dropout=0.0))
    ids, mask = torch.randint(5, 100, (2, 10)), torch.ones(2, 10, dtype=torch.long)
    targets = {"topic": torch.tensor([1, -100])}
    out = net(ids, mask, torch.tensor([0, 1]), task_ids=torch.tensor([0, 1]), targets=targets)
    expected = torch.nn.functional.cross_entropy(out["logits"]["topic"][:1], torch.tensor([1]))
    assert torch.allclose(out["loss"], expected)
    out["loss"].backward()
    assert net.heads["topic"].weight.grad.abs().sum() > 0
    frames_grad = net.heads["frames"].weight.grad
    assert frames_grad is None or frames_grad.abs().sum() == 0


def test_classifier_follows_the_network_when_it_moves(tiny_encoder, tokenizer):
    """The Trainer moves the network (to a GPU) after the classifier that evaluates it
    was made; inputs must then go where the network is, not where it was."""
    tasks = [TaskSpec("topic", "single_label", ["a", "b"])]
    net = ArticleClassifierNetwork(AutoModel.from_pretrained(tiny_encoder), tasks, ModelConfig())
    clf = ArticleClassifier(net, tokenizer)
    assert clf.device.type == "cpu"
    net.to("meta")
    assert clf.device.type == "meta"


def test_model_config_rejects_bad_values():
    with pytest.raises(ValueError, match="pooling"):
        ModelConfig(pooling="median")
    with pytest.raises(ValueError, match="stride"):
        ModelConfig(max_length=64, stride=40)
