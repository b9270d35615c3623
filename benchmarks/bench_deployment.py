"""A deployed run on loopback against the same run simulated: where a deployment's time goes.

    .venv/bin/python benchmarks/bench_deployment.py [--users 2] [--rounds 4]
    .venv/bin/python benchmarks/bench_deployment.py --rounds 16 --kill-after 3

With ``--kill-after R``, user 1's SuperNode is killed with SIGKILL once round R has
ended (a crash: no goodbye), then started again in a restart loop (every 2 s); it
prints when the SuperLink accepted it again and which rounds the user lost.

Brings up a secure local federation (``launch.federation``: TLS, SuperNode
authentication, each device's own built assets), runs the default config with
``--users`` users and ``--rounds`` rounds on it and through the Flower simulation, and
prints each one's seconds per round (from ``history.csv``) and wall time. Flower's
deployment runtime starts a fresh ClientApp process for every message, so a round
costs each user a process start, the imports and reading its assets; the simulation's
Ray actors live for the whole run. Every process started is stopped at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.run.results import RunOutcome  # noqa: E402
from conf import settings, split_overrides  # noqa: E402
from launch.federation import Federation  # noqa: E402
from launch.simulation import simulate  # noqa: E402


def crash(federation: Federation, out: Path, after: int, model: str) -> None:
    """Kill user 1's SuperNode once round ``after`` has ended; restart it in a loop."""
    import pandas as pd

    history = out / "history.csv"
    while not history.exists() or len(pd.read_csv(history)) < after:
        time.sleep(0.2)
    time.sleep(1.0)  # the next round is under way
    federation.kill_supernode(1)
    killed = time.perf_counter()
    starts = federation.restart_supernode(1, model)
    back = time.perf_counter() - killed - 10.0  # its last start stayed up 10 s
    print(f"user 1's SuperNode killed (SIGKILL) during round {after + 1}; the restart loop's")
    print(f"start {starts} was accepted, {back:.0f} s after the kill")


def report_crash(deployed: RunOutcome) -> None:
    failed = deployed.failures[deployed.failures.user == 1]
    print(f"rounds user 1 lost: {sorted(set(failed['round']))} ({', '.join(failed.reason)})")
    print(f"round seconds: {' '.join(f'{v:.0f}' for v in deployed.history.seconds)}")
    print(f"users answering per round: {deployed.history.responded.tolist()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--port", type=int, default=18600)
    parser.add_argument("--kill-after", type=int, help="kill user 1's SuperNode after this round")
    args = parser.parse_args()
    overrides = (
        f"users.count={args.users} experiment.rounds={args.rounds} experiment.progress=false"
    )
    run = settings(*split_overrides(overrides))

    with tempfile.TemporaryDirectory(prefix="fedalign-bench-") as tmp:
        federation = Federation(Path(tmp) / "federation", args.port)
        try:
            started = time.perf_counter()
            federation.up(run.users.models)
            up = time.perf_counter() - started
            started = time.perf_counter()
            run_id = federation.submit(overrides, Path(tmp) / "deployed")
            if args.kill_after:
                crash(federation, Path(tmp) / "deployed", args.kill_after, run.users.models[1])
            status = federation.wait(run_id, timeout=3600)
            deployed_wall = time.perf_counter() - started
        finally:
            federation.down()
            deployed = RunOutcome.load(Path(tmp) / "deployed")
    if args.kill_after:
        report_crash(deployed)
    started = time.perf_counter()
    simulated = simulate(run)
    simulated_wall = time.perf_counter() - started

    print(
        f"federation up (certificates, keys, {args.users} devices with their assets, "
        f"processes): {up:.1f} s"
    )
    print(f"deployed run: {status}, wall {deployed_wall:.1f} s")
    print(f"{'':24}{'deployed':>10}{'simulated':>11}")
    for rnd, (a, b) in enumerate(
        zip(deployed.history.seconds, simulated.history.seconds, strict=True), start=1
    ):
        print(f"round {rnd:<18}{a:>9.2f}s{b:>10.2f}s")
    print(
        f"{'mean seconds per round':24}{deployed.history.seconds.mean():>9.2f}s"
        f"{simulated.history.seconds.mean():>10.2f}s"
    )
    print(f"{'wall time (run only)':24}{deployed_wall:>9.1f}s{simulated_wall:>10.1f}s")
    same = (deployed.results.accuracy.to_numpy() == simulated.results.accuracy.to_numpy()).all()
    print(f"accuracies equal: {bool(same)} (mean {deployed.results.accuracy.mean():.4f})")


if __name__ == "__main__":
    main()
