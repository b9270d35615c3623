"""Benchmark of the zoos: cold build, warm load, extraction throughput, on the CPU or a GPU.

Run: ``.venv/bin/python benchmarks/bench_zoo.py [--repeats N]`` (the embedded zoo), or
``... bench_zoo.py --paper [--device auto] [--images N] [--precision fp32,bf16] [--full]``.

Embedded zoo:

1. Build the default embedded zoo's assets (AP + every user: train, extract, heads)
   into an empty temporary cache. Target: <= 180 s.
2. Load it again from that (now warm) cache. Target: <= 5 s.
3. Per model, latent-extraction throughput of ``extract_latents`` (uint8 images
   in, preprocessing on the fly) against a bare timm forward of the same model
   on the same batches, preprocessed in memory beforehand. Target: ratio >= 0.9.

Paper zoo (``--paper``; randomly initialised weights, so nothing is downloaded):

4. Per model (the AP's and the ten users'), images per second at 224 px through the
   project's extraction (CIFAR-sized uint8 images in: copied to the device, converted
   and resized there, latents back as float32) against a bare timm forward of batches
   already resized and resident on the same device, at each ``--precision``. Target:
   ratio >= 0.9. Fewer than about 32 images per model on a CPU (2,048 on a GPU) time
   too little work per model for a stable ratio; ``--repeats`` takes the best of N.
5. The paper zoo's full latents (AP + 10 users, 60,000 images each, as CIFAR-10 has):
   the time the measured rates give, or with ``--full`` the time measured by extracting
   60,000 images per model. Target on a GPU: <= 10 minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

_import_started = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common.assets.latents import extract_latents  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _import_started
COLD_TARGET_S, WARM_TARGET_S, RATIO_TARGET = 180.0, 5.0, 0.9
FULL_TARGET_S = 600.0  # the paper zoo's full latents on a GPU
CIFAR_IMAGES = 60_000  # CIFAR-10's training and test images
BATCH = 256


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _best_times(repeats: int, **runs) -> dict[str, float]:
    """Best wall time of each run; runs alternate so that drifts hit all of them alike."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def throughput(cache, repeats: int) -> list[dict]:
    """Images/s of the extraction pipeline and of a bare forward, per model."""
    from common.assets.data import load_dataset
    from common.assets.store import load_encoder
    from common.assets.zoo import get_zoo

    data = load_dataset("mnist5k")
    images = data.images["train"]
    zoo = get_zoo("embedded")
    rows = []
    for spec in [zoo.ap, *zoo.group("all")]:
        model, preprocess, _ = load_encoder(spec, data, cache, progress=False)
        model.eval()
        batches = [
            preprocess(torch.from_numpy(np.array(images[i : i + BATCH])))
            for i in range(0, len(images), BATCH)
        ]

        def bare(model=model, batches=batches) -> None:
            with torch.inference_mode():
                for x in batches:
                    model(x)

        def pipeline(model=model, preprocess=preprocess) -> None:
            extract_latents(model, images, preprocess, batch_size=BATCH, progress=False)

        bare()  # warm-up: allocator, kernels
        best = _best_times(repeats, pipeline=pipeline, bare=bare)
        pipeline_s, bare_s = best["pipeline"], best["bare"]
        rows.append(
            {
                "model": spec.name,
                "input": "x".join(str(v) for v in batches[0].shape[1:]),
                "pipeline_img_s": len(images) / pipeline_s,
                "bare_img_s": len(images) / bare_s,
                "ratio": bare_s / pipeline_s,
            }
        )
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paper_throughput(
    device: torch.device, images: int, precisions: list[str], batch: int, repeats: int
) -> list[dict]:
    """Images/s per paper-zoo model and precision: the project's extraction against a bare
    forward of resident, resized batches on ``device``."""
    import timm
    import timm.data

    from common.assets.devices import exact
    from common.assets.latents import make_preprocess
    from common.assets.zoo import PAPER

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(images, 3, 32, 32), dtype=np.uint8)  # CIFAR-sized
    rows = []
    for spec in [PAPER.ap, *PAPER.users.values()]:
        model = timm.create_model(spec.timm_name, pretrained=False, num_classes=10)
        model = model.to(memory_format=torch.channels_last).eval().to(device)
        preprocess = make_preprocess(timm.data.resolve_data_config(model=model), matrix_resize=True)
        with torch.inference_mode():
            resident = [
                preprocess(torch.from_numpy(pixels[i : i + batch]).to(device))
                for i in range(0, images, batch)
            ]
        for precision in precisions:

            def bare(model=model, resident=resident, precision=precision) -> None:
                with torch.inference_mode(), exact(device, precision):
                    for x in resident:
                        model(x)
                _sync(device)

            def project(model=model, preprocess=preprocess, precision=precision) -> None:
                extract_latents(
                    model,
                    pixels,
                    preprocess,
                    batch_size=batch,
                    progress=False,
                    device=device,
                    precision=precision,
                )
                _sync(device)

            bare()  # warm-up: allocator, kernels
            project()
            best = _best_times(repeats, project=project, bare=bare)
            rows.append(
                {
                    "model": spec.name,
                    "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                    "precision": precision,
                    "input": "x".join(str(v) for v in resident[0].shape[1:]),
                    "project_img_s": images / best["project"],
                    "bare_img_s": images / best["bare"],
                    "ratio": best["bare"] / best["project"],
                }
            )
            print(
                f"  {spec.name:28s} {precision}: {rows[-1]['project_img_s']:9.1f} img/s "
                f"(bare {rows[-1]['bare_img_s']:9.1f}, ratio {rows[-1]['ratio']:.2f})",
                flush=True,
            )
        del model, resident
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def paper_full(device: torch.device, precision: str, batch: int) -> tuple[float, list[tuple]]:
    """Seconds to extract 60,000 CIFAR-sized images through every paper-zoo model (model
    creation included), and each model's seconds."""
    import timm
    import timm.data

    from common.assets.latents import make_preprocess
    from common.assets.zoo import PAPER

    pixels = np.random.default_rng(1).integers(0, 256, (CIFAR_IMAGES, 3, 32, 32), np.uint8)
    each = []
    started = time.perf_counter()
    for spec in [PAPER.ap, *PAPER.users.values()]:
        begun = time.perf_counter()
        model = timm.create_model(spec.timm_name, pretrained=False, num_classes=10)
        model = model.to(memory_format=torch.channels_last)
        preprocess = make_preprocess(timm.data.resolve_data_config(model=model), matrix_resize=True)
        latents = extract_latents(
            model, pixels, preprocess, batch_size=batch, progress=False, device=device,
            precision=precision,
        )  # fmt: skip
        _sync(device)
        each.append((spec.name, time.perf_counter() - begun, latents.shape[1]))
        print(f"  {spec.name:28s} {each[-1][1]:7.1f} s, {latents.shape}", flush=True)
        del model
    return time.perf_counter() - started, each


def paper(args) -> int:
    """``--paper``: the paper zoo's extraction throughput, and its full latents' time."""
    import pandas as pd

    from common.assets.devices import DTYPES, DeviceError, batch_size, check_device, label

    pd.set_option("display.width", 200)
    precisions = args.precision.split(",")
    unknown = [p for p in precisions if p not in DTYPES]
    if unknown:
        print(
            f"error: --precision {args.precision!r}: {', '.join(unknown)} is not one of "
            f"{', '.join(DTYPES)}",
            file=sys.stderr,
        )
        return 2
    try:
        device = check_device(args.device, "fp32")
        for precision in precisions:
            check_device(args.device, precision)
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gpu = device.type != "cpu"
    images = args.images or (2048 if gpu else 8)
    batch = args.batch_size or (batch_size(device, None) if gpu else min(BATCH, images))
    import timm

    print(
        f"device {label(device)}, torch {torch.__version__}, timm {timm.__version__}, "
        f"{torch.get_num_threads()} CPU threads; {images} images per model, batch {batch}"
    )
    print("\n(4) extraction throughput, paper zoo at 224 px (random weights):")
    rows = paper_throughput(device, images, precisions, batch, args.repeats)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format="%.2f"))
    checks = []
    for precision in precisions:
        part = table[table.precision == precision]
        worst = part.loc[part.ratio.idxmin()]
        checks.append(
            (
                worst.ratio >= RATIO_TARGET,
                f"{precision}: project/bare throughput, worst {worst.ratio:.2f} "
                f"({worst.model}) (target >= {RATIO_TARGET})",
            )
        )
        seconds = float((CIFAR_IMAGES / part.project_img_s).sum())
        print(
            f"\n(5) {precision}: the paper zoo's latents (AP + 10 users x {CIFAR_IMAGES:,} "
            f"images) at these rates: {seconds:.0f} s ({seconds / 60:.1f} min) on "
            f"{label(device)}"
        )
        if gpu and not args.full:
            checks.append(
                (
                    seconds <= FULL_TARGET_S,
                    f"{precision}: paper zoo latents from the measured rates {seconds:.0f} s "
                    f"(target <= {FULL_TARGET_S:.0f} s)",
                )
            )
    if args.full:
        precision = precisions[0]
        print(f"\n(5) {precision}: extracting {CIFAR_IMAGES:,} images through every model:")
        total, _ = paper_full(device, precision, batch)
        print(f"  total {total:.0f} s ({total / 60:.1f} min)")
        checks.append(
            (
                total <= FULL_TARGET_S,
                f"{precision}: paper zoo latents, {CIFAR_IMAGES:,} images x 11 models, "
                f"measured {total:.0f} s on {label(device)} (target <= {FULL_TARGET_S:.0f} s)",
            )
        )
    print()
    for ok, text in checks:
        print(f"{_verdict(ok)}: {text}")
    return 0 if all(ok for ok, _ in checks) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="throughput: best of N runs")
    parser.add_argument("--paper", action="store_true", help="the paper zoo (random weights)")
    parser.add_argument("--device", default="auto", help="--paper: auto, cpu, cuda, cuda:N")
    parser.add_argument(
        "--images", type=int, default=0, help="--paper: images per model (0: 2048 GPU, 8 CPU)"
    )
    parser.add_argument("--precision", default="fp32", help="--paper: fp32,bf16,fp16")
    parser.add_argument("--batch-size", type=int, default=0, help="--paper: 0: the default")
    parser.add_argument(
        "--full", action="store_true", help="--paper: time 60,000 images through every model"
    )
    args = parser.parse_args()
    if args.paper:
        return paper(args)
    return embedded(args)


def embedded(args) -> int:
    import pandas as pd

    from common.assets.cache import Cache
    from common.assets.data import load_dataset
    from common.assets.source import AssetSource
    from conf import settings

    pd.set_option("display.width", 200)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"torch {torch.__version__}, {cores} cores, imports took {IMPORT_SECONDS:.1f} s")

    with tempfile.TemporaryDirectory(prefix="fedalign-bench-") as folder:
        source = AssetSource(settings(f"cache_dir={folder}", "experiment.progress=false"))
        started = time.perf_counter()
        built = source.warm(progress=False)
        cold_s = time.perf_counter() - started
        print("\n(1) cold build, empty cache:")
        print(built.to_string(index=False, float_format="%.3f"))

        started = time.perf_counter()
        warm = AssetSource(source.settings).warm(progress=False)
        warm_s = time.perf_counter() - started
        all_cached = bool(warm.cached.all())
        print(f"\n(2) warm load: {warm_s:.2f} s, all cache hits: {all_cached}")

        torch.set_num_threads(max(1, cores or 1))
        rows = throughput(Cache(folder), args.repeats)
    table = pd.DataFrame(rows)
    images = len(load_dataset("mnist5k").labels["train"])
    print(f"\n(3) extraction throughput, {images} images, batch {BATCH}:")
    print(table.to_string(index=False, float_format="%.2f"))

    worst = min(rows, key=lambda r: r["ratio"])
    accuracies = built.clean_test_accuracy.tolist()
    checks = [
        (cold_s <= COLD_TARGET_S, f"cold build {cold_s:.1f} s (target <= {COLD_TARGET_S:.0f} s)"),
        (
            warm_s <= WARM_TARGET_S and all_cached,
            f"warm load {warm_s:.2f} s (target <= {WARM_TARGET_S:.0f} s)",
        ),
        (
            worst["ratio"] >= RATIO_TARGET,
            f"extraction/bare throughput, worst {worst['ratio']:.2f} ({worst['model']}) "
            f"(target >= {RATIO_TARGET})",
        ),
        (
            min(accuracies) >= 0.85,
            f"lowest head clean test accuracy {min(accuracies):.3f} (target >= 0.85)",
        ),
    ]
    print()
    for ok, text in checks:
        print(f"{_verdict(ok)}: {text}")
    return 0 if all(ok for ok, _ in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
