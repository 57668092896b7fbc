"""Devices and precisions: what `auto` picks on each kind of hardware, that every path it
can pick gives an article the same scores whatever shares its batch, and that the fast
paths agree with fp32 on a real (tiny) trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import load_classifier
from model.runtime.devices import auto_precision, native_bf16, resolve_device, resolve_precision
from tests.conftest import run_cli
from train.trainer import choose_precision, data_parallel_problem

# Every path `auto` can pick: on a CPU the int8 OpenVINO backend, or torch in bf16 (AVX512-BF16
# or AMX) or fp32 where it cannot load, all tested on every machine (bf16 is emulated where
# the CPU lacks it: slower, same contract), so CI checks what users of any machine class
# get; on a GPU bf16 or fp16, where there is one.
no_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
AUTO_PATHS = [("cpu", "fp32", 1e-4), ("cpu", "bf16", 1e-4), ("cpu", "int8", 1e-4),
              pytest.param("cuda", "bf16", 1e-3, marks=no_gpu),
              pytest.param("cuda", "fp16", 1e-3, marks=no_gpu)]


@pytest.fixture()
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


@pytest.fixture()
def cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)


def test_torch_auto_on_cpus_without_bf16_is_fp32(cpu_without_bf16):
    assert not native_bf16("cpu")
    assert auto_precision("cpu") == resolve_precision("auto", "cpu") == "fp32"
    assert choose_precision("auto", "cpu") == "fp32"


def test_auto_on_bf16_cpus(cpu_with_bf16):
    assert native_bf16("cpu")
    assert resolve_precision(None, "cpu") == "bf16" and choose_precision("auto", "cpu") == "bf16"


@pytest.mark.parametrize("capability,expected", [((7, 0), "fp16"), ((7, 5), "fp16"),
                                                 ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_on_gpus_goes_by_compute_capability(monkeypatch, capability, expected):
    # torch.cuda.is_bf16_supported() says yes on pre-Ampere GPUs that only emulate bf16.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert auto_precision("cuda") == expected
    assert choose_precision("auto", "cuda") == expected
    # A CUDA machine serving on its CPU decides by the CPU, not the GPU.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert auto_precision("cpu") == "fp32"


def test_explicit_precisions_are_checked_against_the_device():
    assert resolve_precision("int8", "cpu") == "int8"
    with pytest.raises(ValueError, match="int8 .* CPU only"):
        resolve_precision("int8", "cuda")
    with pytest.raises(ValueError, match="fp16 runs on CUDA GPUs only"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("fp8", "cpu")
    with pytest.raises(ValueError, match="fp16 runs on CUDA GPUs only"):
        choose_precision("fp16", "cpu")


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine "
                    "without CUDA")
def test_asking_for_a_missing_gpu_is_a_clear_error(keyword_run, tmp_path):
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        load_classifier(keyword_run / "model", device="cuda")
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "goal"}\n')
    proc = run_cli("-m", "model.cli", "predict", str(keyword_run / "model"), str(src), "-o",
                   str(tmp_path / "out.jsonl"), "--device", "cuda", check=False)
    assert proc.returncode == 2 and "--device cpu" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_several_gpus_without_torchrun_are_refused_with_the_command():
    message = data_parallel_problem(4, 1, "configs/bbc_topic.yaml")
    assert "torchrun --nproc_per_node 4 -m train --config configs/bbc_topic.yaml" in message
    assert "CUDA_VISIBLE_DEVICES=0" in message
    assert data_parallel_problem(4, 4, "x") is None and data_parallel_problem(1, 1, "x") is None


def batch_texts():
    """Short articles of different lengths and one long article of several windows."""
    texts = [f"goal team {'market ' * i}" for i in range(12)]
    texts.insert(5, " ".join(["the striker scored a goal for the team and the bank"] * 25))
    return texts


@pytest.mark.parametrize("device,precision,tolerance", AUTO_PATHS)
def test_scores_do_not_depend_on_batch_neighbours(keyword_run, device, precision, tolerance):
    clf = load_classifier(keyword_run / "model", precision=precision, device=device)
    texts = batch_texts()
    long_one = clf.encode([texts[5]])[0]
    assert len(long_one.windows) >= 4  # its windows land in different batches of 2
    runs = [clf.predict(texts, batch_size=2), clf.predict(texts, batch_size=64),
            clf.predict(texts[::-1], batch_size=7)[::-1],
            [clf.predict(t, batch_size=3) for t in texts]]
    for other in runs[1:]:
        for x, y in zip(runs[0], other):
            for label, p in x["topic"]["probabilities"].items():
                assert y["topic"]["probabilities"][label] == pytest.approx(p, abs=tolerance)


@pytest.mark.parametrize("precision,tolerance", [("bf16", 0.02), ("int8", 0.05)])
def test_fast_paths_agree_with_fp32(keyword_run, precision, tolerance):
    texts = batch_texts()
    exact = load_classifier(keyword_run / "model", precision="fp32", device="cpu").predict(texts)
    fast = load_classifier(keyword_run / "model", precision=precision,
                           device="cpu").predict(texts)
    gaps = [abs(a["topic"]["probabilities"][k] - b["topic"]["probabilities"][k])
            for a, b in zip(exact, fast) for k in a["topic"]["probabilities"]]
    assert max(gaps) <= tolerance, (precision, max(gaps))
    assert np.mean([a["topic"]["label"] == b["topic"]["label"]
                    for a, b in zip(exact, fast)]) >= 0.9
