"""Failure behaviour: killed training and batch jobs resume, bad input never crashes a job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model import load_classifier
from model.batch.local_runner import check_writable
from tests.conftest import ROOT, run_cli, tiny_overrides
from train.trainer import last_complete_checkpoint


def wait_for(condition, timeout: float = 300, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def keyword_cmd(encoder, data, out) -> list[str]:
    return [sys.executable, "-m", "train", "--config", "configs/bbc_topic_finetune.yaml",
            *tiny_overrides(encoder, out, "tasks.0.dataset.format=jsonl",
                            f"tasks.0.dataset.path={data}", "training.epochs=6",
                            "training.batch_size=4", "training.learning_rate=2e-3",
                            "training.warmup_ratio=0.0", "training.eval_strategy=steps",
                            "training.eval_steps=8", "training.save_total_limit=10",
                            # a logged loss averages the steps since the last log: with logs
                            # every 4 steps, none spans the resume point (a checkpoint)
                            "training.logging_steps=4")]


@pytest.mark.slow
def test_training_killed_mid_run_resumes_to_the_same_result(tiny_encoder, keyword_data,
                                                            tmp_path):
    whole = tmp_path / "whole"
    run_cli(*keyword_cmd(tiny_encoder, keyword_data, whole)[1:])
    killed = tmp_path / "killed"
    proc = subprocess.Popen(keyword_cmd(tiny_encoder, keyword_data, killed), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = killed / "checkpoints"
    wait_for(lambda: int((last_complete_checkpoint(checkpoints) or "-0").rsplit("-")[-1]) >= 16,
             what="the second checkpoint")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    assert not (killed / "metrics.json").exists() and not (killed / "model").exists()
    resumed = run_cli(*keyword_cmd(tiny_encoder, keyword_data, killed)[1:], "--resume")
    assert resumed.returncode == 0
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert b["resumed_from"] and int(b["resumed_from"].rsplit("-", 1)[1]) >= 16
    # The resumed run replays what the whole run did: the same window draws and batch
    # order, so the same losses step by step and the same model at the end.
    assert losses(whole) == pytest.approx(losses(killed), abs=1e-4)
    assert a["tasks"]["topic"]["confusion_matrix"] == b["tasks"]["topic"]["confusion_matrix"]
    texts = [json.loads(x)["text"] for x in keyword_data.read_text().splitlines()]
    x = load_classifier(whole / "model", precision="fp32").predict(texts)
    y = load_classifier(killed / "model", precision="fp32").predict(texts)
    for p, q in zip(x, y):
        assert q["topic"]["probabilities"] == pytest.approx(p["topic"]["probabilities"],
                                                            abs=1e-4)


def losses(run) -> dict[int, float]:
    """Training loss by step, from the last checkpoint's trainer_state.json."""
    state = json.loads((Path(last_complete_checkpoint(run / "checkpoints")) /
                        "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


def test_the_best_checkpoint_is_the_one_kept(keyword_run):
    """The artifact holds the weights of the checkpoint that scored best on validation."""
    from safetensors.torch import load_file

    checkpoint = Path(last_complete_checkpoint(keyword_run / "checkpoints"))
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    scores = {e["step"]: e["eval_score"] for e in state["log_history"] if "eval_score" in e}
    best_step = max(scores, key=lambda step: (scores[step], -step))  # first of the best
    assert state["best_metric"] == scores[best_step]
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
    best = load_file(keyword_run / "checkpoints" / f"checkpoint-{best_step}" /
                     "model.safetensors")
    kept = load_file(keyword_run / "model" / "model.safetensors")
    assert set(best) == set(kept)
    assert all(torch.equal(best[name], kept[name]) for name in kept)


def test_a_torn_checkpoint_is_never_resumed_from(tmp_path):
    good = tmp_path / "checkpoint-10"
    good.mkdir()
    (good / "model.safetensors").write_bytes(b"x")
    (good / "trainer_state.json").write_text("{}")
    torn = tmp_path / "checkpoint-20"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"x")
    (torn / "trainer_state.json").write_text('{"global_step": 2')
    assert last_complete_checkpoint(tmp_path) == str(good)
    assert last_complete_checkpoint(tmp_path / "none") is None


def test_resume_without_checkpoint_starts_over(tiny_encoder, keyword_data, tmp_path):
    proc = run_cli(*keyword_cmd(tiny_encoder, keyword_data, tmp_path / "r")[1:], "--resume",
                   "--set", "training.epochs=1")
    assert "no checkpoint to resume from" in proc.stderr
    assert (tmp_path / "r" / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_batch_prediction_killed_and_resumed_holds_every_id_once(keyword_run, tmp_path):
    src = tmp_path / "in.jsonl"
    n = 6000
    with open(src, "w") as handle:
        for i in range(n):
            handle.write(json.dumps({"id": f"r{i}", "text": f"goal team market {i}"}) + "\n")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "model.cli", "predict", str(keyword_run / "model"), str(src),
           "-o", str(out), "--precision", "fp32"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: out.exists() and out.stat().st_size > 200_000, what="partial output")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open(out, "a") as handle:
        handle.write('{"id": "r99999", "topic": {"lab')  # a line torn by the kill
    partial = out.read_text().count("\n")
    assert 0 < partial < n
    done = subprocess.run([*cmd, "--resume"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [f"r{i}" for i in range(n)]


def test_unwritable_output_fails_before_any_work(keyword_run, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "x"}\n')
    proc = subprocess.run([sys.executable, "-m", "model.cli", "predict",
                           str(keyword_run / "model"), str(src), "-o",
                           str(blocker / "out.jsonl")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "cannot write" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_not_enough_disk_is_known_in_advance(tmp_path):
    with pytest.raises(RuntimeError, match="MiB free"):
        check_writable(tmp_path / "out.jsonl", records_left=10**13)


def test_huge_article_and_odd_text_are_predicted(keyword_run):
    clf = load_classifier(keyword_run / "model")
    huge = ("goal team striker " * 300_000)[:5_000_000]
    started = time.perf_counter()
    out = clf.predict(huge)
    assert time.perf_counter() - started < 120
    assert out["truncated"] is True and out["tokens"] > 100_000
    odd = clf.predict(["\x00\x07goal\x1b team", "Команда забила гол 队伍 فريق goal", "🙂" * 50])
    assert all("topic" in o for o in odd)


def test_pickle_refusal_names_the_flag(keyword_run, tmp_path):
    import shutil

    import torch

    model = tmp_path / "m"
    shutil.copytree(keyword_run / "model", model)
    torch.save({}, model / "model.pt")
    (model / "model.safetensors").unlink()
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "x"}\n')
    proc = subprocess.run([sys.executable, "-m", "model.cli", "predict", str(model), str(src),
                           "-o", str(tmp_path / "o.jsonl")], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ})
    assert proc.returncode == 2 and "--allow-pickle" in proc.stderr

