"""Experiment trackers: each run's settings, rounds and results also in MLflow, TensorBoard
or Weights & Biases (``logger=mlflow|tensorboard|wandb``; ``none`` by default).

Only the AP side logs (the :class:`~common.run.session.Session` of either runtime): a
user's device needs no tracker installed. A run logs

- its settings as parameters (dotted config keys; the whole JSON as ``settings.json``),
- every history row as metrics at step = round (``objective``, ``primal_residual``,
  ``power``, ``mean_pilot_mse``, ``responded``, ``failures``, bytes per direction, ...),
- the final results (:func:`final_metrics`: means, totals and each user's accuracy),
- its tables and ``precoders.npz`` as artifacts (TensorBoard: its event files sit in the
  run folder beside them).

Sweep points are runs under one parent run per sweep (MLflow, :func:`open_sweep`) or one
group (W&B), named by their overrides. A resumed run continues the tracked run whose id
its checkpoint keeps (:attr:`Tracker.ref`).

Every call into a tracker library is guarded: a tracker that is unreachable,
misconfigured or full warns once (naming ``logger.name`` and the error) and is not
called again, and the run goes on writing its own tables. Each backend uses its
library's own API (``mlflow.MlflowClient``, ``torch.utils.tensorboard.SummaryWriter``,
``wandb.init``); they are imported only when chosen.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from common.run.results import RunOutcome
from common.run.settings import ConfigError, RunSettings

logger = logging.getLogger(__name__)

# The package each tracker needs (installed with `pip install 'fedalign[trackers]'`).
PACKAGES = {"mlflow": "mlflow", "tensorboard": "tensorboard", "wandb": "wandb"}
SWEEP_TAG = "fedalign.sweep"  # MLflow tag naming the sweep a parent run stands for
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter's value (the JSON artifact has all)
# Connection defaults for an MLflow tracking server, unless the environment sets them:
# MLflow's own (7 retries with backoff, 120 s per request) keep an unreachable server
# waiting for minutes before the one warning.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def check_tracker(settings: RunSettings) -> None:
    """Refuse a tracker whose library is not installed here, before any work.

    Raises
    ------
    ConfigError
        ``logger.name`` names a tracker whose package cannot be imported (the message
        names the key, the value and the install command).
    """
    name = settings.logger.name
    package = PACKAGES.get(name)
    if package is not None and importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"config key 'logger.name' = {name!r} needs the {package} package, which is not "
            f"installed here: pip install 'fedalign[trackers]' (or pip install {package}), "
            "or logger=none"
        )


def redact(uri: str) -> str:
    """A URI without the password its user part may hold (``https://user:***@host``)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^/\s]*@", re.IGNORECASE)


def scrub(text: str) -> str:
    """``text`` with every URI's password masked (``scheme://user:***@``): what a tracker's
    own error messages become before they are logged, since they often quote the URI."""
    return _USERINFO.sub(r"\g<scheme>:***@", text)


def _public(settings: RunSettings) -> dict[str, Any]:
    """The settings as JSON, ``logger.uri`` without its password (what trackers keep)."""
    data = json.loads(settings.to_json())
    data["logger"]["uri"] = redact(data["logger"]["uri"])
    return data


def flat_settings(settings: RunSettings) -> dict[str, str]:
    """The settings as dotted config keys and their values as text (the tracked
    parameters; a password in ``logger.uri`` is masked); a value longer than
    :data:`MAX_PARAM_LENGTH` is cut, with ``…``."""
    flat: dict[str, str] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.")
                continue
            text = value if isinstance(value, str) else json.dumps(value)  # null, true, [..]
            if len(text) > MAX_PARAM_LENGTH:
                text = text[: MAX_PARAM_LENGTH - 1] + "…"
            flat[prefix + key] = text

    walk(_public(settings), "")
    return flat


def round_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a history row (``round`` is the step, not a metric)."""
    return {key: float(value) for key, value in row.items() if key != "round" and _finite(value)}


def final_metrics(outcome: RunOutcome) -> dict[str, float]:
    """What a finished run reports to a tracker: the mean ``accuracy``, ``clean_accuracy``
    and ``mse`` over the evaluated users, ``users_evaluated``, ``total_bytes_down`` and
    ``total_bytes_up`` (the users' traffic summed over the run, in bytes), ``wall_time_s``,
    and ``user_<k>/accuracy`` for each user ``k``."""
    results = outcome.results
    metrics: dict[str, float] = {"users_evaluated": float(len(results))}
    for column in ("accuracy", "clean_accuracy", "mse"):
        if column in results and len(results):
            metrics[column] = float(results[column].mean())
    for column in ("bytes_down", "bytes_up"):
        if column in results and len(results):
            metrics[f"total_{column}"] = float(results[column].sum())
    metrics["wall_time_s"] = float(outcome.wall_time_s)
    for user, accuracy in zip(results.get("user", []), results.get("accuracy", []), strict=True):
        metrics[f"user_{int(user)}/accuracy"] = float(accuracy)
    return {key: value for key, value in metrics.items() if _finite(value)}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def run_name(settings: RunSettings) -> str:
    """``logger.run_name``, or the method and seed."""
    return settings.logger.run_name or f"{settings.strategy.name} seed={settings.seed}"


class Tracker:
    """No tracker (``logger=none``), and the base of the real ones.

    A real tracker's calls go through :meth:`_guarded`: the first error warns once and
    turns the tracker off for the rest of the run.

    Attributes
    ----------
    ref : str
        ``<backend>:<run id>`` of the tracked run, kept in the AP's checkpoint so that a
        resumed run continues it ("" when nothing is tracked).
    """

    backend = "none"

    def __init__(self) -> None:
        self.ref = ""
        self._off = False

    @property
    def active(self) -> bool:
        return self.backend != "none" and not self._off

    def _guarded(self, what: str, call: Callable[[], Any]) -> Any:
        """``call()``; on its first error a warning and no further calls."""
        if not self.active:
            return None
        retries = logging.getLogger("urllib3.connectionpool")  # one warning, not one per retry
        level = retries.level
        retries.setLevel(logging.ERROR)
        try:
            return call()
        except Exception as exc:  # any tracker failure: the run's own tables still count
            self._off = True
            logger.warning(
                "logger=%s: could not %s (%s: %s); the run goes on without it, writing its "
                "own tables as usual",
                self.backend,
                what,
                type(exc).__name__,
                scrub(str(exc).splitlines()[0])[:1000] if str(exc) else "",
            )
            return None
        finally:
            retries.setLevel(level)

    # the events of a run -----------------------------------------------------------------
    def log_round(self, rnd: int, row: Mapping[str, Any]) -> None:
        """One history row (a training round's metrics) at step ``rnd``."""
        self._guarded(f"log round {rnd}", lambda: self._log_round(rnd, round_metrics(row)))

    def finish(self, outcome: RunOutcome, step: int) -> None:
        """The final results (at step ``step``, the last round) and the run's tables and
        precoders as artifacts; the tracked run ends as finished."""
        self._guarded("log the results", lambda: self._finish(outcome, step))

    def fail(self, reason: str, *, interrupted: bool = False) -> None:
        """End the tracked run as failed (or killed, ``interrupted``); a resumed run
        continues it."""
        self._guarded("end the run", lambda: self._fail(reason, interrupted))

    def _log_round(self, rnd: int, metrics: dict[str, float]) -> None:
        pass

    def _finish(self, outcome: RunOutcome, step: int) -> None:
        pass

    def _fail(self, reason: str, interrupted: bool) -> None:
        pass


def _artifacts(outcome: RunOutcome, settings: RunSettings, folder: Path) -> list[Path]:
    """The run's tables and precoders, and its settings as JSON, written to ``folder``."""
    written = outcome.save(folder) if len(outcome.results) else []
    path = folder / "settings.json"
    path.write_text(json.dumps(_public(settings), indent=1) + "\n")
    return [*written, path]


class MlflowTracker(Tracker):
    """A run in an MLflow tracking store (``logger.uri``), in experiment
    ``logger.experiment``; under parent run ``logger.parent`` when set."""

    backend = "mlflow"

    def __init__(self, settings: RunSettings, resumed: str = "") -> None:
        super().__init__()
        self.settings = settings
        if settings.logger.uri in _UNREACHABLE:  # warned once already in this process
            self._off = True
            return
        self._guarded(f"open the run at {redact(settings.logger.uri)}", lambda: self._open(resumed))
        if self._off:
            _UNREACHABLE.add(settings.logger.uri)

    def _open(self, resumed: str) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        self.client = _mlflow_client(self.settings.logger.uri)
        experiment = experiment_id(self.client, self.settings)
        if resumed:
            try:
                run = self.client.get_run(resumed)
            except MlflowException:  # not in this store (deleted, or another logger.uri)
                run = None
            if run is not None and run.info.lifecycle_stage == "active":
                self.run_id = resumed
                self.client.update_run(resumed, status="RUNNING")
                self.ref = f"{self.backend}:{resumed}"
                return
        parent = self.settings.logger.parent
        tags = {"mlflow.parentRunId": parent} if parent else {}
        self.run_id = self.client.create_run(
            experiment, run_name=run_name(self.settings), tags=tags
        ).info.run_id
        self.ref = f"{self.backend}:{self.run_id}"
        params = [Param(k, v) for k, v in flat_settings(self.settings).items()]
        try:
            for start in range(0, len(params), 100):  # MLflow takes 100 parameters a batch
                self.client.log_batch(self.run_id, params=params[start : start + 100])
        except Exception:
            with contextlib.suppress(Exception):  # not left RUNNING
                self.client.set_terminated(self.run_id, "FAILED")
            raise

    def _metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(k, v, now, step) for k, v in metrics.items()]
        for start in range(0, len(rows), 1000):  # MLflow takes 1,000 metrics per batch
            self.client.log_batch(self.run_id, metrics=rows[start : start + 1000])

    def _log_round(self, rnd: int, metrics: dict[str, float]) -> None:
        self._metrics(metrics, rnd)

    def _finish(self, outcome: RunOutcome, step: int) -> None:
        self._metrics(final_metrics(outcome), step)
        with tempfile.TemporaryDirectory(prefix="fedalign-artifacts-") as folder:
            _artifacts(outcome, self.settings, Path(folder))
            self.client.log_artifacts(self.run_id, folder)
        self.client.set_terminated(self.run_id, "FINISHED")

    def _fail(self, reason: str, interrupted: bool) -> None:
        self.client.set_tag(self.run_id, "fedalign.failure", reason[:5000])
        self.client.set_terminated(self.run_id, "KILLED" if interrupted else "FAILED")


# Tracking URIs at which no run could be opened in this process (unreachable, refused): the
# points of a sweep after the first warn no more and wait no more (each would wait for
# MLflow's retries again).
_UNREACHABLE: set[str] = set()


def _mlflow_client(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri``, with :data:`MLFLOW_HTTP_DEFAULTS` where the
    environment sets none (MLflow reads them from the environment: set once, process-wide)."""
    for key, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(client: Any, settings: RunSettings) -> str:
    """The id of MLflow experiment ``logger.experiment``, created when missing (with its
    artifacts beside a local SQLite store: ``<store folder>/mlartifacts``)."""
    from mlflow.exceptions import MlflowException

    name = settings.logger.experiment
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    uri = settings.logger.uri
    location = None
    if uri.startswith("sqlite:///") and not uri.endswith(":memory:"):
        location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


class TensorBoardTracker(Tracker):
    """TensorBoard event files in ``<folder>/tensorboard`` (``tensorboard --logdir``
    on the run folder, a sweep store or a parent of either)."""

    backend = "tensorboard"

    def __init__(self, settings: RunSettings, folder: Path, completed: int = 0) -> None:
        super().__init__()
        self.settings = settings
        self.folder = folder / "tensorboard"
        self._guarded(f"write events to {self.folder}", lambda: self._open(completed))

    def _open(self, completed: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # a resumed run drops what it logged after its checkpoint (those rounds are redone)
        self.writer = SummaryWriter(
            log_dir=str(self.folder), purge_step=completed + 1 if completed else None
        )
        self.ref = f"{self.backend}:{self.folder}"
        if not completed:
            rows = "\n".join(f"| {k} | {v} |" for k, v in flat_settings(self.settings).items())
            self.writer.add_text("settings", f"| setting | value |\n|---|---|\n{rows}", 0)
            self.writer.add_text("run", run_name(self.settings), 0)

    def _log_round(self, rnd: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"history/{key}", value, rnd)
        self.writer.flush()

    def _finish(self, outcome: RunOutcome, step: int) -> None:
        for key, value in final_metrics(outcome).items():
            self.writer.add_scalar(f"results/{key}", value, step)
        if len(outcome.results):
            self.writer.add_histogram(
                "results/accuracy_of_users", outcome.results.accuracy.to_numpy(), step
            )
        self.writer.close()

    def _fail(self, reason: str, interrupted: bool) -> None:
        self.writer.add_text("failure", reason)
        self.writer.close()


class WandbTracker(Tracker):
    """A W&B run in project ``logger.experiment``, group ``logger.parent``, written under
    ``<folder>/wandb`` (``logger.mode=offline``: ``wandb sync`` it later)."""

    backend = "wandb"

    def __init__(self, settings: RunSettings, folder: Path, resumed: str = "") -> None:
        super().__init__()
        self.settings = settings
        self.folder = folder
        self._guarded("start the run", lambda: self._open(resumed))

    def _open(self, resumed: str) -> None:
        import wandb

        self.folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.settings.logger.experiment,
            name=run_name(self.settings),
            group=self.settings.logger.parent,
            dir=str(self.folder),
            mode=self.settings.logger.mode,
            id=resumed or None,
            resume="allow" if resumed else None,
            config=None if resumed else flat_settings(self.settings),
            reinit="create_new",  # a lockstep batch tracks several runs in one process
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
        )
        self.ref = f"{self.backend}:{self.run.id}"

    def _log_round(self, rnd: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=rnd)

    def _finish(self, outcome: RunOutcome, step: int) -> None:
        import wandb

        self.run.summary.update(final_metrics(outcome))
        artifact = wandb.Artifact(f"run-{self.run.id}-outputs", type="run-outputs")
        with tempfile.TemporaryDirectory(prefix="fedalign-artifacts-") as folder:
            for path in _artifacts(outcome, self.settings, Path(folder)):
                artifact.add_file(str(path))  # copied to W&B's staging folder here
            self.run.log_artifact(artifact)
        self.run.finish(exit_code=0)

    def _fail(self, reason: str, interrupted: bool) -> None:
        self.run.summary["failure"] = reason[:5000]
        self.run.finish(exit_code=1)


def open_tracker(
    settings: RunSettings,
    folder: str | Path | None,
    *,
    resumed: str = "",
    completed: int = 0,
) -> Tracker:
    """The tracker of one run, started (its parameters logged) or, with ``resumed``,
    continuing the tracked run a checkpoint names.

    Parameters
    ----------
    settings : RunSettings
        The run; ``logger.*`` chooses the tracker.
    folder : path, optional
        The run's output folder (TensorBoard's event files and W&B's run folder go
        there); None: ``outputs/<backend>/<time>`` under the working folder.
    resumed : str
        :attr:`Tracker.ref` kept in the checkpoint ("" or another backend's: a new run).
    completed : int
        Rounds already done (a resumed run's).

    Returns
    -------
    Tracker
        Never raises for a tracker's own failure: that tracker warns once and is off.
    """
    name = settings.logger.name
    if name == "none":
        return Tracker()
    backend, _, run_id = resumed.partition(":")
    run_id = run_id if backend == name else ""
    if folder is None:
        stamp = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{uuid.uuid4().hex[:6]}"  # never shared
        folder = Path("outputs") / name / stamp
    folder = Path(folder)
    if name == "mlflow":
        return MlflowTracker(settings, run_id)
    if name == "tensorboard":
        return TensorBoardTracker(settings, folder, completed if run_id else 0)
    return WandbTracker(settings, folder, run_id)


def sweep_identity(points: Sequence[RunSettings]) -> str:
    """A name for a sweep's points (the same points give the same name): what a parent run
    or group stands for, so that a sweep started again continues it."""
    from common.run.points import point_key

    keys = sorted(point_key(point) for point in points)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def open_sweep(points: Sequence[RunSettings], title: str) -> str | None:
    """The parent of a sweep's tracked runs: an MLflow parent run (found by its sweep tag
    when the sweep was started before, else created as ``title``), a W&B group named after
    the sweep; None for TensorBoard, ``none``, or when MLflow cannot be reached (warned
    once)."""
    settings = points[0]
    name = settings.logger.name
    identity = sweep_identity(points)
    if name == "wandb":
        return f"sweep-{identity}"
    if name != "mlflow":
        return None
    tracker = Tracker()
    tracker.backend = name

    if settings.logger.uri in _UNREACHABLE:
        return None

    def find_or_create() -> str:
        client = _mlflow_client(settings.logger.uri)
        experiment = experiment_id(client, settings)
        found = client.search_runs(
            [experiment], filter_string=f"tags.`{SWEEP_TAG}` = '{identity}'", max_results=1
        )
        if found:
            client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        run = client.create_run(experiment, run_name=title, tags={SWEEP_TAG: identity})
        return run.info.run_id

    parent = tracker._guarded(
        f"open the sweep's parent run at {redact(settings.logger.uri)}", find_or_create
    )
    if parent is None:
        _UNREACHABLE.add(settings.logger.uri)
    return parent


def close_sweep(
    settings: RunSettings, parent: str | None, failed: bool, *, interrupted: bool = False
) -> None:
    """End an MLflow sweep's parent run: finished, failed when some point failed, or
    killed when the sweep was interrupted (started again, it goes on under the same)."""
    if settings.logger.name != "mlflow" or not parent:
        return
    tracker = Tracker()
    tracker.backend = "mlflow"
    status = "KILLED" if interrupted else "FAILED" if failed else "FINISHED"

    def close() -> None:
        _mlflow_client(settings.logger.uri).set_terminated(parent, status)

    tracker._guarded("end the sweep's parent run", close)


def run_label(overrides: Sequence[str]) -> str:
    """A run's overrides as its tracked name: the group choices (``strategy=top_k``) and the
    settings that change the numbers, without those that only say where or how it runs or
    is logged (``sweep_store``, ``experiment.progress``, ``logger...``, ``hydra...``);
    "default" when none is left."""
    results = set(RunSettings.keys(lambda scope: scope.changes_results))
    every = set(RunSettings.keys())
    kept = []
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.startswith(("logger", "hydra")) or (key in every and key not in results):
            continue
        kept.append(override)
    return " ".join(kept) or "default"


def name_runs(
    points: Sequence[tuple[Sequence[str], RunSettings]],
    title: str,
    *,
    sweep: Sequence[RunSettings] = (),
) -> tuple[list[RunSettings], str | None]:
    """Each point's settings with its tracked run named by its overrides (:func:`run_label`,
    unless ``logger.run_name`` names it) and, for the points of a
    ``sweep``, under the sweep's parent (:func:`open_sweep`, titled ``title``, unless
    ``logger.parent`` names one).

    Parameters
    ----------
    points : sequence of (sequence of str, RunSettings)
        The points to compute: each one's overrides (one per item), and its settings.
    title : str
        The parent run's name (the sweep's command line).
    sweep : sequence of RunSettings
        Every point of the sweep, finished ones included (they name the parent, so that
        a sweep started again goes on under the same one); empty: a single run.

    Returns
    -------
    list of RunSettings, str or None
        The named settings, and the parent this call opened (to :func:`close_sweep`), or
        None.
    """
    settings = [point for _, point in points]
    if not settings or settings[0].logger.name == "none":
        return settings, None
    opened = None
    if sweep and settings[0].logger.parent is None:
        opened = open_sweep(sweep, title)
    named = []
    for overrides, point in points:
        changes: dict[str, str] = {}
        if point.logger.run_name is None:
            changes["logger.run_name"] = run_label(overrides)
        if opened and point.logger.parent is None:
            changes["logger.parent"] = opened
        named.append(point.replace(**changes) if changes else point)
    return named, opened
