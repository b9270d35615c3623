"""Benchmark of the embedded zoo: cold build, warm load, extraction throughput.

Run: ``.venv/bin/python benchmarks/bench_zoo.py [--repeats N]``

1. Build the default embedded zoo's assets (AP + every user: train, extract, heads)
   into an empty temporary cache. Target: <= 180 s.
2. Load it again from that (now warm) cache. Target: <= 5 s.
3. Per model, latent-extraction throughput of ``extract_latents`` (uint8 images
   in, preprocessing on the fly) against a bare timm forward of the same model
   on the same batches, preprocessed in memory beforehand. Target: ratio >= 0.9.
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

from common.assets.cache import Cache  # noqa: E402
from common.assets.data import load_dataset  # noqa: E402
from common.assets.latents import extract_latents  # noqa: E402
from common.assets.source import AssetSource  # noqa: E402
from common.assets.store import load_encoder  # noqa: E402
from common.assets.zoo import get_zoo  # noqa: E402
from conf import settings  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _import_started
COLD_TARGET_S, WARM_TARGET_S, RATIO_TARGET = 180.0, 5.0, 0.9
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


def throughput(cache: Cache, repeats: int) -> list[dict]:
    """Images/s of the extraction pipeline and of a bare forward, per model."""
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="throughput: best of N runs")
    args = parser.parse_args()

    import pandas as pd

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
