"""Build one party's assets on its own machine, before a deployed run.

    python -m launch.assets plan users.count=3        # which model each partition-id runs
    python -m launch.assets ap [overrides ...]
    python -m launch.assets user --model resnet10t --cache-dir /data/fedalign [overrides ...]

``plan`` prints, for a run's overrides, the model each user (each device's
``partition-id``) must run: a device's node config names both.

``ap`` builds (or verifies) the AP's encoder latents and nothing of any user,
in the cache the config names (``cache_dir=...`` or ``$FEDALIGN_CACHE``).
``user`` builds one device's encoder latents and classifier head into that
device's own folder, which its SuperNode then names in its node config
(``model=... cache-dir=...``). The overrides name the shared pilot set
(``data=...``, ``data.split_seed=...``) and the zoo (``users.zoo=...``,
``users.head_seed=...``); they must be the run's. A device that lacks its
assets when a run starts refuses the run with this command in the message.
"""

from __future__ import annotations

import argparse
import sys

from launch.environment import quiet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m launch.assets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parties = parser.add_subparsers(dest="party", required=True)
    plan = parties.add_parser("plan", help="the model of each user (partition-id) of a run")
    plan.add_argument("overrides", nargs="*", help="the run's Hydra overrides (users.count=...)")
    ap = parties.add_parser("ap", help="the AP's encoder latents only")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (data=..., cache_dir=...)")
    user = parties.add_parser("user", help="one user device's latents and head")
    user.add_argument("--model", required=True, help="the device's encoder (a zoo user model)")
    user.add_argument("--cache-dir", required=True, help="the device's own asset folder")
    user.add_argument("--weights-dir", help="local pretrained weights (paper zoo)")
    user.add_argument("--data-root", help="the dataset's folder (CIFAR-10)")
    user.add_argument("overrides", nargs="*", help="Hydra overrides naming the pilot set")
    args = parser.parse_args(argv)
    quiet()

    from clients.device import Device, DeviceConfigError
    from common.assets.cache import Cache, CacheError
    from common.assets.devices import DeviceError
    from common.assets.source import AssetSource
    from common.assets.zoo import get_zoo
    from common.run.settings import ConfigError
    from conf import settings

    try:
        if args.party == "plan":  # a sweep's points may differ in their users
            from conf import sweep_points

            plans = {s.users.models for _, s in sweep_points(" ".join(args.overrides))}
            for number, models in enumerate(sorted(plans, key=len)):
                if len(plans) > 1:
                    print(f"# users of the sweep's points ({number + 1} of {len(plans)})")
                for index, model in enumerate(models):
                    print(f"partition-id={index} model={model}")
            return 0
        run = settings(*args.overrides)
        if args.party == "ap":
            source = AssetSource(run)
            parties = source.parties()[:1]
        else:
            known = get_zoo(run.users.zoo).users
            if args.model not in known:
                raise DeviceConfigError(
                    f"--model {args.model!r} is not a user model of zoo "
                    f"{run.users.zoo!r} (known: {', '.join(known)})"
                )
            device = Device(0, args.model, args.cache_dir, args.weights_dir, args.data_root)
            own = device.source(run)
            assert isinstance(own, AssetSource)
            source = AssetSource(own.settings)  # builds what is missing
            parties = [("user", get_zoo(run.users.zoo).users[args.model])]
        table = source.warm(
            progress=run.experiment.progress, parties=parties, heads=args.party == "user"
        )
    except (ConfigError, DeviceConfigError, CacheError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"cache: {Cache(source.settings.cache_dir).root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
