"""Shared fixtures.

Tests share one warm cache (``$FEDALIGN_CACHE``, by default ``<repo>/.cache/fedalign``)
so that the embedded zoo is built at most once per machine, not once per test run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("FEDALIGN_CACHE", str(REPO / ".cache" / "fedalign"))


@pytest.fixture
def task_identity():
    """Flower messages need a run identity, which Flower's runtimes set and tests fake."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 7, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The shared, persistent cache folder (the zoo's assets survive between runs)."""
    path = Path(os.environ["FEDALIGN_CACHE"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def mnist5k():
    """The default dataset with the default split."""
    from common.assets.data import load_dataset

    return load_dataset("mnist5k")


@pytest.fixture(scope="session")
def embedded_source(cache_dir):
    """The default embedded zoo's assets (all users) as a run's inputs, in the shared cache."""
    from common.assets.source import AssetSource
    from conf import settings

    return AssetSource(settings(f"cache_dir={cache_dir}", "experiment.progress=false"))
