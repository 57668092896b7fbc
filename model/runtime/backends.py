"""Encoder backends: what runs the transformer when a loaded model predicts.

- `torch`: the network itself, in the precision asked for (fp32, or bf16/fp16 autocast).
- `openvino`: the encoder compiled by OpenVINO with int8 weights and activations, quantized
  post-training by NNCF with *static* scales calibrated on real windows of the training
  split (kept in the artifact as `calibration.safetensors`). Static scales keep every
  article's scores independent of the other articles in its batch, which PyTorch's
  dynamic int8 (one activation scale per batch) does not.

The int8 graph is built once per encoder into `$ARTICLE_CLASSIFIER_CACHE/openvino` (by
default ~/.cache/article-classifier/openvino), in a folder keyed by the hash of exactly what
it is built from (`graph_key`): the loaded encoder's weights and config, the calibration
windows and the library versions. Retraining or editing the encoder rebuilds it; models
that differ only in their heads share one graph. `auto` takes `openvino` on a CPU where the
artifact carries calibration windows and OpenVINO loads, else `torch`; the reason is
printed once.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from model.core.artifact import CALIBRATION_NAME, load_calibration
from model.core.fingerprint import encoder_fingerprint
from model.encoders.registry import cache_root
from model.storage.folders import replace_folder

BACKENDS = ("auto", "torch", "openvino")
CALIBRATION_WINDOWS = 128
# Bump when the way graphs are built or keyed changes: old caches are rebuilt.
# 2: keyed on the loaded encoder (weights and config) and the transformers version.
GRAPH_FORMAT = 2
# The libraries whose code turns the encoder into the int8 graph: transformers' modelling
# code is what gets traced, torch traces it, openvino converts it and nncf quantizes it.
GRAPH_LIBRARIES = ("openvino", "nncf", "torch", "transformers")


class BackendError(RuntimeError):
    """A backend that was asked for cannot run this model here."""


# -- calibration windows ----------------------------------------------------------------
def calibration_windows(clf, texts: list[str], n: int = CALIBRATION_WINDOWS,
                        seed: int = 0) -> list[list[int]]:
    """Up to `n` token windows of `texts` as `clf` reads them, one per article (a random
    window of each of `n` random articles): what the int8 activation scales are fitted on."""
    rng = np.random.default_rng(seed)
    picked = sorted(rng.permutation(len(texts))[:n])
    encoded = [a for a in clf.encode([texts[i] for i in picked]) if a.windows]
    return [list(a.windows[int(rng.integers(len(a.windows)))]) for a in encoded]


# -- the int8 OpenVINO backend ----------------------------------------------------------
class OpenVinoEncoder:
    """An int8 OpenVINO encoder: token ids and mask in, last hidden states (fp32) out.

    OpenVINO runs a graph of fixed sequence length about 10% faster than a fully dynamic
    one, so each batch is padded (masked) up to a multiple of `BUCKET` tokens and every
    such length gets its own compiled graph (about 0.3 s each, on first use)."""

    name = "openvino-int8"
    BUCKET = 64

    def __init__(self, xml: Path, threads: int | None = None):
        import openvino as ov

        self.config = {"INFERENCE_PRECISION_HINT": "f32",  # int8 matmuls, fp32 elsewhere
                       "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.path = xml
        self.core = ov.Core()
        self.requests: dict[int, object] = {}
        self.request(self.BUCKET)  # a graph that cannot compile fails here, at load

    def request(self, length: int):
        """The infer request of the graph compiled for sequences of `length` tokens."""
        if length not in self.requests:
            graph = self.core.read_model(str(self.path))
            graph.reshape({"input_ids": [-1, length], "attention_mask": [-1, length]})
            self.requests[length] = self.core.compile_model(graph, "CPU", self.config) \
                .create_infer_request()
        return self.requests[length]

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        rows, length = input_ids.shape
        bucket = -(-length // self.BUCKET) * self.BUCKET
        ids = np.zeros((rows, bucket), dtype=np.int64)
        mask = np.zeros((rows, bucket), dtype=np.int64)
        ids[:, :length] = input_ids.cpu().numpy()
        mask[:, :length] = attention_mask.cpu().numpy()
        out = self.request(bucket).infer({"input_ids": ids, "attention_mask": mask})
        return torch.from_numpy(np.array(out[0][:, :length], copy=True))

    def kernels(self) -> list[str]:
        """The primitives OpenVINO picked for the matrix layers (shows int8 / VNNI / AMX)."""
        found = set()
        for request in self.requests.values():
            for op in request.get_compiled_model().get_runtime_model().get_ops():
                info = op.get_rt_info()
                if "primitiveType" in info and info["layerType"].astype(str) == "FullyConnected":
                    found.add(info["primitiveType"].astype(str))
        return sorted(found)


class _LastHidden(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def graph_key(encoder: torch.nn.Module, calibration: list[list[int]]) -> str:
    """The cache key of an encoder's int8 graph: a hash of exactly what `build_openvino`
    builds it from, taken from the encoder in memory (not from files, which a caller may
    have changed since, or may not have): the encoder's fingerprint (its config and every
    parameter and buffer, model/core/fingerprint.py), the calibration windows, the versions
    of the libraries that trace, convert and quantize it, and GRAPH_FORMAT. The task heads are
    not in the graph, so not in the key either."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        versions = {name: version(name) for name in GRAPH_LIBRARIES}
    except PackageNotFoundError as err:
        raise BackendError(f"{err.name} is not installed: pip install openvino nncf") from err
    digest = hashlib.sha256(json.dumps([GRAPH_FORMAT, versions, calibration], sort_keys=True,
                                       default=str).encode())
    digest.update(encoder_fingerprint(encoder).encode())
    return digest.hexdigest()[:32]


def build_openvino(network, calibration: list[list[int]], out: Path,
                   quiet: bool = False) -> None:
    """Export the encoder, quantize it with NNCF on `calibration`, write `out/encoder.xml`.

    The export runs on a float32 CPU copy in eval mode: the caller's network keeps its
    dtype, device and training mode. A step that fails raises BackendError naming it.
    `quiet`: the libraries' own output (progress bars, tracer warnings) is held back."""
    import logging

    import nncf
    import openvino as ov

    logging.getLogger("nncf").setLevel(logging.ERROR)
    encoder = _LastHidden(copy.deepcopy(network.encoder)).float().cpu().eval()
    example = torch.tensor([calibration[0]], dtype=torch.long)
    dynamic = [("input_ids", ov.PartialShape([-1, -1]), ov.Type.i64),
               ("attention_mask", ov.PartialShape([-1, -1]), ov.Type.i64)]
    with _silenced(quiet), _step("the export (openvino.convert_model)"), \
            torch.inference_mode():
        graph = ov.convert_model(encoder, example_input=(example, torch.ones_like(example)),
                                 input=dynamic)
    del encoder  # frees the float copy before NNCF needs its own memory
    samples = [{"input_ids": np.array([w], dtype=np.int64),
                "attention_mask": np.ones((1, len(w)), dtype=np.int64)} for w in calibration]
    with _silenced(quiet), _step("the int8 quantization (nncf.quantize)"):
        quantized = nncf.quantize(graph, nncf.Dataset(samples), subset_size=len(samples),
                                  model_type=nncf.ModelType.TRANSFORMER)
    ov.save_model(quantized, str(out / "encoder.xml"), compress_to_fp16=False)


@contextmanager
def _silenced(quiet: bool) -> Iterator[None]:
    """Where `quiet`, hold back what the libraries print while building: NNCF's progress
    bars (rich, on the global console, on stdout), the tracer's warnings and transformers'
    log lines. Process-wide while it lasts, as those outlets are."""
    if not quiet:
        yield
        return
    import warnings

    import rich  # NNCF's own dependency: its progress bars draw on rich's global console
    from transformers.utils import logging as hf_logging

    console, verbosity = rich.get_console(), hf_logging.get_verbosity()
    was_quiet, console.quiet = console.quiet, True
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        console.quiet = was_quiet
        hf_logging.set_verbosity(verbosity)


@contextmanager
def _step(what: str) -> Iterator[None]:
    """Turn any error of a build step into a BackendError that says which step failed, so
    `auto` reports it when it falls back and `openvino` raises it as a clear message."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - library errors have no common base
        raise BackendError(f"the int8 backend could not be built: {what} raised "
                           f"{type(err).__name__}: {err}") from err


def load_openvino_encoder(artifact: str | os.PathLike, network, threads: int | None = None,
                          quiet: bool = False) -> OpenVinoEncoder:
    """The int8 OpenVINO backend of `network`, calibrated on `artifact`'s windows: built
    into the cache on first use (and built again if a cached one no longer loads)."""
    artifact = Path(artifact)
    calibration = load_calibration(artifact)
    if not calibration:
        raise BackendError(f"{artifact} has no {CALIBRATION_NAME} (int8 calibration windows; "
                           "artifacts trained before this library wrote them): retrain, or "
                           "add them with `article-classifier calibrate MODEL TEXTS`")
    folder = cache_root() / "openvino" / graph_key(network.encoder, calibration)
    threads = threads or torch.get_num_threads()
    # A folder without a graph that loads is damaged or foreign: it goes, else the new
    # build would be dropped in its favour (builds keep a folder that exists).
    if folder.exists():
        try:
            return OpenVinoEncoder(folder / "encoder.xml", threads)
        except Exception as err:  # noqa: BLE001 - a damaged or foreign cache entry
            if not quiet:
                print(f"the cached int8 backend in {folder} does not load "
                      f"({type(err).__name__}); building it again", file=sys.stderr)
            shutil.rmtree(folder, ignore_errors=True)
    try:
        build_into(folder, artifact, network, calibration, quiet)
    except OSError as err:
        raise BackendError(f"cannot write the int8 backend into {folder} ({err}); set "
                           "ARTICLE_CLASSIFIER_CACHE to a writable folder") from err
    return OpenVinoEncoder(folder / "encoder.xml", threads)


def build_into(folder: Path, artifact: Path, network, calibration: list[list[int]],
               quiet: bool) -> None:
    """Build the int8 graph beside `folder` and swap it in (model/storage/folders.py), so a reader
    never sees half a graph and a failed build leaves nothing; where another process
    finished the same build first, theirs stays (the key says they are the same)."""
    if not quiet:
        print(f"building the int8 OpenVINO backend of {artifact} (once; kept in {folder})",
              file=sys.stderr)
    started = time.perf_counter()
    with replace_folder(folder, keep_existing=True) as tmp:
        build_openvino(network, calibration, tmp, quiet)
        (tmp / "graph.json").write_text(json.dumps({"artifact": str(artifact.resolve()),
                                                     "windows": len(calibration)}))
    if not quiet:
        print(f"built in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def choose_backend(requested: str, requested_precision: str | None, precision: str,
                   device: torch.device, artifact: str | os.PathLike | None,
                   network, quiet: bool = False) -> tuple[OpenVinoEncoder | None, str]:
    """The backend to run (None: torch, the network itself) and why. `requested`: auto,
    torch or openvino; `precision` is what `requested_precision` resolved to on `device`.

    int8 (asked for, or `requested` openvino) runs openvino, and an error says why where it
    cannot. `auto` with precision `auto` takes openvino on a CPU where the artifact carries
    calibration windows and OpenVINO builds and loads; anything else runs torch, with the
    reason said. `quiet`: no build messages.
    """
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
    explicit = requested_precision not in (None, "auto")
    if requested == "openvino" or precision == "int8":
        if requested == "torch":
            raise BackendError("int8 runs on the openvino backend, not torch")
        if device.type != "cpu":
            raise BackendError(f"the openvino backend runs on the CPU, not {device}")
        if explicit and precision != "int8":
            raise BackendError(f"the openvino backend runs int8, not {requested_precision}")
        if artifact is None:
            raise BackendError("the openvino backend needs a saved model folder")
        return load_openvino_encoder(artifact, network, quiet=quiet), "asked for"
    if requested == "torch":
        return None, "asked for"
    if device.type != "cpu":
        return None, f"{device.type} runs torch"
    if explicit:
        return None, f"precision {requested_precision} asked for"
    if artifact is None:
        return None, "no saved model folder"
    try:
        return (load_openvino_encoder(artifact, network, quiet=quiet),
                "int8 OpenVINO measures fastest on CPUs")
    except BackendError as err:
        return None, f"openvino unavailable: {err}"
    except Exception as err:  # noqa: BLE001 - any failure to build or compile falls back, said
        return None, \
            f"openvino failed to build or load ({type(err).__name__}: {err})"
