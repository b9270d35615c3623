"""The verified on-disk cache: hits, misses, damaged entries, atomic writes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from common.assets.cache import (
    ARRAYS_FILE,
    MANIFEST_FILE,
    Cache,
    CacheError,
    default_cache_dir,
    file_sha256,
)

KEY = {"model": "resnet10t", "seed": 3, "sizes": [1, 2]}


class Builder:
    """Counts its calls; returns fresh arrays each time."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self):
        self.calls += 1
        if self.fail:
            raise RuntimeError("build failed")
        arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, 2])}
        return arrays, {"note": "built", "calls": self.calls}


@pytest.fixture
def cache(tmp_path):
    return Cache(tmp_path / "cache")


def _leftovers(root) -> list:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp")]


def test_miss_then_hit(cache):
    build = Builder()
    arrays, meta, hit = cache.get_or_build("latents", KEY, build)
    assert not hit and build.calls == 1
    again, meta_again, hit_again = cache.get_or_build("latents", dict(reversed(KEY.items())), build)
    assert hit_again and build.calls == 1  # key order does not matter
    for name in arrays:
        np.testing.assert_array_equal(again[name], arrays[name])
        assert again[name].dtype == arrays[name].dtype
    assert meta_again == meta == {"note": "built", "calls": 1}


def test_entry_layout_and_manifest(cache):
    cache.get_or_build("head", KEY, Builder())
    entry = cache.entry_dir("head", KEY)
    assert entry.parent == cache.root / "head"
    assert sorted(p.name for p in entry.iterdir()) == [ARRAYS_FILE, MANIFEST_FILE]
    manifest = json.loads((entry / MANIFEST_FILE).read_text())
    assert manifest["key"] == KEY and manifest["kind"] == "head"
    assert len(manifest["arrays_sha256"]) == 64 and manifest["meta"]["note"] == "built"


def test_key_change_is_a_miss(cache):
    build = Builder()
    cache.get_or_build("latents", KEY, build)
    cache.get_or_build("latents", {**KEY, "seed": 4}, build)
    cache.get_or_build("encoder", KEY, build)  # same key, other kind
    assert build.calls == 3


def _flip_bytes(entry):
    path = entry / ARRAYS_FILE
    data = bytearray(path.read_bytes())
    data[-5:] = bytes(b ^ 0xFF for b in data[-5:])
    path.write_bytes(bytes(data))


def _truncate(entry):
    path = entry / ARRAYS_FILE
    path.write_bytes(path.read_bytes()[:20])


def _delete_manifest(entry):
    (entry / MANIFEST_FILE).unlink()


def _garble_manifest(entry):
    (entry / MANIFEST_FILE).write_text("{not json")


def _other_key_in_manifest(entry):
    manifest = json.loads((entry / MANIFEST_FILE).read_text())
    manifest["key"]["seed"] = 99
    (entry / MANIFEST_FILE).write_text(json.dumps(manifest))


def _delete_arrays(entry):
    (entry / ARRAYS_FILE).unlink()


@pytest.mark.parametrize(
    "damage",
    [
        _flip_bytes,
        _truncate,
        _delete_manifest,
        _garble_manifest,
        _other_key_in_manifest,
        _delete_arrays,
    ],
)
def test_damaged_entry_is_reported_and_rebuilt(cache, caplog, damage):
    build = Builder()
    cache.get_or_build("latents", KEY, build)
    entry = cache.entry_dir("latents", KEY)
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="common.assets.cache"):
        arrays, _, hit = cache.get_or_build("latents", KEY, build)
    assert not hit and build.calls == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("corrupt cache entry" in w and str(entry) in w for w in warnings), warnings
    # the rebuilt entry is sound again
    _, _, hit = cache.get_or_build("latents", KEY, build)
    assert hit and build.calls == 2
    np.testing.assert_array_equal(arrays["a"], np.arange(12, dtype=np.float32).reshape(3, 4))


def test_failed_build_leaves_nothing_behind(cache):
    with pytest.raises(RuntimeError, match="build failed"):
        cache.get_or_build("latents", KEY, Builder(fail=True))
    assert not cache.entry_dir("latents", KEY).exists()
    assert _leftovers(cache.root) == []
    _, _, hit = cache.get_or_build("latents", KEY, Builder())
    assert not hit


def test_failed_write_leaves_nothing_behind(cache):
    def unserialisable_meta():
        return {"a": np.zeros(3)}, {"when": object()}

    with pytest.raises(TypeError):
        cache.get_or_build("latents", KEY, unserialisable_meta)
    assert not cache.entry_dir("latents", KEY).exists()
    assert _leftovers(cache.root) == []


def test_store_replaces_an_existing_entry(cache):
    cache.store("head", KEY, {"w": np.ones(2)}, {"v": 1})
    cache.store("head", KEY, {"w": np.zeros(2)}, {"v": 2})
    arrays, meta = cache.load("head", KEY)
    np.testing.assert_array_equal(arrays["w"], np.zeros(2))
    assert meta == {"v": 2}
    assert cache.load("head", {**KEY, "seed": 0}) is None


def test_unwritable_folder_names_path_and_remedy(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = blocker / "cache"
    with pytest.raises(CacheError) as info:
        Cache(target)
    assert str(target) in str(info.value)
    assert "FEDALIGN_CACHE" in str(info.value) and "cache_dir" in str(info.value)


def test_bad_kind_and_key(cache):
    with pytest.raises(ValueError, match="kind"):
        cache.entry_dir("../escape", KEY)
    with pytest.raises(TypeError):
        cache.get_or_build("latents", {"x": object()}, Builder())


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDALIGN_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("FEDALIGN_CACHE")
    assert "fedalign" in str(default_cache_dir())


def _poison_with_valid_checksum(entry):
    """NaN written into the arrays, the checksum recomputed: only content checks catch it."""
    from safetensors.numpy import load_file, save_file

    from common.assets.cache import file_sha256

    arrays = load_file(str(entry / ARRAYS_FILE))
    arrays["a"] = np.full_like(arrays["a"], np.nan)
    save_file(arrays, str(entry / ARRAYS_FILE))
    manifest = json.loads((entry / MANIFEST_FILE).read_text())
    manifest["arrays_sha256"] = file_sha256(entry / ARRAYS_FILE)
    (entry / MANIFEST_FILE).write_text(json.dumps(manifest))


def _reshape_with_valid_checksum(entry):
    from safetensors.numpy import load_file, save_file

    from common.assets.cache import file_sha256

    arrays = load_file(str(entry / ARRAYS_FILE))
    arrays["a"] = arrays["a"].reshape(4, 3)
    save_file(arrays, str(entry / ARRAYS_FILE))
    manifest = json.loads((entry / MANIFEST_FILE).read_text())
    manifest["arrays_sha256"] = file_sha256(entry / ARRAYS_FILE)
    (entry / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage, why",
    [
        (_poison_with_valid_checksum, "array 'a' has non-finite values"),
        (_reshape_with_valid_checksum, "differ from the manifest's names, shapes or dtypes"),
    ],
)
def test_content_is_verified_beyond_the_checksum(cache, caplog, damage, why):
    build = Builder()
    cache.get_or_build("latents", KEY, build)
    damage(cache.entry_dir("latents", KEY))
    with caplog.at_level(logging.WARNING, logger="common.assets.cache"):
        arrays, _, hit = cache.get_or_build("latents", KEY, build)
    assert not hit and build.calls == 2 and why in caplog.text
    assert np.all(np.isfinite(arrays["a"])) and arrays["a"].shape == (3, 4)


def _reshape_with_its_manifest(entry):
    """The arrays and the manifest both rewritten (shape, layout and checksum agree): only
    the shapes the key implies can tell."""
    from safetensors.numpy import load_file, save_file

    from common.assets.cache import _layout

    arrays = load_file(str(entry / ARRAYS_FILE))
    arrays["a"] = arrays["a"].reshape(4, 3)
    save_file(arrays, str(entry / ARRAYS_FILE))
    manifest = json.loads((entry / MANIFEST_FILE).read_text())
    manifest["arrays_sha256"] = file_sha256(entry / ARRAYS_FILE)
    manifest["arrays"] = _layout(arrays)
    (entry / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_an_entry_rewritten_with_its_manifest_is_checked_against_the_shapes_its_key_implies(
    cache, caplog
):
    """Such an entry used to be loaded, and failed a user every round."""
    from common.assets.cache import check_shapes

    build, expect = Builder(), {"a": (3, "d"), "b": ("n",)}
    cache.get_or_build("latents", KEY, build, expect)
    _reshape_with_its_manifest(cache.entry_dir("latents", KEY))
    assert cache.load("latents", KEY) is not None  # without the expected shapes: taken
    with caplog.at_level(logging.WARNING, logger="common.assets.cache"):
        arrays, _, hit = cache.get_or_build("latents", KEY, build, expect)
    assert not hit and build.calls == 2 and arrays["a"].shape == (3, 4)
    assert "not the shapes its key implies: 'a' is (4, 3), expected (3, d)" in caplog.text
    both = {"x": np.zeros((2, 5)), "y": np.zeros((7, 6))}
    assert check_shapes(both, {"x": (2, "d"), "y": (7, "d")}) == (
        "'y' is (7, 6), expected (7, d=5)"
    )
    assert check_shapes(both, {"z": (1,)}) == "'z' is missing"
    assert check_shapes(both, {"x": (2, "d"), "y": (7, "e")}) is None


def test_non_finite_arrays_are_never_stored(cache):
    with pytest.raises(ValueError, match="refusing to cache latents array 'x'"):
        cache.store("latents", KEY, {"x": np.array([1.0, np.inf])})
    assert not cache.entry_dir("latents", KEY).exists() and _leftovers(cache.root) == []


def _build_slowly(root: str, log: str) -> float:
    """A process that asks for the same entry; its builder takes a while and logs a line."""
    import time

    def build():
        with open(log, "a") as handle:
            handle.write("built\n")
        time.sleep(1.0)
        return {"a": np.arange(6.0)}, {}

    arrays, _, _ = Cache(root).get_or_build("latents", KEY, build)
    return float(arrays["a"].sum())


def _replace_repeatedly(root: str, value: float) -> int:
    cache = Cache(root)
    for _ in range(40):
        cache.store("head", KEY, {"w": np.full(1000, value)})
    return 0


def _read_repeatedly(root: str) -> int:
    cache = Cache(root)
    seen = 0
    for _ in range(200):
        found = cache.load("head", KEY)
        if found is not None:
            assert found[0]["w"].shape == (1000,) and len(set(found[0]["w"])) == 1
            seen += 1
    return seen


def test_many_processes_build_an_entry_once_and_replace_it_without_races(tmp_path):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    root, log = str(tmp_path / "cache"), str(tmp_path / "builds.log")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=context) as pool:
        sums = list(pool.map(_build_slowly, [root] * 4, [log] * 4))
    assert sums == [15.0] * 4
    assert Path(log).read_text().count("built") == 1  # the others waited and read it
    Cache(root).store("head", KEY, {"w": np.full(1000, 0.0)})  # readers always have one
    with ProcessPoolExecutor(4, mp_context=context) as pool:
        writers = [pool.submit(_replace_repeatedly, root, v) for v in (1.0, 2.0)]
        readers = [pool.submit(_read_repeatedly, root) for _ in range(2)]
        assert [w.result() for w in writers] == [0, 0]  # no FileNotFoundError from a race
        # each read found a whole entry (checked in the reader) or, while one was being
        # replaced, none; most reads find one, and no torn entry is ever read
        assert all(r.result() > 100 for r in readers)
    arrays, _ = Cache(root).load("head", KEY)
    assert set(arrays["w"]) in ({1.0}, {2.0})
    assert _leftovers(Path(root)) == []


def test_a_read_only_cache_is_used_as_it_is(tmp_path, monkeypatch):
    """A valid entry in a folder this process cannot write to is read; a missing one is an
    error naming the folder, not a crash while writing."""
    from common.assets import cache as cache_module

    root = tmp_path / "shared"
    Cache(root).get_or_build("latents", KEY, Builder())

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cache_module.tempfile, "TemporaryFile", refuse)
    read_only = Cache(root)
    assert not read_only.writable
    build = Builder()
    arrays, _, hit = read_only.get_or_build("latents", KEY, build)
    assert hit and build.calls == 0 and arrays["a"].shape == (3, 4)
    with pytest.raises(CacheError, match=f"cache folder {root} is read-only and has no valid"):
        read_only.get_or_build("latents", {**KEY, "seed": 4}, build)
    assert build.calls == 0


def test_an_entrys_checksum_is_its_arrays_files_sha256(cache):
    """What a run fingerprints its assets with (the results' ``zoo``)."""
    assert cache.checksum("head", KEY) == ""
    entry = cache.store("head", KEY, {"w": np.arange(4.0)})
    first = cache.checksum("head", KEY)
    assert first == file_sha256(entry / ARRAYS_FILE)
    cache.store("head", KEY, {"w": np.arange(5.0)})
    assert cache.checksum("head", KEY) == file_sha256(entry / ARRAYS_FILE) != first
