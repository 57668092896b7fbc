"""Training options that change what the model learns: class weights, how tasks are
mixed into batches, and learned attention pooling trained, saved and reloaded."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import load_classifier
from model.core.config import ModelConfig
from model.core.network import ArticleClassifierNetwork
from model.core.tasks import TaskSpec
from model.core.text import EncodedArticle
from tests.conftest import run_cli, tiny_overrides
from train.data import Example
from train.trainer import ArticleDataset, TaskMixSampler, balanced_weights, task_sampling_weights


def examples(labels):
    return [Example(str(i), "x", label, "here") for i, label in enumerate(labels)]


def test_balanced_weights_single_and_multi_label():
    spec = TaskSpec("topic", "single_label", ["a", "b", "c"])
    weights = balanced_weights(spec, examples(["a"] * 6 + ["b"] * 3 + ["c"]))
    # n / (classes * count): the rare class weighs 6x the common one.
    assert weights.tolist() == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    frames = TaskSpec("frames", "multi_label", ["x", "y"])
    pos = balanced_weights(frames, examples([["x"], ["x", "y"], ["x"], []]))
    assert pos.tolist() == pytest.approx([1 / 3, 3.0])  # negatives / positives per label


def test_class_weights_reach_the_loss(tiny_encoder):
    from transformers import AutoModel

    spec = TaskSpec("topic", "single_label", ["a", "b"])
    network = ArticleClassifierNetwork(AutoModel.from_pretrained(tiny_encoder), [spec],
                                       ModelConfig(dropout=0.0))
    logits = {"topic": torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.5]])}
    gold = {"topic": torch.tensor([1, 1, 0])}
    task_ids = torch.zeros(3, dtype=torch.long)
    plain = network.loss(logits, task_ids, gold)
    weight = torch.tensor([3.0, 0.5])
    network.set_loss_weights("topic", weight)
    weighted = network.loss(logits, task_ids, gold)
    assert weighted.item() == pytest.approx(
        F.cross_entropy(logits["topic"], gold["topic"], weight=weight).item())
    assert weighted.item() != pytest.approx(plain.item())


def test_task_temperature_sets_the_shares_of_a_batch():
    tasks = [0] * 900 + [1] * 100
    assert task_sampling_weights(tasks, 1.0) is None  # T = 1: a plain shuffle
    weights = task_sampling_weights(tasks, 2.0)
    expected_share = 100 ** 0.5 / (900 ** 0.5 + 100 ** 0.5)  # n_t^(1/T), normalised: 0.25
    article = EncodedArticle([[1, 2]], 2, 1)
    dataset = ArticleDataset([(article, t, 0) for t in tasks], ModelConfig(), seed=3)
    sampler = TaskMixSampler(weights, dataset, seed=3)
    first = list(sampler)
    share = Counter(tasks[i] for i in first)[1] / len(first)
    assert share == pytest.approx(expected_share, abs=0.04)
    assert list(sampler) == first  # the same epoch replays the same order (resume)
    dataset.epoch = 1
    assert list(sampler) != first  # and the next epoch draws anew


def test_window_draws_depend_on_seed_epoch_and_article_only():
    article = EncodedArticle([[i] for i in range(20)], 20, 20)
    config = ModelConfig(train_max_chunks=2, train_chunk_selection="random")
    a = ArticleDataset([(article, 0, 0)] * 3, config, seed=1)
    b = ArticleDataset([(article, 0, 0)] * 3, config, seed=1)
    drawn = [a[i]["windows"] for i in range(3)]
    for _ in range(5):
        a[0]  # noqa: B018 - reading an item must not move later draws
    assert [b[i]["windows"] for i in range(3)] == drawn == [a[i]["windows"] for i in range(3)]
    a.epoch = 1
    assert [a[i]["windows"] for i in range(3)] != drawn


@pytest.mark.slow  # 13-20 s: make test-slow (and CI) runs it
def test_attention_pooling_trained_saved_and_reloaded(tiny_encoder, keyword_data, tmp_path):
    out = tmp_path / "attention"
    run_cli("-m", "train", "--config", "configs/bbc_topic_finetune.yaml",
            *tiny_overrides(tiny_encoder, out, "tasks.0.dataset.format=jsonl",
                            f"tasks.0.dataset.path={keyword_data}", "training.epochs=5",
                            "training.batch_size=8", "training.learning_rate=3e-3",
                            "training.warmup_ratio=0.0", "model.pooling=attention",
                            "model.train_max_chunks=3"))
    metrics = json.loads((out / "metrics.json").read_text())["tasks"]["topic"]
    assert metrics["accuracy"] >= 0.85
    clf = load_classifier(out / "model", precision="fp32", device="cpu")
    assert clf.config.pooling == "attention" and "topic" in clf.network.chunk_attention
    # The reloaded model scores the test split exactly as the trained one did.
    proc = run_cli("-m", "train.evaluate", "--model", str(out / "model"), "--config",
                   str(out / "config.yaml"), "--out", str(tmp_path / "eval"))
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())["tasks"]["topic"]
    assert again["confusion_matrix"] == metrics["confusion_matrix"], proc.stdout
    # The learned weights are not uniform: windows of a long article count differently.
    text = " ".join(["the striker scored a goal"] * 20 + ["bank shares and profit"] * 20)
    encoded = clf.encode([text])
    batch = clf.tokenizer.pad({"input_ids": encoded[0].windows}, return_tensors="pt")
    with torch.no_grad():
        emb = clf.network.embed_chunks(batch["input_ids"], batch["attention_mask"])
        scores = clf.network.chunk_attention["topic"](emb).squeeze(-1)
    assert len(scores) >= 3 and float(scores.std()) > 1e-3
    assert np.isfinite(scores.numpy()).all()
