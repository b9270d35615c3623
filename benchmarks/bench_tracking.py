"""The deployment phase (tracking.*): what a slot costs, in process and through Flower.

    .venv/bin/python benchmarks/bench_tracking.py [--slots 40] [--skip-flower]

The default run (embedded zoo, 8 users, 4x4, u = 4, 20 dB, 30 rounds) on CDL-C at
3.5 GHz and 30 km/h, then ``--slots`` slots of 0.25 ms under each policy: none,
equalizer every 4 slots on 64 pilots, full every 16 slots (2 rounds). Printed per run:
the wall time of the deployment phase alone (the run's minus a run without one), its time
per user-slot, and the user side's share that is the channel itself (a TR 38.901
realisation evolved to the slot's time, through Sionna, per user and slot).

Targets on this machine: a user-slot of `none` costs <= 100 ms in process (it decodes
and classifies the 1,000 test images); Flower's deployment phase within 2x of the
in-process one (a slot is one message per user, as a round is).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch.environment import quiet  # noqa: E402

quiet()

from benchmarks._common import verdict  # noqa: E402
from common.assets.source import AssetSource  # noqa: E402
from common.run.driver import build_parties, run_experiment  # noqa: E402
from conf import settings as configured  # noqa: E402

POLICIES = {
    "none": {"tracking.policy": "none"},
    "equalizer": {"tracking.policy": "equalizer", "tracking.every": 4, "tracking.pilots": 64},
    "full": {"tracking.policy": "full", "tracking.every": 16, "tracking.rounds": 2},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, default=40)
    parser.add_argument("--skip-flower", action="store_true")
    args = parser.parse_args()
    base = configured(
        "experiment.progress=false",
        "channel=cdl",
        "communication.profile=C",
        "communication.speed=8.333",
        f"tracking.slots={args.slots}",
        "tracking.slot_duration=0.00025",
    )
    floor_run = base.replace(**{"tracking.slots": 0, "communication.speed": 0.0})
    source = AssetSource(base)
    problem = source.problem()
    started = time.perf_counter()
    run_experiment(problem, floor_run)
    training = time.perf_counter() - started
    print(f"training and evaluation alone, in process: {training:.1f} s")
    users = base.num_users
    _, parties = build_parties(problem, base)
    started = time.perf_counter()
    for slot in range(1, args.slots + 1):
        for user in parties:
            user.channels_at(slot * 0.25e-3, slot)
    channel = (time.perf_counter() - started) / (args.slots * users)
    print(f"the channel per user-slot (Sionna CDL-C, evolved): {1e3 * channel:.1f} ms")
    runs = {"in process": lambda s: run_experiment(problem, s)}
    if not args.skip_flower:
        from launch.simulation import simulate

        runs["Flower"] = lambda s: simulate(s, source)
    for name, run in runs.items():
        if name == "Flower":  # the same run without a deployment phase, through Flower
            started = time.perf_counter()
            run(floor_run)
            floor = time.perf_counter() - started
        else:
            floor = training
        for policy, options in POLICIES.items():
            point = base.replace(**options)
            started = time.perf_counter()
            outcome = run(point)
            phase = time.perf_counter() - started - floor
            per = phase / (args.slots * users)
            accuracy = outcome.tracking.accuracy.mean()
            print(
                f"{name:10} {policy:9}: deployment {phase:6.1f} s, {1e3 * per:6.1f} ms per "
                f"user-slot (channel {100 * channel / per:4.1f} %), mean accuracy {accuracy:.4f}"
            )
            if policy == "none":
                print(verdict(f"{name} none, per user-slot", 1e3 * per, 100.0, "ms"))
                if name == "in process":
                    in_process = phase
                else:
                    print(verdict("Flower / in process, none", phase / in_process, 2.0, "x"))


if __name__ == "__main__":
    main()
