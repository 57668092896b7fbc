"""The same jobs on existing distributed engines: torchrun (gloo, 2 CPU processes) for
training, Ray Data for batch prediction."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import ROOT, run_cli, tiny_overrides


def test_torchrun_two_processes_matches_one(tiny_encoder, keyword_data, keyword_run, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "train", "--config", "configs/bbc_topic.yaml",
           *tiny_overrides(tiny_encoder, out, "tasks.0.dataset.format=jsonl",
                           f"tasks.0.dataset.path={keyword_data}", "training.epochs=6",
                           "training.batch_size=4", "training.learning_rate=3e-3",
                           "training.warmup_ratio=0.0")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    # Only rank 0 evaluates and writes: one summary, one artifact, one report.
    assert proc.stdout.count("test topic: accuracy") == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints", "config.yaml", "confusion_matrix.png", "metrics.json", "model",
        "report.md", "splits.json"]
    ddp = json.loads((out / "metrics.json").read_text())["tasks"]["topic"]
    single = json.loads((keyword_run / "metrics.json").read_text())["tasks"]["topic"]
    # Two ranks of 4 articles make the same global batch of 8 as the single process.
    assert abs(ddp["accuracy"] - single["accuracy"]) <= 0.1 and ddp["accuracy"] >= 0.85


def test_ray_engine_matches_the_local_engine(keyword_run, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install .[ray]")
    from model.ray_engine import read_ray_output

    shards = tmp_path / "in"
    shards.mkdir()
    rows = [{"id": f"x{i}", "text": ["goal team cup", "bank shares profit"][i % 2] + f" {i}"}
            for i in range(60)]
    rows[7]["text"] = ""
    for k in range(3):  # a corpus in three shards
        (shards / f"part{k}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows[k * 20:(k + 1) * 20]))
    local = tmp_path / "local.jsonl"
    merged = tmp_path / "all.jsonl"
    merged.write_text("".join((shards / f"part{k}.jsonl").read_text() for k in range(3)))
    run_cli("-m", "model.cli", "predict", str(keyword_run / "model"), str(merged), "-o",
            str(local), "--precision", "fp32")
    out = tmp_path / "ray_out"
    run_cli("-m", "model.cli", "predict", str(keyword_run / "model"), str(shards), "-o",
            str(out), "--engine", "ray", "--workers", "2", "--precision", "fp32",
            env={"RAY_ADDRESS": ""})
    by_id = read_ray_output(out)
    expected = {json.loads(x)["id"]: json.loads(x) for x in local.read_text().splitlines()}
    assert set(by_id) == set(expected) and len(by_id) == 60
    for rid, line in expected.items():
        if "error" in line:
            assert by_id[rid]["error"] == line["error"]
            continue
        got = by_id[rid]
        assert got["topic"]["label"] == line["topic"]["label"]
        for label, p in line["topic"]["probabilities"].items():
            assert got["topic"]["probabilities"][label] == pytest.approx(p, abs=1e-4)
