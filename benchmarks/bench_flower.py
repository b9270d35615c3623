"""Flower simulation against the in-process driver: wall time, per-round overhead, memory.

    .venv/bin/python benchmarks/bench_flower.py [--skip-default] [--skip-paper-scale]

1. The default run (embedded zoo, all users, federated, 30 rounds, u = 4, 4x4, 20 dB)
   through Flower (Ray, 1 CPU per user) and in-process: both wall times, their ratio,
   and the per-round overhead (difference / rounds). Target <= 150 ms per round.
2. Paper scale on synthetic latents: 10 users, n = 50,000 pilots, AP dim 192, user
   dims 384-768, u = 4, 4x4, 30 rounds. Target: Flower within 1.5x of in-process.
Peak memory is the largest sum of resident memory over this process and every Ray
process, sampled every 0.2 s during the run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from benchmarks._common import verdict  # noqa: E402
from common.run.driver import run_experiment  # noqa: E402
from common.run.settings import RunSettings  # noqa: E402
from common.run.sources import ProblemSource, SyntheticSource  # noqa: E402
from conf import settings as configured  # noqa: E402
from launch.simulation import simulate  # noqa: E402


def _rss_bytes(pid: str) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cmdline(pid: str) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace")


class PeakMemory:
    """Samples the resident memory of this process plus every Ray process (Linux /proc)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _sample(self) -> int:
        total = 0
        me = str(os.getpid())
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError, ValueError, IndexError):
                if pid == me or "ray" in _cmdline(pid):
                    total += _rss_bytes(pid)
        return total

    def __enter__(self) -> PeakMemory:
        def loop():
            while not self._stop.is_set():
                self.peak = max(self.peak, self._sample())
                time.sleep(self.interval)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def gib(self) -> float:
        return self.peak / 2**30


def compare(name: str, settings: RunSettings, source: ProblemSource) -> tuple[float, float, float]:
    problem = source.problem()
    with PeakMemory() as mem_ref:
        start = time.perf_counter()
        reference = run_experiment(problem, settings)
        t_ref = time.perf_counter() - start
    del problem
    with PeakMemory() as mem_fl:
        start = time.perf_counter()
        outcome = simulate(settings, source)
        t_fl = time.perf_counter() - start
    rounds = settings.rounds
    same = outcome.results.accuracy.tolist() == reference.results.accuracy.tolist()
    print(
        f"\n[{name}] {settings.num_users} users, {settings.rounds} rounds, method {settings.method}"
    )
    print(f"    in-process: {t_ref:7.2f} s   peak memory {mem_ref.gib:5.2f} GiB")
    print(f"    Flower    : {t_fl:7.2f} s   peak memory {mem_fl.gib:5.2f} GiB (all Ray processes)")
    print(f"    ratio Flower/in-process {t_fl / t_ref:.2f}x; overhead per round "
          f"{1000 * (t_fl - t_ref) / rounds:.0f} ms (whole run incl. Ray start-up)")  # fmt: skip
    steady = outcome.history.seconds.iloc[1:]  # round 1 includes building the users in Ray
    ref_round = reference.history.seconds.iloc[1:].mean()
    extra = 1000 * (steady.mean() - ref_round)
    print(f"    steady-state Flower round {1000 * steady.mean():.0f} ms vs in-process "
          f"{1000 * ref_round:.0f} ms: {extra:.0f} ms overhead")  # fmt: skip
    print(
        f"    same per-user accuracy: {same}; mean accuracy {outcome.results.accuracy.mean():.4f}"
    )
    return t_fl, t_ref, steady.mean() - ref_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-default", action="store_true")
    parser.add_argument("--skip-paper-scale", action="store_true")
    parser.add_argument("--n", type=int, default=50_000)
    args = parser.parse_args()
    if not args.skip_default:
        from common.assets.source import AssetSource

        settings = configured("experiment.progress=false")
        AssetSource(settings).warm(progress=False)
        _, _, overhead = compare("default run", settings, AssetSource(settings))
        print("    " + verdict("steady-state overhead per round", 1000 * overhead, 150, "ms"))
    if not args.skip_paper_scale:
        dims = (384, 768, 384, 768, 384, 768, 384, 768, 384, 768)
        source = SyntheticSource(n=args.n, n_test=2_000, ap_dim=192, user_dims=dims, classes=10)
        names = tuple(source.user_data(k).name + f"_{k}" for k in range(len(dims)))
        settings = configured("experiment.progress=false").replace(models=names, rounds=30)
        t_fl, t_ref, _ = compare("paper scale, synthetic", settings, source)
        print("    " + verdict("Flower / in-process", t_fl / t_ref, 1.5, "x"))


if __name__ == "__main__":
    main()
