"""The one way to write a file or a folder and to lock: common.files."""

from __future__ import annotations

import multiprocessing
import os
import stat
import time
from pathlib import Path

import filelock
import pytest

from common.files import TEMPORARY, atomic_file, atomic_folder, locked


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_file_appears_whole_with_the_umasks_permissions(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old\n")
    with atomic_file(path, "w") as out:
        out.write("new\n")
        assert path.read_text() == "old\n"  # not visible until the block ends
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, error):
    path = tmp_path / "table.csv"
    path.write_text("old\n")
    with pytest.raises(error), atomic_file(path, "w") as out:
        out.write("half")
        raise error("stopped")
    assert path.read_text() == "old\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMPORARY)]


def test_atomic_folder_keeps_a_folder_published_meanwhile_unless_it_replaces(tmp_path):
    final = tmp_path / "point"
    with atomic_folder(final) as staging:
        (staging / "a").write_text("first")
        final.mkdir()  # another process published the same folder meanwhile
        (final / "a").write_text("theirs")
    assert (final / "a").read_text() == "theirs"
    with atomic_folder(final, replace=True) as staging:
        (staging / "a").write_text("ours")
    assert (final / "a").read_text() == "ours"
    assert stat.S_IMODE(final.stat().st_mode) == 0o777 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["point"]


def test_a_failed_atomic_folder_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_folder(tmp_path / "point") as staging:
        (staging / "a").write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def _hold(path: str, ready) -> None:
    with locked(path):
        ready.set()
        time.sleep(60)  # until killed


def test_a_lock_excludes_other_processes_and_dies_with_its_holder(tmp_path):
    path = str(tmp_path / "entry.lock")
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=_hold, args=(path, ready))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(filelock.Timeout), locked(path, timeout=0):
            pass
        holder.kill()  # the system releases a dead holder's lock
        holder.join(30)
        started = time.monotonic()
        with locked(path, timeout=10):
            assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.join(30)


def test_a_lock_in_a_missing_folder_is_refused_and_the_folder_not_made(tmp_path):
    with pytest.raises(FileNotFoundError), locked(tmp_path / "gone" / "x.lock"):
        pass
    assert not Path(tmp_path / "gone").exists()


def test_a_folder_removed_while_waiting_for_its_lock_is_not_made_again(tmp_path, monkeypatch):
    """filelock creates a missing folder on acquiring: a folder removed meanwhile (a
    shelf its owner removed) must stay removed and the waiter be told."""
    folder = tmp_path / "shelf"
    folder.mkdir()
    acquire = filelock.FileLock.acquire

    def removed_meanwhile(self, *args, **kwargs):
        folder.rmdir()
        return acquire(self, *args, **kwargs)

    monkeypatch.setattr(filelock.FileLock, "acquire", removed_meanwhile)
    with pytest.raises(FileNotFoundError, match="removed"), locked(folder / "x.lock"):
        pytest.fail("the lock must not be held in a folder made again")
    assert not folder.exists()
