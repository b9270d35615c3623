"""Run experiments as Flower simulations on the Ray backend.

:func:`simulate` runs one experiment; :func:`simulate_sweep` runs the points of
a sweep back to back in as few simulations as possible, keeping each finished
point in a :class:`~common.run.points.PointStore`. The ServerApp writes every
outcome to disk and the callers read it back from there, so a simulation
returns exactly what a deployed run leaves behind.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import filelock

from clients.client_app import UserFactory, default_user, make_client_app
from clients.shelf import Shelf
from common.files import locked
from common.run.points import PointStore, point_key
from common.run.reporting import show_progress
from common.run.results import PRECODERS_FILE, RunOutcome
from common.run.settings import SUPERNODES, ConfigError, RunSettings
from common.run.sources import ProblemSource
from launch.environment import quiet, worker_pool
from server.server_app import make_server_app
from server.sweep import POINTS_IN_FLIGHT, Sink, WriteTo


class SimulationFailed(RuntimeError):
    """The ServerApp did not produce an outcome (its error was logged by Flower)."""


MIN_CPUS_PER_USER = 0.1  # at most ten users' actors per core
ACTOR_RESTARTS = 10  # times Ray re-creates each simulated user's actor that died


def check_resources(
    cpus_per_user: float, ray_address: str | None = None, gpus_per_user: float = 0.0
) -> None:
    """Refuse a CPU or GPU share per user that Ray cannot schedule on this machine, before
    Ray starts (Flower would otherwise wait for an actor that never comes). On an existing
    cluster (``ray_address``) its machines are not known here: only the lower bounds hold."""
    if gpus_per_user > 0 and ray_address is None:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus_per_user > max(gpus, 0) or not gpus:
            raise ConfigError(
                f"config key 'experiment.gpus_per_user' = {gpus_per_user!r} is invalid: this "
                f"machine has {gpus} CUDA GPU(s), so Ray could not schedule the users "
                f"(allowed: 0{f'..{gpus}' if gpus else ''})"
            )
    cpus = (os.cpu_count() or 1) if ray_address is None else math.inf
    if not MIN_CPUS_PER_USER <= cpus_per_user <= cpus:
        raise ConfigError(
            f"config key 'experiment.cpus_per_user' = {cpus_per_user!r} is invalid: this "
            f"machine has {cpus} CPU(s), so Ray could not schedule the users "
            f"(allowed: {MIN_CPUS_PER_USER}..{cpus})"
        )


CLUSTER_TIMEOUT_S = 5.0  # how long a Ray head has to accept a connection


def check_cluster(address: str | None, timeout: float = CLUSTER_TIMEOUT_S) -> None:
    """Refuse an ``experiment.ray_address`` no Ray cluster answers at, before Ray is asked
    (Ray retries an unreachable head without end, and reports ``auto`` without a cluster
    in a 150-line traceback).

    Parameters
    ----------
    address : str or None
        ``host:port`` of a Ray head, ``auto`` (the cluster this machine belongs to), or
        None (a local Ray, always there).
    timeout : float
        Seconds the head has to accept a TCP connection.

    Raises
    ------
    ConfigError
        Naming the key, the address and what to do.
    """
    if address is None:
        return
    advice = (
        "start the cluster's head with `ray start --head` and give the address it prints, "
        "or experiment.ray_address=null for a Ray of this run's own"
    )
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address_or_die

            address = canonicalize_bootstrap_address_or_die("auto")
        except ImportError:  # Ray moved it: leave the check to ray.init
            return
        except ConnectionError:
            raise ConfigError(
                "config key 'experiment.ray_address' = 'auto' names no Ray cluster: none "
                f"runs on this machine; {advice}"
            ) from None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"config key 'experiment.ray_address' = {address!r}: no Ray cluster answers "
            f"there within {timeout:g} s ({exc.strerror or exc}); {advice}"
        ) from None


def resources_of(settings: RunSettings) -> tuple[float, str | None, float]:
    """What a simulation of ``settings`` runs on: CPUs per user, the Ray cluster, GPUs per
    user."""
    e = settings.experiment
    return e.cpus_per_user, e.ray_address, e.gpus_per_user


SHELF_PREFIX = "fedalign-shelf-"  # + the owner's pid + "-" + random: a shelf's folder
SHARED_MEMORY = Path("/dev/shm")
OWNER = ".owner"  # in a shelf: the file its owner holds a lock on while it runs
SHARED_MEMORY_ROOM = 2**30  # bytes /dev/shm must have free to hold a shelf (not a container's)


@contextlib.contextmanager
def user_shelf() -> Iterator[Shelf]:
    """A :class:`~clients.shelf.Shelf` for one simulation's users, removed when it ends.

    It lives in shared memory (``/dev/shm``) unless that is small (a container's
    is often 64 MB), else in the temporary folder (the page cache shares it
    just as well). Shelves whose owner died (killed) are removed first.
    """
    roomy = _has_room(SHARED_MEMORY, SHARED_MEMORY_ROOM)
    base = SHARED_MEMORY if roomy else Path(tempfile.gettempdir())
    remove_orphan_shelves(base)
    root = Path(tempfile.mkdtemp(prefix=f"{SHELF_PREFIX}{os.getpid()}-", dir=base))
    try:
        with locked(root / OWNER):  # held while the simulation runs
            yield Shelf(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _has_room(base: Path, size: int) -> bool:
    try:
        stats = os.statvfs(base)
    except OSError:
        return False
    return os.access(base, os.W_OK) and stats.f_bavail * stats.f_frsize > size


def remove_orphan_shelves(base: Path) -> list[Path]:
    """Remove the shelves under ``base`` whose owner is gone (its lock on the shelf's
    ``.owner`` file is free: it died, whatever became of its PID); return them. A shelf
    without that file is being created, unless it is a minute old."""
    removed = []
    for folder in base.glob(f"{SHELF_PREFIX}*"):
        try:
            if (folder / OWNER).exists():
                with locked(folder / OWNER, timeout=0):  # free: its owner is gone
                    pass
            elif time.time() - folder.stat().st_mtime < 60:
                continue
        except filelock.Timeout:  # held: its owner runs (maybe in another PID namespace)
            continue
        except OSError:  # removed meanwhile, or another account's
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def warm_assets(points: Sequence[RunSettings]) -> None:
    """Build or load the encoder latents and heads that ``points`` share (progress bars here,
    once), then refuse them if any cannot fit in this machine's memory (``MemoryError``)."""
    from common.assets.source import AssetSource
    from common.run import budget

    table = AssetSource(points[0]).warm(progress=points[0].experiment.progress)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"), flush=True)
    ap_dim = int(table.latent_dim.iloc[0])
    dims = dict(zip(table.model.iloc[1:], table.latent_dim.iloc[1:], strict=True))
    available = budget.available_memory()
    for settings in points:  # sizes differ per point (antennas, channel uses, pilots)
        source = AssetSource(settings)
        settings.tracking.check_pilots(len(source.pilots()))  # before Flower starts
        # a local Ray's actors share one copy of each user (user_shelf); on a cluster
        # every actor may end up holding every user
        workers = local_actors(settings)
        copies = 1 if settings.experiment.ray_address is None else min(workers, settings.num_users)
        needed = budget.estimate(
            settings,
            len(source.pilots()),
            source.test_size(),
            ap_dim,
            [int(dims[model]) for model in settings.users.models],
            user_copies=copies,
            models=settings.users.models,
        )
        link = settings.link
        what = (
            "this run"
            if len(points) == 1
            else (
                f"sweep point {point_key(settings)} ({settings.strategy.name}, "
                f"{link.antennas_tx}x{link.antennas_rx}, u={link.channel_uses})"
            )
        )
        budget.check_fits(needed, available, f"{what} (through Flower)")


def simulate(
    settings: RunSettings,
    source: ProblemSource | None = None,
    *,
    out_dir: str | Path | None = None,
    user_factory: UserFactory = default_user,
    isolated: bool = True,
) -> RunOutcome:
    """One run over :func:`supernodes` simulated SuperNodes, ``settings.cpus_per_user`` CPUs
    per actor.

    The outcome is written to ``out_dir`` (a temporary folder when not given)
    and returned as read back from there.
    """
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="fedalign-") as tmp:
            return simulate(
                settings, source, out_dir=tmp, user_factory=user_factory, isolated=isolated
            )
    started = time.time()
    simulate_points(
        [settings], WriteTo(out_dir), source, user_factory=user_factory, isolated=isolated
    )
    written = Path(out_dir) / PRECODERS_FILE  # the last file a run writes
    if not written.exists() or written.stat().st_mtime < started - 1:
        raise SimulationFailed("the Flower simulation ended without results; see the log above")
    return RunOutcome.load(out_dir)


def simulate_sweep(
    points: Sequence[RunSettings],
    store: PointStore,
    source: ProblemSource | None = None,
    *,
    user_factory: UserFactory = default_user,
    isolated: bool = True,
    in_flight: int = POINTS_IN_FLIGHT,
) -> list[RunOutcome]:
    """Every point of a sweep that ``store`` lacks, in as few simulations as possible.

    Points that share ``cpus_per_user`` run in one simulation, over :func:`supernodes`
    SuperNodes, up to ``in_flight`` of them in lockstep; each finished point is saved in
    ``store`` at once. Points already there are not run again. Returns every point's
    outcome, in order.
    """
    todo: dict[str, RunSettings] = {}
    for point in points:
        if not store.finished(point):
            todo.setdefault(point_key(point), point)
    by_cpus: dict[tuple, list[RunSettings]] = {}
    for point in todo.values():
        by_cpus.setdefault(resources_of(point), []).append(point)
    errors = []
    for group in by_cpus.values():
        try:
            simulate_points(
                group,
                store,
                source,
                user_factory=user_factory,
                isolated=isolated,
                in_flight=in_flight,
            )
        except Exception as exc:  # finished points are in the store; report the rest below
            errors.append(f"{type(exc).__name__}: {exc}")
    missing = [point_key(point) for point in points if not store.finished(point)]
    if missing:
        raise SimulationFailed(
            f"{len(missing)} point(s) ended without results ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}): "
            f"{'; '.join(errors) or 'see the log above'}. Finished points are kept in "
            f"{store.root}: run the sweep again to redo only the rest."
        )
    return [store.load(point) for point in points]


def simulate_points(
    points: Sequence[RunSettings],
    sink: Sink,
    source: ProblemSource | None = None,
    *,
    user_factory: UserFactory = default_user,
    isolated: bool = True,
    in_flight: int = 1,
    shelf: Shelf | None = None,
) -> None:
    """Run ``points`` in one Flower simulation, up to ``in_flight`` of them in lockstep; each
    outcome goes to ``sink``.

    By default the simulation runs in a freshly spawned process: starting Ray a
    second time from a process that already holds many threads (a Hydra ``-m``
    sweep, a benchmark) can deadlock, and a fresh process also gets the
    single-threaded BLAS set-up above. The points must share ``cpus_per_user``.

    On a local Ray, the users' prepared inputs are shared by every actor through
    a ``shelf`` (:func:`user_shelf`, made here when not given) that the calling
    process removes at the end, also when the simulation is killed. On a Ray
    cluster every actor keeps its own copy.
    """
    if not points:
        return
    if len({resources_of(point) for point in points}) > 1:
        raise ValueError(
            "the points of one simulation must share experiment.cpus_per_user, "
            "experiment.ray_address and experiment.gpus_per_user"
        )
    check_resources(*resources_of(points[0]))
    with contextlib.ExitStack() as stack:
        if shelf is None and points[0].experiment.ray_address is None:
            shelf = stack.enter_context(user_shelf())
        if isolated:
            pool = stack.enter_context(worker_pool(1))  # Ctrl-C stops it and Ray at once
            pool.submit(
                simulate_points,
                points,
                sink,
                source,
                user_factory=user_factory,
                isolated=False,
                in_flight=in_flight,
                shelf=shelf,
            ).result()
        else:
            _run_simulation(points, sink, source, user_factory, in_flight, shelf)


def local_actors(settings: RunSettings) -> int:
    """How many simulated users' Ray actors this machine runs at once (at least one):
    its CPUs over ``experiment.cpus_per_user``."""
    return max(1, int((os.cpu_count() or 1) / settings.experiment.cpus_per_user))


def supernodes(points: Sequence[RunSettings]) -> int:
    """How many SuperNodes simulate ``points``: the most that any point asks for, each
    capped at its users. ``experiment.supernodes`` null asks for one per user up to
    :data:`~common.run.settings.SUPERNODES` or the local Ray's actors (CPUs over
    ``cpus_per_user``), whichever is more; on a Ray cluster, whose size is known only
    once Ray has started, one per user. Node ``p`` then serves the users ``k`` with
    ``k mod nodes == p`` (:meth:`clients.device.Device.users`)."""

    def asked(point: RunSettings) -> int:
        if point.experiment.supernodes is not None:
            return point.experiment.supernodes
        if point.experiment.ray_address is not None:
            return point.num_users
        return max(SUPERNODES, local_actors(point))

    return max(min(point.num_users, asked(point)) for point in points)


def _run_simulation(
    points: Sequence[RunSettings],
    sink: Sink,
    source: ProblemSource | None,
    user_factory: UserFactory,
    in_flight: int,
    shelf: Shelf | None,
) -> None:
    """Flower's simulation of ``points`` in this process (see :func:`simulate_points`)."""
    quiet()
    from flwr.simulation import run_simulation

    show_progress(any(point.experiment.progress for point in points))
    nodes, users = supernodes(points), max(point.num_users for point in points)
    if nodes < users:
        print(
            f"simulating {users} users on {nodes} SuperNodes (experiment.supernodes): "
            f"SuperNode p serves users p, p + {nodes}, ...",
            flush=True,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(
            server_app=make_server_app(list(points), sink, source, in_flight=in_flight),
            client_app=make_client_app(points[0], source, user_factory, shelf),
            num_supernodes=nodes,
            backend_config={
                # Ray re-creates an actor whose process died (killed, out of memory): its
                # users fail the message it was serving and are rebuilt for the next one
                "client_resources": {
                    "num_cpus": points[0].experiment.cpus_per_user,
                    "num_gpus": points[0].experiment.gpus_per_user,
                    "max_restarts": ACTOR_RESTARTS,
                },
                "init_args": {
                    "logging_level": logging.WARNING,
                    "log_to_driver": False,
                    "include_dashboard": False,
                    # an existing cluster (many machines), or None: a local Ray for this run
                    **(
                        {"address": address}
                        if (address := points[0].experiment.ray_address)
                        else {}
                    ),
                },
            },
        )
