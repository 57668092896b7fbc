"""The same jobs on existing distributed runners: torchrun (gloo, 2 CPU processes) for
training, Ray Data for batch prediction."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from model import load_classifier
from tests.conftest import ROOT, run_cli, tiny_overrides

# Several processes each (torchrun, a Ray cluster): in the slow run, which CI runs too.
pytestmark = pytest.mark.slow

DDP_TOLERANCE = 0.02  # measured 0.0034 on 2 CPUs


def test_torchrun_two_processes_matches_one(tiny_encoder, keyword_data, keyword_run, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "train", "--config", "configs/bbc_topic_finetune.yaml",
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
        "reliability_topic.png", "report.md", "splits.json"]
    ddp = json.loads((out / "metrics.json").read_text())["tasks"]["topic"]
    assert ddp["accuracy"] >= 0.85
    # Two ranks of 4 articles make global batches of 8, as the single process had: both
    # models must say the same of every article (dropout masks differ between the two
    # runs, so probabilities agree closely, not exactly).
    texts = [json.loads(x)["text"] for x in keyword_data.read_text().splitlines()]
    one = load_classifier(keyword_run / "model", precision="fp32").predict(texts)
    two = load_classifier(out / "model", precision="fp32").predict(texts)
    gaps = [abs(a["topic"]["score"] - b["topic"]["probabilities"][a["topic"]["label"]])
            for a, b in zip(one, two)]
    print(f"largest probability gap, torchrun vs one process: {max(gaps):.4f}")
    assert [a["topic"]["label"] for a in one] == [b["topic"]["label"] for b in two]
    assert max(gaps) <= DDP_TOLERANCE


@pytest.mark.parametrize("output", ["ray_out", "ray_out.parquet"])
def test_ray_runner_matches_the_local_runner(keyword_run, tmp_path, output):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install .[ray]")
    from model.batch.ray_runner import read_ray_output
    from tests.conftest import iter_ray_rows

    shards = tmp_path / "in"
    shards.mkdir()
    rows = [{"id": f"x{i}", "text": ["goal team cup", "bank shares profit"][i % 2] + f" {i}",
             "source": f"outlet{i % 3}"} for i in range(60)]
    rows[7]["text"] = ""
    rows[8] = {"id": "x8", "title": "striker goal cup", "source": "outlet2"}  # headline only
    rows[9] = {"id": "x9", "source": "outlet0"}  # neither text nor title
    for k in range(3):  # a corpus in three shards
        (shards / f"part{k}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows[k * 20:(k + 1) * 20]))
    # What other jobs leave beside shards is not data: it must not be read twice.
    (shards / "_SUCCESS").write_text("")
    (shards / "_temporary").mkdir()
    (shards / "_temporary" / "part0.jsonl").write_text((shards / "part0.jsonl").read_text())
    local = tmp_path / "local.jsonl"
    merged = tmp_path / "all.jsonl"
    merged.write_text("".join((shards / f"part{k}.jsonl").read_text() for k in range(3)))
    run_cli("-m", "model.cli", "predict", str(keyword_run / "model"), str(merged), "-o",
            str(local), "--precision", "fp32", "--keep", "source")
    out = tmp_path / output
    run_cli("-m", "model.cli", "predict", str(keyword_run / "model"), str(shards), "-o",
            str(out), "--runner", "ray", "--workers", "2", "--precision", "fp32",
            "--keep", "source", env={"RAY_ADDRESS": ""})
    if output.endswith(".parquet"):
        assert any(p.suffix == ".parquet" for p in out.iterdir())
    by_id = read_ray_output(out)
    expected = {json.loads(x)["id"]: json.loads(x) for x in local.read_text().splitlines()}
    assert set(by_id) == set(expected) and len(by_id) == 60
    assert sum(1 for _ in iter_ray_rows(out)) == 60  # no record predicted twice
    for rid, line in expected.items():
        got = by_id[rid]
        assert got["source"] == line["source"]
        if "error" in line:
            assert got["error"] == line["error"]
            assert got["where"].endswith(f"part0.jsonl (id {rid})")
            continue
        assert got["topic"]["label"] == line["topic"]["label"]
        assert got["tokens"] == line["tokens"]
        for label, p in line["topic"]["probabilities"].items():
            assert got["topic"]["probabilities"][label] == pytest.approx(p, abs=1e-4)
    assert expected["x8"]["topic"]["label"] == "sport"
    assert [expected[i].get("error") for i in ("x7", "x9")] == [
        "empty text", "no 'text' or 'title' field"]


def test_ray_runner_refuses_what_it_cannot_do(keyword_run, tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text('{"id": "a", "text": "goal"}\n')
    proc = run_cli("-m", "model.cli", "predict", str(keyword_run / "model"), str(src), "-o",
                   str(tmp_path / "out"), "--runner", "ray", "--resume", check=False)
    assert proc.returncode == 2 and "--resume works with --runner local only" in proc.stderr
    proc = run_cli("-m", "model.cli", "predict", str(keyword_run / "model"), str(src), "-o",
                   str(tmp_path / "o.jsonl"), "--gpus-per-worker", "1", check=False)
    assert proc.returncode == 2 and "--gpus-per-worker is for --runner ray" in proc.stderr


def test_ray_actors_use_a_gpu_only_when_ray_gives_them_one():
    from model.batch.ray_runner import ray_device

    assert ray_device("auto", 0) == "cpu" and ray_device("auto", 1) == "cuda"
    assert ray_device("cuda:0", 0.5) == "cuda:0"
    with pytest.raises(ValueError, match="needs --gpus-per-worker"):
        ray_device("cuda", 0)
    with pytest.raises(ValueError, match="would not use"):
        ray_device("cpu", 1)
