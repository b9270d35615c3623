"""A content-keyed, verified on-disk cache for numpy arrays.

Trained encoders, latents and classifier heads are expensive to rebuild and
cheap to store, so they are cached under a key that names everything that
determines them. An entry is a folder with ``arrays.safetensors`` (no pickle:
safe to read from anywhere) and ``manifest.json`` (format version, kind, full
key, sha256 of the arrays file, each array's shape and dtype, free-form
metadata). Entries are written to a temporary folder and renamed into place,
so a reader never sees half an entry. An entry is trusted only if its checksum,
shapes and dtypes match its manifest and every value is finite; a damaged
entry is reported and rebuilt.

Many processes may share one cache: building an entry holds a per-entry file
lock, so one process builds while the others wait and then read it. A
replaced entry is first moved aside by an atomic rename, so there is no moment
at which another process can delete or half-see it, and readers never delete
anything. A cache folder this process cannot write to is used read-only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from platformdirs import user_cache_dir
from safetensors.numpy import load as load_bytes
from safetensors.numpy import save_file

from common.files import atomic_folder, locked
from common.maths.validation import non_finite

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
ENV_VAR = "FEDALIGN_CACHE"
ARRAYS_FILE = "arrays.safetensors"
MANIFEST_FILE = "manifest.json"

Arrays = dict[str, np.ndarray]
Builder = Callable[[], tuple[Arrays, dict]]
Shapes = dict[str, tuple[int | str, ...]]  # each array's shape; a str names a shared size


class CacheError(RuntimeError):
    """The cache folder cannot be used."""


class _CorruptEntry(Exception):
    """Internal: an entry failed verification (the message says why)."""


def default_cache_dir() -> Path:
    """``$FEDALIGN_CACHE`` if set, else the platform's user cache folder."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path(user_cache_dir("fedalign"))


def canonical_json(value: Any) -> str:
    """One spelling per value, so equal keys hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def key_digest(key: dict) -> str:
    """Stable identifier of a cache key (also used to chain keys together)."""
    payload = canonical_json({"format_version": FORMAT_VERSION, "key": key})
    return hashlib.sha256(payload.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_at(folder: int, name: str) -> bytes:
    """The bytes of file ``name`` in the folder opened as ``folder``."""
    fd = os.open(name, os.O_RDONLY, dir_fd=folder)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


class Cache:
    """Folder of verified entries, one sub-folder per kind of asset."""

    def __init__(self, root: str | Path | None = None, *, missing: str | None = None) -> None:
        """``missing``: when given, a missing entry is an error with this advice instead of
        being built (a device that must have built its assets before a run)."""
        self.root = Path(root) if root is not None else default_cache_dir()
        self.missing = missing
        self.writable = self._check_usable()

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    def _check_usable(self) -> bool:
        """True if writable; False for an existing folder that is read-only (used as it is)."""
        hint = (
            f"choose another folder with the {ENV_VAR} environment variable "
            "or the `cache_dir` config key"
        )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cache folder {self.root} cannot be created ({exc}); {hint}") from exc
        try:
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as exc:
            if not self.root.is_dir():
                raise CacheError(f"cache folder {self.root} is not a folder; {hint}") from exc
            logger.info("cache folder %s is read-only (%s): using it as it is", self.root, exc)
            return False
        return True

    @contextlib.contextmanager
    def _lock(self, entry: Path) -> Iterator[None]:
        """Hold the entry's lock file: one builder at a time per entry, across processes."""
        entry.parent.mkdir(parents=True, exist_ok=True)
        with locked(entry.parent / f"{entry.name}.lock"):
            yield

    def entry_dir(self, kind: str, key: dict) -> Path:
        if not kind or not kind.replace("_", "").isalnum():
            raise ValueError(f"kind={kind!r} must be a non-empty alphanumeric name")
        return self.root / kind / key_digest(key)[:20]

    def load(
        self, kind: str, key: dict, expect: Shapes | None = None
    ) -> tuple[Arrays, dict] | None:
        """The entry's arrays and meta, or None if absent or damaged (left for a builder).

        ``expect`` gives the shapes the key implies (:func:`check_shapes`): an entry whose
        arrays and manifest were both rewritten to other shapes is damaged too."""
        entry = self.entry_dir(kind, key)
        try:
            # both files through one handle on the folder: a snapshot of one version even if
            # another process replaces the entry meanwhile
            folder = os.open(entry, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return None
        try:
            arrays, meta = self._read(folder, kind, key)
            if expect is not None and (wrong := check_shapes(arrays, expect)) is not None:
                raise _CorruptEntry(f"not the shapes its key implies: {wrong}")
            return arrays, meta
        except _CorruptEntry as exc:  # left in place: only a builder replaces an entry
            logger.warning("corrupt cache entry %s (%s): it will be rebuilt", entry, exc)
            return None
        finally:
            os.close(folder)

    def _read(self, folder: int, kind: str, key: dict) -> tuple[Arrays, dict]:
        try:
            manifest = json.loads(_read_at(folder, MANIFEST_FILE))
        except (OSError, ValueError) as exc:
            raise _CorruptEntry(f"unreadable manifest: {exc}") from exc
        if not isinstance(manifest, dict):
            raise _CorruptEntry("manifest is not a JSON object")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise _CorruptEntry(f"format version {manifest.get('format_version')!r}")
        if manifest.get("kind") != kind or manifest.get("key") != json.loads(canonical_json(key)):
            raise _CorruptEntry("manifest key differs from the requested key")
        try:
            data = _read_at(folder, ARRAYS_FILE)
        except OSError as exc:
            raise _CorruptEntry(f"unreadable arrays file: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != manifest.get("arrays_sha256"):
            raise _CorruptEntry("arrays checksum mismatch")
        try:
            arrays = load_bytes(data)
        except Exception as exc:  # safetensors raises its own error types
            raise _CorruptEntry(f"arrays file does not load: {exc}") from exc
        declared = manifest.get("arrays")
        if declared is not None and declared != _layout(arrays):
            raise _CorruptEntry("arrays differ from the manifest's names, shapes or dtypes")
        if (bad := _non_finite(arrays)) is not None:
            raise _CorruptEntry(f"array {bad!r} has non-finite values")
        return arrays, manifest.get("meta", {})

    def checksum(self, kind: str, key: dict) -> str:
        """The SHA-256 of an entry's arrays file, as its manifest records it (checked on
        every load); ``''`` when the entry is missing or its manifest unreadable."""
        try:
            manifest = json.loads((self.entry_dir(kind, key) / MANIFEST_FILE).read_text())
            return str(manifest["arrays_sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def store(self, kind: str, key: dict, arrays: Arrays, meta: dict | None = None) -> Path:
        """Write an entry atomically; an existing entry with the same key is replaced."""
        entry = self.entry_dir(kind, key)
        if not self.writable:
            raise CacheError(f"cache folder {self.root} is read-only: cannot store {entry}")
        meta = dict(meta or {})
        manifest_key = json.loads(canonical_json(key))  # fails early on non-JSON keys
        tensors = {name: np.ascontiguousarray(value) for name, value in arrays.items()}
        if (bad := _non_finite(tensors)) is not None:
            raise ValueError(f"refusing to cache {kind} array {bad!r}: it has non-finite values")
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_folder(entry, replace=True, fsync=True) as staging:
            save_file(tensors, str(staging / ARRAYS_FILE))
            manifest = {
                "format_version": FORMAT_VERSION,
                "kind": kind,
                "key": manifest_key,
                "arrays_sha256": file_sha256(staging / ARRAYS_FILE),
                "arrays": _layout(tensors),
                "meta": meta,
            }
            (staging / MANIFEST_FILE).write_bytes((json.dumps(manifest, indent=1) + "\n").encode())
        return entry

    def get_or_build(
        self, kind: str, key: dict, build: Builder, expect: Shapes | None = None
    ) -> tuple[Arrays, dict, bool]:
        """Return ``(arrays, meta, hit)``, building and storing the entry on a miss (or when
        the entry's shapes are not those ``expect`` says the key implies)."""
        found = self.load(kind, key, expect)
        if found is not None:
            logger.debug("cache hit %s/%s", kind, self.entry_dir(kind, key).name)
            return found[0], found[1], True
        entry = self.entry_dir(kind, key)
        if self.missing is not None:
            raise CacheError(
                f"cache folder {self.root} has no {kind} entry {entry.name}: {self.missing}"
            )
        if not self.writable:
            raise CacheError(
                f"cache folder {self.root} is read-only and has no valid entry {entry}; "
                f"build it in a writable cache first (the {ENV_VAR} environment variable or "
                "the `cache_dir` config key)"
            )
        with self._lock(entry):
            if entry.exists() and (found := self.load(kind, key, expect)) is not None:
                return found[0], found[1], True  # built by another process while we waited
            arrays, meta = build()
            self.store(kind, key, arrays, meta)
        return arrays, meta, False


def check_shapes(arrays: Arrays, expect: Shapes) -> str | None:
    """Why ``arrays`` do not have the shapes ``expect`` gives, or None.

    Parameters
    ----------
    arrays : dict of str to ndarray
        An entry's arrays.
    expect : dict of str to tuple of (int or str)
        For each named array, its shape: an int is a size, a str a size that must be the
        same wherever the same str appears (``{"train": (45000, "d"), "test": (5000, "d")}``).

    Returns
    -------
    str or None
        ``"'test' is (5000, 12), expected (5000, d=384)"``; None when all match.
    """
    bound: dict[str, int] = {}
    for name, shape in expect.items():
        if name not in arrays:
            return f"{name!r} is missing"
        actual = tuple(arrays[name].shape)
        ok = len(actual) == len(shape)
        for size, want in zip(actual, shape, strict=False):
            if isinstance(want, str):
                ok = ok and bound.setdefault(want, size) == size
            else:
                ok = ok and size == want
        if not ok:
            sizes = [f"{w}={bound[w]}" if w in bound else str(w) for w in shape]
            shown = f"({', '.join(sizes)}{',' if len(sizes) == 1 else ''})"
            return f"{name!r} is {actual}, expected {shown}"
    return None


def _layout(arrays: Arrays) -> dict[str, dict]:
    """Each array's shape and dtype, as the manifest records them."""
    return {
        name: {"shape": list(value.shape), "dtype": value.dtype.str}
        for name, value in sorted(arrays.items())
    }


def _non_finite(arrays: Arrays) -> str | None:
    """The name of the first float or complex array holding NaN or inf, if any."""
    return next((name for name, value in arrays.items() if non_finite(value)), None)
