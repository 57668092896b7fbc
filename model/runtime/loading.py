"""Loading a saved model: `load_classifier(path)`, and the one-call `predict(texts, model)`
that keeps loaded models for the next call (and loads again where the artifact at that
path was replaced).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from model.core.artifact import (
    CALIBRATION_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_artifact,
    load_domain_reference,
    load_lexical_models,
)
from model.core.domain import DOMAIN_NAME
from model.core.lexical import LEXICAL_CONFIG, LEXICAL_WEIGHTS
from model.runtime.classifier import ArticleClassifier
from model.runtime.devices import resolve_device, resolve_precision
from model.runtime.settings import ServingSettings


def load_classifier(path: str | os.PathLike, precision: str = "auto",
                    device: str | None = "auto", allow_pickle: bool = False,
                    max_chunks: int | None = None, backend: str = "auto",
                    early_exit: float | str | None = "config",
                    quiet: bool = False, engine: str | None = None) -> ArticleClassifier:
    """Load an artifact folder written by training (`runs/<job>/model`).

    `device`: `auto` (a CUDA GPU where there is one, else the CPU), `cpu`, `cuda`,
    `cuda:N`. `precision`: `fp32`; `bf16` or `fp16` (autocast; fp16 on GPUs only); `int8`
    (the OpenVINO backend, CPU only: static int8 calibrated on the training split); or
    `auto`. `backend`: `torch`, `openvino` or `auto`. With both `auto`, a CPU runs the
    OpenVINO int8 backend (built on first load into a cache, model/runtime/backends.py) and falls
    back to torch where it cannot, saying why; torch runs bf16 where the device has it
    natively, else fp16 on a GPU and fp32 on a CPU. Which backend runs, and why, is printed
    once on standard error unless `quiet`. `max_chunks`: read at most this many windows of
    an article (spread over its length) instead of the artifact's own limit: less work on
    long articles, at some accuracy (BENCHMARKS.md measures how much). `early_exit`: stop
    reading an article after its first window where every task is decided with this
    confidence (model/runtime/early_exit.py); `config` (the default) takes the artifact's
    `model.early_exit`, None reads whole articles. (`engine` is the old name of `backend`.)
    """
    backend = renamed_backend(backend, engine)
    if device in (None, "auto") and (backend == "openvino" or precision == "int8"):
        device = "cpu"  # the int8 backend is a CPU backend, on a GPU machine too
    device = resolve_device(device)
    resolve_precision(precision, device)  # a bad combination fails before loading
    network, tokenizer, document = load_artifact(path, allow_pickle=allow_pickle)
    settings = ServingSettings(
        precision=precision, backend=backend, device=str(device), max_chunks=max_chunks,
        early_exit=network.model_config.early_exit if early_exit == "config" else early_exit)
    clf = ArticleClassifier(network, tokenizer, document, load_lexical_models(path, network.tasks),
                            settings, artifact=path, quiet=quiet,
                            domain=load_domain_reference(path))
    said = (str(Path(path).resolve()), clf.backend_name, clf.backend_reason)
    if not quiet and said not in _SAID:
        _SAID.add(said)
        print(f"{path}: encoder runs {clf.backend_name} ({clf.backend_reason})", file=sys.stderr)
    return clf


_SAID: set[tuple] = set()
_LOADED: dict[tuple, ArticleClassifier] = {}


def predict(texts, model: str | os.PathLike, **kwargs):
    """`load_classifier(model).predict(texts, **kwargs)`, keeping loaded models cached.

    `precision`, `device`, `max_chunks`, `backend` and `early_exit` go to `load_classifier`;
    the rest to
    `ArticleClassifier.predict`.
    """
    options = {name: kwargs.pop(name)
               for name in ("precision", "device", "max_chunks", "backend", "early_exit",
                            "engine")
               if name in kwargs}
    if "engine" in options:
        options["backend"] = renamed_backend(options.get("backend", "auto"),
                                             options.pop("engine"))
    folder = str(Path(model).resolve())
    identity = artifact_identity(folder)
    key = (folder, identity, *sorted(options.items()))
    if key not in _LOADED:
        # A retrained or replaced artifact at the same path has a new identity: drop the
        # models held for its old one, so the cache does not grow with every retrain
        # (models of the same artifact loaded with other options stay).
        for stale in [k for k in _LOADED if k[0] == folder and k[1] != identity]:
            del _LOADED[stale]
        _LOADED[key] = load_classifier(model, **options)
    return _LOADED[key].predict(texts, **kwargs)


def artifact_identity(folder: str) -> tuple:
    """What tells one artifact at `folder` from another written there later: the inode,
    modification time (ns) and size of each file that decides its predictions. Training
    writes beside the folder and swaps it in, so each file is a new inode after a retrain
    (which also covers file systems with coarse times); a copy over the old files changes
    their times."""
    out = []
    for name in (CONFIG_NAME, WEIGHTS_NAME, LEXICAL_CONFIG, LEXICAL_WEIGHTS, CALIBRATION_NAME,
                 DOMAIN_NAME):
        try:
            stat = os.stat(os.path.join(folder, name))
        except OSError:
            out.append(None)  # absent (no lexical model), or load_classifier says why
        else:
            out.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return tuple(out)


def renamed_backend(backend: str, engine: str | None) -> str:
    """`backend`, or the value given under its old name `engine` (with a warning)."""
    if engine is None:
        return backend
    warnings.warn("load_classifier(engine=...) is now backend=...; engine= will be removed",
                  DeprecationWarning, stacklevel=3)
    if backend not in ("auto", engine):
        raise ValueError(f"backend={backend!r} and its old name engine={engine!r} disagree")
    return engine
