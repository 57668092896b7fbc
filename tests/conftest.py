"""Shared fixtures: a tiny random BERT with a tokenizer trained in code, small real data,
and a model trained for real through the `python -m train` command."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.servers import free_port  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Engines, embeddings and encoders that tests build go to a cache of this session, not
# the user's (subprocesses inherit it).
os.environ.setdefault("ARTICLE_CLASSIFIER_CACHE", tempfile.mkdtemp(prefix="article-classifier-"
                                                                   "test-cache-"))


def run_cli(*args: str, check: bool = True, env: dict | None = None, timeout: int = 600):
    """Run `python -m ...` from the repo root as a user would; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}"
                             f"\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def bbc_texts(limit: int = 200) -> list[str]:
    from train.config import DatasetConfig
    from train.data import load_bbc

    rows = load_bbc(DatasetConfig(), None)
    return [text for _, _, text, _, _ in rows][:: max(1, 2225 // limit)][:limit]


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT and a WordPiece tokenizer trained on BBC text."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny_encoder")
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece.train_from_iterator(bbc_texts(300), trainers.WordPieceTrainer(
        vocab_size=3000, special_tokens=special))
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", wordpiece.token_to_id("[CLS]")),
                        ("[SEP]", wordpiece.token_to_id("[SEP]"))])
    tokenizer = BertTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]",
                                  pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                  mask_token="[MASK]", model_max_length=512)
    config = BertConfig(vocab_size=wordpiece.get_vocab_size(), hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=512)
    torch.manual_seed(0)  # the same random encoder in every session, whatever ran before
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_keyword_jsonl(path: Path, n: int = 120, seed: int = 0) -> Path:
    """Two easy classes told apart by their vocabulary, in the format users supply."""
    import random

    rng = random.Random(seed)
    words = {"sport": "match goal striker league coach season win team football cup",
             "business": "shares market profit bank economy investors growth company price"}
    filler = "the a of and in on said it was for with".split()
    with open(path, "w") as handle:
        for i in range(n):
            label = "sport" if i % 2 else "business"
            tokens = [rng.choice(words[label].split() if rng.random() < 0.5 else filler)
                      for _ in range(rng.randint(8, 120))]
            handle.write(json.dumps({"id": f"a{i}", "title": f"Story {i}",
                                     "text": " ".join(tokens), "label": label}) + "\n")
    return path


@pytest.fixture(scope="session")
def keyword_data(tmp_path_factory) -> Path:
    return write_keyword_jsonl(tmp_path_factory.mktemp("data") / "keywords.jsonl")


def tiny_overrides(encoder: Path, out_dir: Path, *extra: str) -> list[str]:
    sets = [f"model.encoder={encoder}", "model.max_length=64", "model.stride=8",
            "model.max_chunks=8", f"training.output_dir={out_dir}", "training.precision=fp32",
            # Scoring the saved model under the int8 backend is checked on keyword_run only.
            "training.logging_steps=5", "training.check_served=false", *extra]
    return [arg for s in sets for arg in ("--set", s)]


@pytest.fixture(scope="session")
def trained_run(tiny_encoder, tmp_path_factory) -> Path:
    """A tiny model trained for real on 150 BBC articles through `python -m train`."""
    out = tmp_path_factory.mktemp("run") / "bbc_tiny"
    run_cli("-m", "train", "--config", "configs/bbc_topic_finetune.yaml",
            *tiny_overrides(tiny_encoder, out, "data.max_samples=150", "training.epochs=2",
                            "training.learning_rate=1e-3", "model.train_max_chunks=2"))
    return out


@pytest.fixture(scope="session")
def keyword_run(tiny_encoder, keyword_data, tmp_path_factory) -> Path:
    """A tiny model trained on an easy JSONL task: it must learn it."""
    out = tmp_path_factory.mktemp("run") / "keywords"
    run_cli("-m", "train", "--config", "configs/bbc_topic_finetune.yaml",
            *tiny_overrides(tiny_encoder, out, "tasks.0.dataset.format=jsonl",
                            f"tasks.0.dataset.path={keyword_data}", "training.epochs=6",
                            "training.check_served=true",
                            "training.batch_size=8", "training.learning_rate=3e-3",
                            "training.warmup_ratio=0.0"))
    return out


class ServedPort(int):
    """The port of a test server, carrying the server's pid for memory checks."""

    def __new__(cls, port: int, pid: int):
        obj = super().__new__(cls, port)
        obj.pid = pid
        return obj


def request(port, method, path, body=None, raw: bytes | None = None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json",
                                                   **(headers or {})})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    try:
        return response.status, json.loads(payload)
    except json.JSONDecodeError:
        return response.status, payload.decode(errors="replace")


@pytest.fixture(scope="session")
def server(keyword_run, tmp_path_factory):
    """The keyword model served by `article-classifier serve` on a free local port."""
    port = free_port()
    # The access log goes to a file: an unread pipe fills up and blocks the server.
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w+b")
    proc = subprocess.Popen([sys.executable, "-m", "model.cli", "serve",
                             str(keyword_run / "model"), "--port", str(port),
                             "--max-articles", "8", "--max-body-bytes", "20000",
                             "--batch-wait-ms", "20"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if request(port, "GET", "/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        log.seek(0)
        raise RuntimeError(log.read().decode()[-2000:])
    yield ServedPort(port, proc.pid)
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    finally:
        log.close()


def iter_ray_rows(folder: Path):
    """Every row a Ray run wrote (JSONL or Parquet shards), duplicates included."""
    import pyarrow.parquet as pq

    for path in sorted(Path(folder).iterdir()):
        if path.suffix == ".parquet":
            yield from pq.read_table(path).to_pylist()
        elif path.suffix in (".json", ".jsonl"):
            yield from (json.loads(line) for line in path.read_text().splitlines() if line)


@pytest.fixture
def fail_rename_into(monkeypatch):
    """`fail_rename_into(target)` makes the first os.rename onto `target` fail (the final
    swap of a folder written beside it), letting every other rename through (moving the
    old folder aside, putting it back). Returns the list the failed rename is added to."""
    def arm(target: Path) -> list:
        real, failed = os.rename, []

        def rename(src, dst, *args, **kwargs):
            if Path(dst) == Path(target) and not failed:
                failed.append((src, dst))
                raise OSError(28, "No space left on device (injected)")
            return real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "rename", rename)
        return failed
    return arm


# --- the web page (tests/test_web_page.py, test_profile_page.py, test_service_page.py) -----
# At session scope: one browser, one tiny two-task model and one page server for them all.
@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    from bench import screenshots as shots
    from tests.pages import in_ci

    found = shots.find_browser()
    if isinstance(found, str):
        if in_ci():
            pytest.fail(f"CI must run the browser tests, but there is {found}")
        print(f"\ntest_web_page: skipping the browser tests: {found}")
        pytest.skip(found)
    driver = shots.start_browser(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def page_model(tiny_encoder, keyword_data, tmp_path_factory) -> Path:
    """Topic (single-label) and frames (multi-label) in one model, frozen-trained."""
    from tests.test_frozen_and_lexical import write_frames_jsonl

    root = tmp_path_factory.mktemp("page_model")
    frames = write_frames_jsonl(root / "frames.jsonl", n=120)
    config = {
        "model": {"encoder": str(tiny_encoder), "max_length": 64, "stride": 8,
                  "max_chunks": 8, "pooling": "mean"},
        "tasks": [{"name": "topic", "type": "single_label",
                   "dataset": {"format": "jsonl", "path": str(keyword_data)}},
                  {"name": "frames", "type": "multi_label", "threshold_tuning": "global",
                   "dataset": {"format": "jsonl", "path": str(frames)}}],
        "training": {"output_dir": str(root / "run"), "mode": "frozen", "precision": "fp32",
                     "embedding_cache": str(root / "cache")}}
    (root / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    run_cli("-m", "train", "--config", str(root / "config.yaml"))
    return root / "run" / "model"


@pytest.fixture(scope="session")
def predictions(tmp_path_factory) -> Path:
    from tests.pages import write_predictions

    return write_predictions(tmp_path_factory.mktemp("pred") / "predictions.jsonl", {
        "bbc": {"Economic": 9, "Legality": 1}, "breitbart": {"Economic": 3, "Legality": 6},
        "guardian": {"Economic": 5, "Legality": 8}}, undated=1)


@pytest.fixture(scope="session")
def page_server(page_model, predictions, tmp_path_factory):
    from tests.pages import BODY_LIMIT
    from tests.servers import start_service, stop_service

    port = free_port()
    proc = start_service(page_model, port, tmp_path_factory.mktemp("serve") / "log",
                         "--precision", "fp32", "--max-body-bytes", str(BODY_LIMIT),
                         "--profile", str(predictions))
    yield port
    stop_service(proc)
