"""Write a folder beside its target and swap it in: the one way this project replaces a
folder on disk (artifacts, installed encoders, converted weights, compiled backends,
embedding caches).

A reader sees the old folder or the new one, never half of one: the new folder is written
under a temporary name in the same parent (so the final step is a rename, atomic on one
file system), the old folder is moved aside, the new one renamed into place, and only then
is the old one deleted. If that rename fails, the old folder is put back; if writing fails,
the target is untouched and the temporary folder is removed.

This module sits in its own lowest layer (`model.storage`) because `model.encoders`, below
`model.core`, needs it as much as the artifact code does.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replace_folder(target: str | os.PathLike, keep_existing: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside `target`; when the block ends without an error, it
    becomes `target`.

    `keep_existing`: where `target` already exists when the block ends, keep it and drop
    the new folder. For caches keyed by their content, where a folder another process
    finished first is as good as ours.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: mkdtemp makes the folder private (0700), and what is swapped in
    # (a model, an installed encoder) should get the umask's permissions like any folder.
    new = _sibling(target, "new")
    new.mkdir()
    try:
        yield new
        swap_in(new, target, keep_existing)
    finally:
        shutil.rmtree(new, ignore_errors=True)  # gone already when it was swapped in


def swap_in(new: Path, target: Path, keep_existing: bool = False) -> None:
    """Rename folder `new` to `target`, which may exist: the old `target` is moved aside
    first, put back if the rename fails, and deleted once the new one is in place."""
    if keep_existing and target.exists():
        return
    old = None
    if target.exists() or target.is_symlink():
        old = _sibling(target, "old")
        os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        elif keep_existing and target.exists():  # another process got there first
            return
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def _sibling(target: Path, role: str) -> Path:
    """A hidden name beside `target`, unique per call (two writers never share one)."""
    return target.with_name(f".{target.name}.{role}-{uuid.uuid4().hex[:12]}")
