"""Flower simulation against the in-process driver: wall time, per-round overhead, memory.

    .venv/bin/python benchmarks/bench_flower.py [--skip-default] [--skip-paper-scale]

1. The default run (embedded zoo, all users, federated, 30 rounds, u = 4, 4x4, 20 dB)
   through Flower (Ray, 1 CPU per user) and in-process: both wall times, their ratio,
   and the per-round overhead (difference / rounds). Target <= 150 ms per round.
2. Paper scale on synthetic latents: 10 users, n = 50,000 pilots, AP dim 192, user
   dims 384-768, u = 4, 4x4, 30 rounds. Targets: Flower's wall time within 1.3x and its
   peak memory within 1.5x of in-process.
Peak memory is sampled every 0.25 s during each run: the machine's memory in use above
its level at the start (the figure the targets use), and, over this process and every
process below it (the simulation, Ray), every 2.5 s, summed proportional set sizes (PSS)
and summed resident sizes (RSS, which counts shared pages once per process).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from benchmarks._common import PeakMemory, verdict  # noqa: E402
from common.run.driver import run_experiment  # noqa: E402
from common.run.settings import RunSettings  # noqa: E402
from common.run.sources import ProblemSource, SyntheticSource  # noqa: E402
from conf import settings as configured  # noqa: E402
from launch.simulation import simulate  # noqa: E402


def compare(
    name: str, settings: RunSettings, source: ProblemSource
) -> tuple[float, float, float, float]:
    with PeakMemory() as mem_ref:  # both sides load their inputs within what is measured
        start = time.perf_counter()
        reference = run_experiment(source.problem(), settings)
        t_ref = time.perf_counter() - start
    with PeakMemory() as mem_fl:
        start = time.perf_counter()
        outcome = simulate(settings, source)
        t_fl = time.perf_counter() - start
    rounds = settings.experiment.rounds
    same = outcome.results.accuracy.tolist() == reference.results.accuracy.tolist()
    print(
        f"\n[{name}] {settings.num_users} users, {settings.experiment.rounds} rounds, "
        f"method {settings.strategy.name}"
    )
    print(f"    in-process: {t_ref:7.2f} s   {mem_ref}")
    print(f"    Flower    : {t_fl:7.2f} s   {mem_fl}")
    print(
        f"    ratio Flower/in-process {t_fl / t_ref:.2f}x; overhead per round "
        f"{1000 * (t_fl - t_ref) / rounds:.0f} ms (whole run incl. Ray start-up)"
    )
    steady = outcome.history.seconds.iloc[1:]  # round 1 includes building the users in Ray
    ref_round = reference.history.seconds.iloc[1:].mean()
    extra = 1000 * (steady.mean() - ref_round)
    print(
        f"    steady-state Flower round {1000 * steady.mean():.0f} ms vs in-process "
        f"{1000 * ref_round:.0f} ms: {extra:.0f} ms overhead"
    )
    first, ref_first = outcome.history.seconds.iloc[0], reference.history.seconds.iloc[0]
    print(
        f"    first round (users built) {first:.1f} s vs {ref_first:.1f} s; outside the rounds "
        f"(start-up, inputs, evaluation, writing) {t_fl - outcome.history.seconds.sum():.1f} s "
        f"vs {t_ref - reference.history.seconds.sum():.1f} s"
    )
    print(
        f"    same per-user accuracy: {same}; mean accuracy {outcome.results.accuracy.mean():.4f}"
    )
    return t_fl, t_ref, steady.mean() - ref_round, mem_fl.system / max(mem_ref.system, 1)


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
        _, _, overhead, _ = compare("default run", settings, AssetSource(settings))
        print("    " + verdict("steady-state overhead per round", 1000 * overhead, 150, "ms"))
    if not args.skip_paper_scale:
        dims = (384, 768, 384, 768, 384, 768, 384, 768, 384, 768)
        source = SyntheticSource(n=args.n, n_test=2_000, ap_dim=192, user_dims=dims, classes=10)
        names = tuple(f"synthetic{dim}_{k}" for k, dim in enumerate(dims))  # display names
        settings = configured("experiment.progress=false").replace(models=names, rounds=30)
        t_fl, t_ref, _, memory = compare("paper scale, synthetic", settings, source)
        print("    " + verdict("wall time, Flower / in-process", t_fl / t_ref, 1.3, "x"))
        print("    " + verdict("peak memory, Flower / in-process", memory, 1.5, "x"))


if __name__ == "__main__":
    main()
