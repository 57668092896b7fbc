"""The sha256 of a file, read in blocks (encoder files and ONNX inputs run to hundreds of
MB): how installs are verified and conversions report what they read and wrote."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
