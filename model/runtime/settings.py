"""How a loaded model is served: one explicit settings object.

`ArticleClassifier` is built from an artifact (network, tokenizer, lexical models) and a
`ServingSettings`, and never changed from outside afterwards: code that wants another way
of serving the same network (another precision, pooling or window limit) asks for a new
classifier with `clf.with_settings(...)`, which shares the network and the lexical models.
What was trained and is saved (the network's own `ModelConfig`) is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.core.config import check_early_exit
from model.runtime.backends import BACKENDS
from model.runtime.devices import PRECISIONS

SERVED_POOLINGS = ("mean", "max")


@dataclass(frozen=True)
class ServingSettings:
    """Attributes:
        precision: `fp32`, `bf16`, `fp16`, `int8` (the OpenVINO backend) or `auto`
            (model/runtime/devices.py).
        backend: what runs the encoder: `torch`, `openvino` or `auto`
            (model/runtime/backends.py).
        device: where the network runs (`cpu`, `cuda`, `cuda:N`, `auto`); None leaves it
            where it is.
        max_chunks: read at most this many windows of an article; None: the artifact's.
        early_exit: stop after an article's first window where every task is decided
            with this confidence (model/runtime/early_exit.py); None reads whole articles.
        pooling: pool window logits by `mean` or `max` instead of the trained way; None:
            the artifact's (a learned attention pooling cannot be replaced).
    """

    precision: str = "fp32"
    backend: str = "torch"
    device: str | None = None
    max_chunks: int | None = None
    early_exit: float | None = None
    pooling: str | None = None

    def __post_init__(self):
        if self.precision not in (*PRECISIONS, "auto"):
            raise ValueError(f"precision must be one of {(*PRECISIONS, 'auto')}, "
                             f"got {self.precision!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.max_chunks is not None and (isinstance(self.max_chunks, bool)
                                            or not isinstance(self.max_chunks, int)
                                            or self.max_chunks < 1):
            raise ValueError(f"max_chunks must be a whole number >= 1, got {self.max_chunks!r}")
        object.__setattr__(self, "early_exit", check_early_exit(self.early_exit))
        if self.pooling is not None and self.pooling not in SERVED_POOLINGS:
            raise ValueError(f"pooling must be one of {SERVED_POOLINGS} or None, "
                             f"got {self.pooling!r}")
