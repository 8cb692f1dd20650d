"""Shards are checked against the manifest before training; shard hashes are cached."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import shards
from shards import verify
from shards.cocolvis import CocoLvisConverter
from shards.synthetic import write_cocolvis
from shards.writer import convert


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("src") / "cocolvis"
    write_cocolvis(root, 12, size=48, seed=3)
    out = tmp_path_factory.mktemp("shards") / "cocolvis"
    convert(CocoLvisConverter(root), out, workers=0, samples_per_shard=4, progress=False)
    return out


@pytest.fixture()
def copy(shard_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the set, with the hash cache under tmp_path."""
    monkeypatch.setenv(verify.CACHE_ENV, str(tmp_path / "cache"))
    out = tmp_path / "set"
    shutil.copytree(shard_set, out)
    return out


@pytest.fixture()
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = verify.sha256_file

    def counting(path: Path) -> str:
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(verify, "sha256_file", counting)
    return calls


def _names(directory: Path) -> list[str]:
    return [rec["name"] for rec in shards.read_manifest(directory)["shards"]]


def test_intact_set_passes_and_extra_files_are_ignored(copy: Path) -> None:
    (copy / "stray-000099.tar").write_bytes(b"not listed in the manifest")
    check = verify.verify_for_training(copy)
    assert (check.shards, check.samples, check.hashed, check.cached) == (3, 12, 3, 0)
    assert check.bytes == sum((copy / n).stat().st_size for n in _names(copy))
    assert "3 shard(s)" in str(check)


def test_truncated_shard_is_refused(copy: Path) -> None:
    name = _names(copy)[1]
    path = copy / name
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    with pytest.raises(shards.ManifestMismatchError) as err:
        verify.verify_for_training(copy)
    msg = str(err.value)
    assert str(copy) in msg and name in msg and f"size {size // 2} != manifest {size}" in msg


def test_altered_shard_is_refused_even_after_caching(copy: Path) -> None:
    verify.verify_for_training(copy)  # fills the cache
    name = _names(copy)[2]
    path = copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8] = bytes(b ^ 0xFF for b in data[len(data) // 2 : len(data) // 2 + 8])
    path.write_bytes(bytes(data))
    with pytest.raises(shards.ManifestMismatchError, match=rf"{name}: sha256 \w+ differs from the manifest"):
        verify.verify_for_training(copy)


def test_missing_shard_is_refused_and_every_bad_shard_is_named(copy: Path) -> None:
    names = _names(copy)
    (copy / names[0]).unlink()
    with pytest.raises(shards.ManifestMismatchError, match=rf"{names[0]}: missing"):
        verify.verify_for_training(copy)
    with open(copy / names[2], "ab") as f:
        f.write(b"\0" * 512)
    with pytest.raises(shards.ManifestMismatchError) as err:
        verify.verify_for_training(copy)
    msg = str(err.value)
    assert "2 of 3 shard(s)" in msg and f"{names[0]}: missing" in msg and f"{names[2]}: size" in msg
    assert names[1] not in msg


def test_hashes_are_cached_by_path_size_and_mtime(copy: Path, tmp_path: Path, hash_calls: list[str]) -> None:
    names = _names(copy)
    assert verify.verify_for_training(copy).hashed == 3 and sorted(hash_calls) == names
    cache_file = tmp_path / "cache" / verify.CACHE_FILE
    entries = json.loads(cache_file.read_text())["entries"]
    assert sorted(Path(p).name for p in entries) == names
    hash_calls.clear()
    check = verify.verify_for_training(copy)
    assert hash_calls == [] and (check.hashed, check.cached) == (0, 3)
    st = (copy / names[1]).stat()
    os.utime(copy / names[1], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: hashed again
    assert verify.verify_for_training(copy).hashed == 1 and hash_calls == [names[1]]
    hash_calls.clear()
    verify.verify_for_training(copy)
    assert hash_calls == []
    # Another copy of the same set is another set of paths.
    other = tmp_path / "other"
    shutil.copytree(copy, other)
    assert verify.verify_for_training(other).hashed == 3
    assert len(json.loads(cache_file.read_text())["entries"]) == 6


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00", b'{"version": 1, "entries": []}', b"[]"])
def test_unreadable_cache_is_rebuilt(copy: Path, tmp_path: Path, content: bytes) -> None:
    cache_file = tmp_path / "cache" / verify.CACHE_FILE
    cache_file.parent.mkdir()
    cache_file.write_bytes(content)
    assert verify.verify_for_training(copy).hashed == 3
    assert len(json.loads(cache_file.read_text())["entries"]) == 3
    assert verify.verify_for_training(copy).cached == 3


def test_unwritable_cache_is_not_fatal(copy: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    check = verify.verify_for_training(copy, cache_path=blocker / "sub" / verify.CACHE_FILE)
    assert check.hashed == 3
    assert verify.verify_for_training(copy, cache_path=blocker / "sub" / verify.CACHE_FILE).hashed == 3
    name = _names(copy)[0]
    (copy / name).unlink()
    with pytest.raises(shards.ManifestMismatchError, match=name):
        verify.verify_for_training(copy, cache_path=blocker / "sub" / verify.CACHE_FILE)
    assert list(tmp_path.glob("**/.shard_hashes.json.tmp-*")) == []


def test_default_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(verify.CACHE_ENV, str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert verify.default_cache_path() == tmp_path / "mine" / "shard_hashes.json"
    monkeypatch.delenv(verify.CACHE_ENV)
    assert verify.default_cache_path() == tmp_path / "xdg" / "clickseg" / "shard_hashes.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert verify.default_cache_path() == tmp_path / "home" / ".cache" / "clickseg" / "shard_hashes.json"
