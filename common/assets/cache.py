"""A content-keyed, verified on-disk cache for numpy arrays.

Trained encoders, latents and classifier heads are expensive to rebuild and
cheap to store, so they are cached under a key that names everything that
determines them. An entry is a folder with ``arrays.safetensors`` (no pickle:
safe to read from anywhere) and ``manifest.json`` (format version, kind, full
key, sha256 of the arrays file, free-form metadata). Entries are written to a
temporary folder and renamed into place, so a reader never sees half an
entry; a damaged entry is reported, removed and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from platformdirs import user_cache_dir
from safetensors.numpy import load_file, save_file

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
ENV_VAR = "FEDALIGN_CACHE"
ARRAYS_FILE = "arrays.safetensors"
MANIFEST_FILE = "manifest.json"
_TMP_PREFIX = ".tmp-"

Arrays = dict[str, np.ndarray]
Builder = Callable[[], tuple[Arrays, dict]]


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


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can fsync a folder
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class Cache:
    """Folder of verified entries, one sub-folder per kind of asset."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self._check_writable()

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    def _check_writable(self) -> None:
        hint = (
            f"choose another folder with the {ENV_VAR} environment variable "
            "or the `cache_dir` config key"
        )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as exc:
            raise CacheError(f"cache folder {self.root} is not writable ({exc}); {hint}") from exc

    def entry_dir(self, kind: str, key: dict) -> Path:
        if not kind or not kind.replace("_", "").isalnum():
            raise ValueError(f"kind={kind!r} must be a non-empty alphanumeric name")
        return self.root / kind / key_digest(key)[:20]

    def load(self, kind: str, key: dict) -> tuple[Arrays, dict] | None:
        """The entry's arrays and meta, or None if absent or damaged (then removed)."""
        entry = self.entry_dir(kind, key)
        if not entry.exists():
            return None
        try:
            return self._read(entry, kind, key)
        except _CorruptEntry as exc:
            logger.warning("corrupt cache entry %s (%s): removing it and rebuilding", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)
            return None

    def _read(self, entry: Path, kind: str, key: dict) -> tuple[Arrays, dict]:
        try:
            manifest = json.loads((entry / MANIFEST_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise _CorruptEntry(f"unreadable manifest: {exc}") from exc
        if not isinstance(manifest, dict):
            raise _CorruptEntry("manifest is not a JSON object")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise _CorruptEntry(f"format version {manifest.get('format_version')!r}")
        if manifest.get("kind") != kind or manifest.get("key") != json.loads(canonical_json(key)):
            raise _CorruptEntry("manifest key differs from the requested key")
        arrays_path = entry / ARRAYS_FILE
        try:
            checksum = file_sha256(arrays_path)
        except OSError as exc:
            raise _CorruptEntry(f"unreadable arrays file: {exc}") from exc
        if checksum != manifest.get("arrays_sha256"):
            raise _CorruptEntry("arrays checksum mismatch")
        try:
            arrays = load_file(str(arrays_path))
        except Exception as exc:  # safetensors raises its own error types
            raise _CorruptEntry(f"arrays file does not load: {exc}") from exc
        return arrays, manifest.get("meta", {})

    def store(self, kind: str, key: dict, arrays: Arrays, meta: dict | None = None) -> Path:
        """Write an entry atomically; an existing entry with the same key is replaced."""
        entry = self.entry_dir(kind, key)
        meta = dict(meta or {})
        manifest_key = json.loads(canonical_json(key))  # fails early on non-JSON keys
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=entry.parent))
        try:
            tensors = {name: np.ascontiguousarray(value) for name, value in arrays.items()}
            save_file(tensors, str(tmp / ARRAYS_FILE))
            with open(tmp / ARRAYS_FILE, "rb+") as handle:
                os.fsync(handle.fileno())
            manifest = {
                "format_version": FORMAT_VERSION,
                "kind": kind,
                "key": manifest_key,
                "arrays_sha256": file_sha256(tmp / ARRAYS_FILE),
                "meta": meta,
            }
            _write_file(tmp / MANIFEST_FILE, (json.dumps(manifest, indent=1) + "\n").encode())
            _fsync_dir(tmp)
            if entry.exists():
                shutil.rmtree(entry)
            try:
                os.replace(tmp, entry)
            except OSError:
                if not entry.exists():
                    raise
                # Another process stored the same key in the meantime: keep theirs.
                shutil.rmtree(tmp, ignore_errors=True)
            _fsync_dir(entry.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return entry

    def get_or_build(self, kind: str, key: dict, build: Builder) -> tuple[Arrays, dict, bool]:
        """Return ``(arrays, meta, hit)``, building and storing the entry on a miss."""
        found = self.load(kind, key)
        if found is not None:
            logger.debug("cache hit %s/%s", kind, self.entry_dir(kind, key).name)
            return found[0], found[1], True
        arrays, meta = build()
        self.store(kind, key, arrays, meta)
        return arrays, meta, False
