"""`replace_folder`: the one write-beside-and-swap helper. A reader sees the old folder or
the new one; a failure, inside the block or at the final rename, leaves the old one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model.storage.folders import replace_folder


def contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def siblings(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_a_new_folder_appears_whole_and_replaces_an_old_one(tmp_path):
    target = tmp_path / "deep" / "model"
    with replace_folder(target) as new:
        assert new.parent == target.parent and new != target and not target.exists()
        (new / "a.txt").write_text("one")
    assert contents(target) == {"a.txt": "one"}
    with replace_folder(target) as new:
        (new / "b.txt").write_text("two")
        assert contents(target) == {"a.txt": "one"}  # the old one serves until the swap
    assert contents(target) == {"b.txt": "two"}
    assert siblings(target.parent) == ["model"]


def test_the_new_folder_has_ordinary_permissions(tmp_path):
    """A model folder is meant to be shared: the umask decides, as for any mkdir, not
    mkdtemp's private 0700."""
    umask = os.umask(0o022)
    try:
        with replace_folder(tmp_path / "model") as new:
            (new / "a.txt").write_text("one")
    finally:
        os.umask(umask)
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("existing", [False, True])
def test_an_error_inside_the_block_leaves_the_target_untouched(tmp_path, existing):
    target = tmp_path / "model"
    if existing:
        target.mkdir()
        (target / "a.txt").write_text("old")
    with pytest.raises(RuntimeError, match="while writing"):
        with replace_folder(target) as new:
            (new / "a.txt").write_text("half")
            raise RuntimeError("while writing")
    assert siblings(tmp_path) == (["model"] if existing else [])
    if existing:
        assert contents(target) == {"a.txt": "old"}


def test_a_failed_final_rename_puts_the_old_folder_back(tmp_path, fail_rename_into):
    target = tmp_path / "model"
    target.mkdir()
    (target / "a.txt").write_text("old")
    failed = fail_rename_into(target)
    with pytest.raises(OSError, match="injected"):
        with replace_folder(target) as new:
            (new / "a.txt").write_text("new")
    assert failed, "the swap never renamed onto the target; this test proves nothing"
    assert contents(target) == {"a.txt": "old"}
    assert siblings(tmp_path) == ["model"]  # neither the new nor the moved-aside folder


def test_a_failed_first_rename_leaves_no_target_and_no_temporary_folder(tmp_path,
                                                                      fail_rename_into):
    target = tmp_path / "model"
    fail_rename_into(target)
    with pytest.raises(OSError, match="injected"):
        with replace_folder(target) as new:
            (new / "a.txt").write_text("new")
    assert siblings(tmp_path) == []


def test_keep_existing_keeps_a_finished_folder_and_drops_the_new_one(tmp_path):
    target = tmp_path / "cache"
    with replace_folder(target, keep_existing=True) as new:
        (new / "settings.json").write_text("first")
    assert contents(target) == {"settings.json": "first"}
    with replace_folder(target, keep_existing=True) as new:
        (new / "settings.json").write_text("second")
        # another process finishing first, while we were writing
    assert contents(target) == {"settings.json": "first"}
    assert siblings(tmp_path) == ["cache"]


def test_keep_existing_when_another_writer_wins_the_race(tmp_path):
    target = tmp_path / "cache"
    with replace_folder(target, keep_existing=True) as new:
        (new / "settings.json").write_text("ours")
        target.mkdir()  # another process swaps its folder in while we write
        (target / "settings.json").write_text("theirs")
    assert contents(target) == {"settings.json": "theirs"}
    assert siblings(tmp_path) == ["cache"]
