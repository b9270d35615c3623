"""Read-only objects that one process builds and every process on the machine maps.

A simulation's users run in Ray actors, and Flower hands each message to any
idle actor, so every actor ends up serving every user. Without sharing, each
actor would build and keep its own copy of each user's prepared inputs (at
paper scale, hundreds of MB per user). A :class:`Shelf` keeps one copy per
machine instead: the first process to ask for a key builds the object under a
per-key file lock, pickles it with its arrays out of band into a folder, and
publishes the folder by an atomic rename; every process then unpickles it over
a read-only memory map of those arrays, so they share the same pages (writing
to them raises; a non-contiguous array would travel inside the pickle instead,
as a private copy, but a user's prepared data holds contiguous arrays only).

An object that cannot be pickled, or a shelf that cannot be written (full,
removed), is built and kept by the asking process alone, with a warning: the
run goes on as it would without a shelf. Who creates a shelf's folder removes
it (:func:`launch.simulation.user_shelf`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from common.files import atomic_folder, locked

logger = logging.getLogger(__name__)

T = TypeVar("T")

PAYLOAD, BUFFERS, LAYOUT = "object.pickle", "buffers.bin", "layout.json"
UNSHARED = ".unshared"  # beside an entry's name: its first builder could not publish it
ALIGN = 64  # byte alignment of each array in the buffers file


class Shelf:
    """Objects shared through memory-mapped files under ``root`` (see the module doc)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._held: dict[str, Any] = {}  # what this process already mapped or built
        self._warned = False

    # Ray hands every message a freshly unpickled ClientApp: a process gets its one shelf
    # per folder back (open_shelf), with what it already mapped, not another process's
    def __reduce__(self):
        return (open_shelf, (str(self.root),))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Shelf) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def get(self, key: str, build: Callable[[], T]) -> T:
        """The object under ``key``: mapped if published, else built once (here, or by the
        process that holds the key's lock) and published. What cannot be shared (marked
        so by the first builder) is built by each process at once, without the lock."""
        if key in self._held:
            return self._held[key]
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        entry, unshared = self.root / name, self.root / f"{name}{UNSHARED}"
        value = _read(entry)
        if value is None and not unshared.exists():
            with contextlib.ExitStack() as stack:
                try:
                    stack.enter_context(locked(self.root / f"{name}.lock"))
                except OSError as exc:  # no shelf folder (removed, unwritable): build here
                    self._warn(f"cannot use {self.root} ({exc})")
                else:
                    value = _read(entry)
                    if value is None and not unshared.exists():
                        value = build()
                        if self._publish(entry, value):
                            shared = _read(entry)  # the shared copy; the built one is freed
                            value = value if shared is None else shared
                        else:  # the other processes need not wait for this lock any more
                            with contextlib.suppress(OSError):
                                unshared.touch()
        if value is None:
            value = build()
        self._held[key] = value
        return value

    def _publish(self, entry: Path, value: Any) -> bool:
        """Write ``value`` beside ``entry`` and rename it there; False (and a warning) when
        it cannot be shared."""
        buffers: list[pickle.PickleBuffer] = []
        try:
            payload = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            self._warn(f"{type(value).__name__} cannot be pickled ({exc})")
            return False
        try:
            with atomic_folder(entry) as staging:
                layout, offset = [], 0
                with open(staging / BUFFERS, "wb") as out:
                    for buffer in buffers:
                        raw = buffer.raw()
                        out.write(b"\0" * (-offset % ALIGN))
                        offset += -offset % ALIGN
                        out.write(raw)
                        layout.append([offset, raw.nbytes])
                        offset += raw.nbytes
                (staging / PAYLOAD).write_bytes(payload)
                (staging / LAYOUT).write_text(json.dumps(layout))
        except OSError as exc:  # full, or removed under us: this process keeps its own
            self._warn(f"cannot write {entry} ({exc})")
            return False
        return True

    def _warn(self, why: str) -> None:
        if not self._warned:
            logger.warning(
                "not sharing users' inputs between processes: %s; each process keeps its own copy",
                why,
            )
            self._warned = True


_OPEN: dict[str, Shelf] = {}


def open_shelf(root: str) -> Shelf:
    """This process's shelf at ``root``: one per process, so what it mapped stays mapped."""
    if root not in _OPEN:
        _OPEN[root] = Shelf(root)
    return _OPEN[root]


def _read(entry: Path) -> Any | None:
    """The published object at ``entry`` over a read-only map of its arrays; ``None`` when
    not published (a published folder is complete: it appears by rename)."""
    try:
        layout = json.loads((entry / LAYOUT).read_text())
        payload = (entry / PAYLOAD).read_bytes()
        with open(entry / BUFFERS, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            mapped = mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ) if size else b""
    except FileNotFoundError:
        return None
    view = memoryview(mapped)
    return pickle.loads(payload, buffers=[view[start : start + n] for start, n in layout])
