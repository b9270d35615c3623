"""Latents and classifier heads of one encoder, built once and cached.

:func:`encoder_latents` gives an encoder's latents of every split and
:func:`head_asset` the classifier head trained on them. Each asset is cached
under a key that chains everything it depends on: encoder spec -> training
data -> latents -> head settings. :class:`~common.assets.source.AssetSource`
turns them into a run's inputs, one party at a time.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.assets import devices
from common.assets.cache import Cache, file_sha256, key_digest
from common.assets.data import SPLITS, ImageSplits
from common.assets.heads import HEAD_DEFAULTS, ClassifierHead, accuracy, head_from_state, train_head
from common.assets.latents import Preprocess, extract_latents, make_preprocess
from common.assets.zoo import EncoderSpec

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
    checksum: str = field(default="", compare=False)  # SHA-256 of the cached arrays file


@dataclass(frozen=True)
class HeadAsset:
    """A classifier head trained on one model's clean latents."""

    model: str
    seed: int
    state: dict[str, np.ndarray]
    clean_test_accuracy: float
    val_accuracy: float
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    checksum: str = field(default="", compare=False)  # SHA-256 of the cached arrays file

    def module(self) -> ClassifierHead:
        return head_from_state(self.state)


# timm (about 1.5 s to import) is loaded only to build an encoder: a party that reads its
# cached latents and head, as a user device does for every message, never needs it.
class _LazyEncoders:
    def __getattr__(self, name: str):
        from common.assets import encoders as module

        return getattr(module, name)


encoders = _LazyEncoders()


@functools.lru_cache(maxsize=1)
def _timm_version() -> str:
    """timm's version, from its package metadata (the same string as ``timm.__version__``)."""
    from importlib.metadata import version

    return version("timm")


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


@functools.lru_cache(maxsize=64)
def _weights_digest(path: str, size: int, mtime_ns: int) -> str:
    """Digest of a weights file, remembered while the file is unchanged."""
    return file_sha256(Path(path))


def _weights_source(spec: EncoderSpec, weights_dir: str | Path | None) -> tuple[Path | None, Any]:
    """Where pretrained weights come from, and how that enters the cache key."""
    if not spec.pretrained:
        return None, None
    if weights_dir is None:
        return None, {"hub": spec.timm_name}
    path = encoders.find_weights_file(spec, weights_dir)
    stat = path.stat()
    return path, {
        "file_sha256": _weights_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    }


def encoder_key(spec: EncoderSpec, data: ImageSplits, weights: Any = None) -> dict:
    """Everything that determines an encoder's weights."""
    key: dict[str, Any] = {
        "spec": spec.key(),
        "timm": _timm_version(),  # model definitions may change between releases
        "in_chans": data.channels,
        "num_classes": data.num_classes,
    }
    if spec.pretrained:
        key["weights"] = weights
    else:
        key["train_data"] = data.split_fingerprint("train")
    return key


def _encoder(
    spec: EncoderSpec,
    data: ImageSplits,
    cache: Cache,
    weights_file: Path | None,
    progress: bool,
) -> tuple[torch.nn.Module, dict]:
    """A ready encoder (on the CPU): trained (embedded, weights cached; always on the CPU,
    see :mod:`common.assets.devices`) or pretrained (loaded)."""
    if spec.pretrained:
        started = time.perf_counter()
        model = encoders.create_encoder(
            spec, in_chans=3, num_classes=data.num_classes, weights_file=weights_file
        )
        seconds = time.perf_counter() - started
        return model, {"params": encoders.param_count(model), "encoder_seconds": seconds}

    def build() -> tuple[dict[str, np.ndarray], dict]:
        model, info = encoders.train_encoder(
            spec,
            data.images["train"],
            data.labels["train"],
            num_classes=data.num_classes,
            progress=progress,
        )
        return encoders.state_arrays(model), {
            "params": info["params"],
            "encoder_seconds": info["train_seconds"],
        }

    state, meta, hit = cache.get_or_build("encoder", encoder_key(spec, data), build)
    model = encoders.create_encoder(spec, in_chans=data.channels, num_classes=data.num_classes)
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
    """A ready encoder (on the CPU) with its uint8 -> input transform (to encode new images).

    Embedded encoders come from the cache (trained on the CPU on a miss); pretrained ones
    are loaded from the hub or ``weights_dir``, and resize by matrix products
    (:func:`~common.assets.latents.make_preprocess`; nothing here trains through it).
    """
    weights_file, _ = _weights_source(spec, weights_dir)
    model, meta = _encoder(spec, data, cache, weights_file, progress)
    config = encoders.data_config(spec, model, data.images["train"].shape[1:])
    preprocess = make_preprocess(config, matrix_resize=spec.pretrained)
    return model, preprocess, meta


def encoder_latents(
    spec: EncoderSpec,
    data: ImageSplits,
    cache: Cache,
    *,
    progress: bool = True,
    weights_dir: str | Path | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    batch_size: int | None = None,
) -> ModelLatents:
    """Latents of every split for one encoder, built (train/load, extract) or cached.

    Parameters
    ----------
    spec, data, cache, progress, weights_dir
        The encoder, its images, the cache, a progress bar, local pretrained weights.
    device : str
        Where the latents are extracted: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``,
        resolved on this machine only when they must be built
        (:func:`common.assets.devices.check_device`, which raises
        :class:`~common.assets.devices.DeviceError` for a device the machine lacks). fp32
        latents of any device are one asset (the key does not name it). An embedded encoder
        is trained on the CPU.
    precision : str
        ``fp32``, ``bf16`` or ``fp16`` (:data:`common.assets.devices.DTYPES`); the cache
        key names it unless fp32 (fp32 latents of any device are the same asset).
    batch_size : int, optional
        Images per forward pass (None: :func:`common.assets.devices.batch_size`).

    The manifest records the device, precision and library versions they were made with.
    """
    weights_file, weights = _weights_source(spec, weights_dir)
    key = {"encoder": encoder_key(spec, data, weights), "data": data.fingerprint}
    if precision != "fp32":
        key["precision"] = precision

    def build() -> tuple[dict[str, np.ndarray], dict]:
        started = time.perf_counter()
        where = devices.check_device(device, precision)
        with _all_cores():
            model, preprocess, meta = load_encoder(
                spec, data, cache, progress=progress, weights_dir=weights_dir
            )
            batch = devices.batch_size(where, batch_size)
            try:
                arrays = {
                    split: extract_latents(
                        model,
                        data.images[split],
                        preprocess,
                        batch_size=batch,
                        progress=spec.name if progress else False,
                        device=where,
                        precision=precision,
                    )
                    for split in SPLITS
                }
            finally:
                model.cpu()  # no GPU memory held after the build, whatever happened
        meta["build_seconds"] = time.perf_counter() - started
        meta.update(
            device=devices.label(where),
            precision=precision,
            batch_size=batch,
            torch=torch.__version__,
            timm=_timm_version(),
        )
        return arrays, meta

    started = time.perf_counter()
    # the key names the data: one row per image of each split, one width for all splits
    expect = {split: (len(data.images[split]), "d") for split in SPLITS}
    arrays, meta, hit = cache.get_or_build("latents", key, build, expect)
    meta = {**meta, "cached": hit, "seconds": time.perf_counter() - started}
    return ModelLatents(
        model=spec.name,
        timm_name=spec.timm_name,
        dim=int(arrays["train"].shape[1]),
        splits={split: arrays[split] for split in SPLITS},
        cache_key=key_digest(key),
        meta=meta,
        checksum=cache.checksum("latents", key),
    )


def head_asset(latents: ModelLatents, data: ImageSplits, seed: int, cache: Cache) -> HeadAsset:
    """The classifier head of one model, trained on its clean latents (on the CPU), or
    cached."""
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
        return encoders.state_arrays(head), info

    # the key names the latents (their width) and the head's settings (hidden width)
    hidden, classes = HEAD_DEFAULTS["hidden"], data.num_classes
    expect = {
        "norm_in.weight": (latents.dim,),
        "fc1.weight": (hidden, latents.dim),
        "fc2.weight": (classes, hidden),
        "fc2.bias": (classes,),
    }
    state, meta, hit = cache.get_or_build("head", key, build, expect)
    return HeadAsset(
        model=latents.model,
        seed=seed,
        state=state,
        clean_test_accuracy=float(meta["clean_test_accuracy"]),
        val_accuracy=float(meta["val_accuracy"]),
        meta={**meta, "cached": hit},
        checksum=cache.checksum("head", key),
    )
