"""Everything a scenario needs, built once and cached: latents and classifier heads.

This is the entry point for the rest of the project. ``load_scenario`` gives
the AP's latents and every user's latents and head; ``load_ap`` and
``load_user`` give one party only (a client on another machine loads just its
own model). Each asset is cached under a key that chains everything it
depends on: encoder spec -> training data -> latents -> head settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import numbers
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from common.cache import Cache, key_digest
from common.data import SPLITS, ImageSplits, load_dataset
from common.heads import (
    HEAD_DEFAULTS,
    ClassifierHead,
    accuracy,
    head_from_state,
    head_state,
    train_head,
)
from common.latents import Preprocess, extract_latents, make_preprocess
from common.zoo import (
    EncoderSpec,
    Zoo,
    create_encoder,
    data_config,
    find_weights_file,
    get_zoo,
    param_count,
    train_encoder,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelLatents:
    """One encoder's latents (float32, N x dim) for every split."""

    model: str
    timm_name: str
    dim: int
    splits: dict[str, np.ndarray]
    cache_key: str = field(default="", compare=False)
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class HeadAsset:
    """A classifier head trained on one model's clean latents."""

    model: str
    seed: int
    state: dict[str, np.ndarray]
    clean_test_accuracy: float
    val_accuracy: float
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def module(self) -> ClassifierHead:
        return head_from_state(self.state)


@dataclass(frozen=True)
class Scenario:
    """The AP's latents and head, and the latents and heads of the chosen users."""

    dataset: str
    zoo: str
    group: str
    labels: dict[str, np.ndarray]
    num_classes: int
    ap: ModelLatents
    ap_head: HeadAsset
    users: tuple[ModelLatents, ...]
    heads: tuple[HeadAsset, ...]


# --------------------------------------------------------------------------- building blocks
@contextlib.contextmanager
def _all_cores() -> Iterator[None]:
    """Build with one torch thread per available core, then restore the setting."""
    previous = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, cores or 1))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_DIGESTS[memo] = digest.hexdigest()
    return _FILE_DIGESTS[memo]


def _weights_source(spec: EncoderSpec, weights_dir: str | Path | None) -> tuple[Path | None, Any]:
    """Where pretrained weights come from, and how that enters the cache key."""
    if not spec.pretrained:
        return None, None
    if weights_dir is None:
        return None, {"hub": spec.timm_name}
    path = find_weights_file(spec, weights_dir)
    return path, {"file_sha256": _file_digest(path)}


def encoder_key(spec: EncoderSpec, data: ImageSplits, weights: Any = None) -> dict:
    """Everything that determines an encoder's weights."""
    key: dict[str, Any] = {
        "spec": spec.key(),
        "timm": timm.__version__,  # model definitions may change between releases
        "in_chans": data.channels,
        "num_classes": data.num_classes,
    }
    if spec.pretrained:
        key["weights"] = weights
    else:
        key["train_data"] = data.split_fingerprint("train")
    return key


def _state_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: t.detach().cpu().numpy().copy() for name, t in model.state_dict().items()}


def _encoder(
    spec: EncoderSpec,
    data: ImageSplits,
    cache: Cache,
    weights_file: Path | None,
    progress: bool,
) -> tuple[torch.nn.Module, dict]:
    """A ready encoder: trained (embedded, weights cached) or pretrained (loaded)."""
    if spec.pretrained:
        started = time.perf_counter()
        model = create_encoder(
            spec, in_chans=3, num_classes=data.num_classes, weights_file=weights_file
        )
        seconds = time.perf_counter() - started
        return model, {"params": param_count(model), "encoder_seconds": seconds}

    def build() -> tuple[dict[str, np.ndarray], dict]:
        model, info = train_encoder(
            spec,
            data.images["train"],
            data.labels["train"],
            num_classes=data.num_classes,
            progress=progress,
        )
        return _state_arrays(model), {
            "params": info["params"],
            "encoder_seconds": info["train_seconds"],
        }

    state, meta, hit = cache.get_or_build("encoder", encoder_key(spec, data), build)
    model = create_encoder(spec, in_chans=data.channels, num_classes=data.num_classes)
    model.load_state_dict({name: torch.from_numpy(array) for name, array in state.items()})
    model.eval()
    return model, {**meta, "encoder_cached": hit}


def load_encoder(
    spec: EncoderSpec,
    data: ImageSplits,
    cache: Cache,
    *,
    progress: bool = True,
    weights_dir: str | Path | None = None,
) -> tuple[torch.nn.Module, Preprocess, dict]:
    """A ready encoder with its uint8 -> input transform (to encode new images).

    Embedded encoders come from the cache (trained on a miss); pretrained ones
    are loaded from the hub or ``weights_dir``.
    """
    weights_file, _ = _weights_source(spec, weights_dir)
    model, meta = _encoder(spec, data, cache, weights_file, progress)
    preprocess = make_preprocess(data_config(spec, model, data.images["train"].shape[1:]))
    return model, preprocess, meta


def encoder_latents(
    spec: EncoderSpec,
    data: ImageSplits,
    cache: Cache,
    *,
    progress: bool = True,
    weights_dir: str | Path | None = None,
) -> ModelLatents:
    """Latents of every split for one encoder, built (train/load, extract) or cached."""
    weights_file, weights = _weights_source(spec, weights_dir)
    key = {"encoder": encoder_key(spec, data, weights), "data": data.fingerprint}

    def build() -> tuple[dict[str, np.ndarray], dict]:
        started = time.perf_counter()
        with _all_cores():
            model, preprocess, meta = load_encoder(
                spec, data, cache, progress=progress, weights_dir=weights_dir
            )
            arrays = {
                split: extract_latents(
                    model, data.images[split], preprocess, progress=spec.name if progress else False
                )
                for split in SPLITS
            }
        meta["build_seconds"] = time.perf_counter() - started
        return arrays, meta

    started = time.perf_counter()
    arrays, meta, hit = cache.get_or_build("latents", key, build)
    meta = {**meta, "cached": hit, "seconds": time.perf_counter() - started}
    return ModelLatents(
        model=spec.name,
        timm_name=spec.timm_name,
        dim=int(arrays["train"].shape[1]),
        splits={split: arrays[split] for split in SPLITS},
        cache_key=key_digest(key),
        meta=meta,
    )


def head_asset(latents: ModelLatents, data: ImageSplits, seed: int, cache: Cache) -> HeadAsset:
    """The classifier head of one model, trained on its clean latents, or cached."""
    if not latents.cache_key:
        raise ValueError(f"latents of {latents.model!r} carry no cache_key: use encoder_latents")
    key = {"latents": latents.cache_key, "seed": seed, "settings": HEAD_DEFAULTS}

    def build() -> tuple[dict[str, np.ndarray], dict]:
        started = time.perf_counter()
        z, y = latents.splits, data.labels
        head, info = train_head(
            z["train"],
            y["train"],
            z["val"],
            y["val"],
            num_classes=data.num_classes,
            seed=seed,
            **HEAD_DEFAULTS,
        )
        info["clean_test_accuracy"] = accuracy(head, z["test"], y["test"])
        info["build_seconds"] = time.perf_counter() - started
        return head_state(head), info

    state, meta, hit = cache.get_or_build("head", key, build)
    return HeadAsset(
        model=latents.model,
        seed=seed,
        state=state,
        clean_test_accuracy=float(meta["clean_test_accuracy"]),
        val_accuracy=float(meta["val_accuracy"]),
        meta={**meta, "cached": hit},
    )


# --------------------------------------------------------------------------- scenarios
def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Context:
    zoo: Zoo
    specs: list[EncoderSpec]
    data: ImageSplits
    cache: Cache


def _context(
    zoo: str,
    group: str,
    dataset: str,
    users: int | None,
    split_seed: int,
    cache: Cache | None,
    data_root: str | Path | None,
) -> _Context:
    chosen = get_zoo(zoo)
    specs = chosen.group(group)
    if users is not None:
        if not _is_int(users) or not 1 <= users <= len(specs):
            raise ValueError(
                f"users={users!r} must be an integer from 1 to {len(specs)}, "
                f"the size of group {group!r} of zoo {zoo!r}"
            )
        specs = specs[:users]
    data = load_dataset(dataset, root=data_root, split_seed=split_seed)
    return _Context(chosen, specs, data, cache if cache is not None else Cache())


def _party(
    spec: EncoderSpec, ctx: _Context, head_seed: int, progress: bool, weights_dir: Any
) -> tuple[ModelLatents, HeadAsset]:
    latents = encoder_latents(spec, ctx.data, ctx.cache, progress=progress, weights_dir=weights_dir)
    head = head_asset(latents, ctx.data, head_seed, ctx.cache)
    logger.info(
        "%s: %d-d latents (%s), head clean test accuracy %.3f",
        spec.name,
        latents.dim,
        "cached" if latents.meta["cached"] else "built",
        head.clean_test_accuracy,
    )
    return latents, head


def load_scenario(
    *,
    zoo: str = "embedded",
    group: str = "all",
    dataset: str = "mnist5k",
    users: int | None = None,
    head_seed: int = 0,
    split_seed: int = 0,
    cache: Cache | None = None,
    data_root: str | Path | None = None,
    weights_dir: str | Path | None = None,
    progress: bool = True,
) -> Scenario:
    """The AP and the first ``users`` users of ``group`` (all by default)."""
    ctx = _context(zoo, group, dataset, users, split_seed, cache, data_root)
    ap, ap_head = _party(ctx.zoo.ap, ctx, head_seed, progress, weights_dir)
    parties = [_party(spec, ctx, head_seed, progress, weights_dir) for spec in ctx.specs]
    return Scenario(
        dataset=dataset,
        zoo=zoo,
        group=group,
        labels=dict(ctx.data.labels),
        num_classes=ctx.data.num_classes,
        ap=ap,
        ap_head=ap_head,
        users=tuple(latents for latents, _ in parties),
        heads=tuple(head for _, head in parties),
    )


def load_user(
    zoo: str = "embedded",
    group: str = "all",
    index: int = 0,
    dataset: str = "mnist5k",
    head_seed: int = 0,
    *,
    split_seed: int = 0,
    cache: Cache | None = None,
    data_root: str | Path | None = None,
    weights_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[ModelLatents, HeadAsset, dict[str, np.ndarray]]:
    """One user's latents, head and labels (what a client on its own machine needs)."""
    ctx = _context(zoo, group, dataset, None, split_seed, cache, data_root)
    if not _is_int(index) or not 0 <= index < len(ctx.specs):
        raise ValueError(
            f"index={index!r} must be an integer from 0 to {len(ctx.specs) - 1} "
            f"(group {group!r} of zoo {zoo!r} has {len(ctx.specs)} users)"
        )
    latents, head = _party(ctx.specs[index], ctx, head_seed, progress, weights_dir)
    return latents, head, dict(ctx.data.labels)


load_user_assets = load_user


def load_ap(
    zoo: str = "embedded",
    dataset: str = "mnist5k",
    *,
    split_seed: int = 0,
    cache: Cache | None = None,
    data_root: str | Path | None = None,
    weights_dir: str | Path | None = None,
    progress: bool = True,
) -> ModelLatents:
    """The AP's latents (the AP needs no classifier)."""
    ctx = _context(zoo, "all", dataset, None, split_seed, cache, data_root)
    return encoder_latents(
        ctx.zoo.ap, ctx.data, ctx.cache, progress=progress, weights_dir=weights_dir
    )


def main_table(scenario: Scenario) -> Any:
    """One row per party: model, latent size, head accuracies, built or cached, timing."""
    import pandas as pd

    rows = []
    parties = [("ap", scenario.ap, scenario.ap_head)]
    parties += [
        (f"user{i}", z, h)
        for i, (z, h) in enumerate(zip(scenario.users, scenario.heads, strict=True))
    ]
    for role, latents, head in parties:
        params = latents.meta.get("params")
        built = not latents.meta.get("cached", True) or not head.meta.get("cached", True)
        rows.append(
            {
                "role": role,
                "model": latents.model,
                "timm_name": latents.timm_name,
                "latent_dim": latents.dim,
                "params_M": round(params / 1e6, 2) if params else None,
                "head_val_accuracy": head.val_accuracy,
                "clean_test_accuracy": head.clean_test_accuracy,
                "built_or_cached": "built" if built else "cached",
                "build_seconds": round(
                    latents.meta.get("build_seconds", 0.0) + head.meta.get("build_seconds", 0.0), 1
                ),
            }
        )
    return pd.DataFrame(rows)
