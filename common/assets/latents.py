"""Latent extraction: uint8 images in, pooled pre-logits features out.

The latent of an image is what the encoder hands its classifier: timm's
``forward_head(forward_features(x), pre_logits=True)``. Preprocessing (channel
matching, resizing, normalisation) happens per batch on the fly so that only
uint8 images are ever held in memory.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

Preprocess = Callable[[torch.Tensor], torch.Tensor]

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


def _as_tuple(name: str, value: Any) -> tuple[float, ...]:
    values = tuple(float(v) for v in (value if isinstance(value, Sequence) else (value,)))
    if not values:
        raise ValueError(f"{name}={value!r} must hold at least one value")
    return values


def resize_matrix(size_in: int, size_out: int, mode: str) -> torch.Tensor:
    """The ``size_out x size_in`` matrix of 1-D resizing by ``F.interpolate`` (its kernel and
    border rule, ``align_corners=False``; float64). Resizing an image is then two matrix
    products, ``R_h @ x @ R_w.T``, exactly :func:`torch.nn.functional.interpolate`'s map:
    its bilinear, bicubic and nearest resizing are separable."""
    basis = torch.eye(size_in, dtype=torch.float64).view(size_in, 1, size_in, 1)
    align = None if mode == "nearest" else False
    columns = F.interpolate(basis, size=(size_out, 1), mode=mode, align_corners=align)
    return columns[:, 0, :, 0].T.contiguous()


def make_preprocess(config: Mapping[str, Any], *, matrix_resize: bool = False) -> Preprocess:
    """Build the uint8 -> model input transform from a timm-style data config.

    ``config`` holds ``input_size`` (C, H, W), ``mean`` and ``std`` (one value
    or one per channel) and optionally ``interpolation`` (timm's
    ``resolve_data_config`` output qualifies). Grayscale images are repeated to
    three channels when the model wants three, colour images are averaged when
    it wants one, and images are resized only if their size differs.

    ``matrix_resize`` resizes by two matrix products (:func:`resize_matrix`), the same
    linear map as ``F.interpolate`` up to float32 rounding (about 2e-5 absolute at 224 px)
    and several times faster on a CPU (0.93 -> 0.19 ms per CIFAR image to 224 px here).
    It is for models that are not trained here (the pretrained zoo): an encoder trained
    through it would not be the one its cache key names, so training and the embedded zoo
    keep ``F.interpolate``, bit for bit as before.
    """
    try:
        channels, height, width = (int(v) for v in config["input_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"config must hold input_size=(C, H, W), got {dict(config)}") from exc
    mean = torch.tensor(_as_tuple("mean", config["mean"])).view(1, -1, 1, 1)
    std = torch.tensor(_as_tuple("std", config["std"])).view(1, -1, 1, 1)
    if torch.any(std <= 0):
        raise ValueError(f"std={config['std']!r} must be positive")
    mode = str(config.get("interpolation") or "bilinear")
    if mode not in _INTERPOLATIONS:
        mode = "bilinear"
    # x / 255 normalised in one fused step: x * gain + offset
    gain, offset = 1.0 / (255.0 * std), -mean / std
    on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {gain.device: (gain, offset)}
    # resizing as two matrix products (per input size and device): several times faster than
    # F.interpolate's bicubic kernel on a CPU, where it cost a small model a third of its time
    resizers: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
    align = None if mode == "nearest" else False

    def resize(x: torch.Tensor) -> torch.Tensor:
        """N x C x h x w -> N x C x H x W in channels-last memory (no copy to convert)."""
        n, c, h, w = x.shape
        key = (h, w, x.device)
        if key not in resizers:
            rows = resize_matrix(h, height, mode).to(x.device, torch.float32)
            cols = resize_matrix(w, width, mode).to(x.device, torch.float32)
            resizers[key] = (rows, cols.T.contiguous())
        rows, cols_t = resizers[key]
        # columns first, on the small image, laid out as rows of W*C (channels last) ...
        z = torch.matmul(x, cols_t).permute(0, 2, 3, 1).reshape(n, h, width * c)
        # ... then rows: the product is N x H x (W*C), i.e. channels-last N x C x H x W
        return torch.matmul(rows, z).view(n, height, width, c).permute(0, 3, 1, 2)

    def preprocess(images: torch.Tensor) -> torch.Tensor:
        if images.device not in on:  # the constants follow the images to their device
            on[images.device] = (gain.to(images.device), offset.to(images.device))
        gain_, offset_ = on[images.device]
        x = images.to(torch.float32)
        if x.shape[1] != channels:
            if x.shape[1] == 1:
                x = x.expand(-1, channels, -1, -1)
            elif channels == 1:
                x = x.mean(dim=1, keepdim=True)
            else:
                raise ValueError(f"cannot map {x.shape[1]} image channels to {channels}")
        # Normalising commutes with (bilinear/bicubic/nearest) resizing, so it is done
        # first, on the smaller image; channels-last survives either resize.
        x = torch.addcmul(offset_, x, gain_)
        if x.shape[-2:] != (height, width):
            if matrix_resize:
                x = resize(x)
            else:
                x = x.contiguous(memory_format=torch.channels_last)
                x = F.interpolate(x, size=(height, width), mode=mode, align_corners=align)
        return x.contiguous(memory_format=torch.channels_last)

    return preprocess


def model_label(model: nn.Module) -> str:
    """A readable name for progress bars and logs."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return str(getattr(model, "zoo_name", None) or cfg.get("architecture") or type(model).__name__)


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's pooled pre-logits features: what the model's classifier sees."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def extract_latents(
    model: nn.Module,
    images_uint8: np.ndarray,
    preprocess: Preprocess,
    *,
    batch_size: int = 256,
    progress: bool | str = True,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> np.ndarray:
    """Latents (float32, N x d) of uint8 images ``N x C x H x W``, in inference mode.

    Parameters
    ----------
    model : nn.Module
        A timm encoder; moved to ``device`` (and left there).
    images_uint8 : ndarray of uint8, N x C x H x W
        The images; only one batch at a time is converted.
    preprocess : callable
        uint8 batch -> model input (:func:`make_preprocess`), run on ``device``.
    batch_size : int
        Images per forward pass.
    progress : bool or str
        A progress bar (a str: its label).
    device : torch.device or str
        Where the forward passes run. On a GPU the uint8 batch is copied from pinned
        memory without blocking, converted there, and the next batch is prepared while
        the GPU computes; fp32 runs without TF32 (:func:`common.assets.devices.exact`).
    precision : str
        ``fp32``, or ``bf16``/``fp16`` under autocast (the latents are returned as
        float32 either way).

    Raises
    ------
    ValueError
        Images not uint8 N x C x H x W, none, or a batch size below 1.

    On the CPU, batches are preprocessed just before they are encoded, on the same
    threads: preparing the next batch in the background competes with the model for the
    cores and was measured to slow small models down by up to a third.
    """
    from common.assets.devices import exact

    images = np.asarray(images_uint8)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 N x C x H x W, got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise ValueError("images is empty: nothing to extract")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be positive")
    device = torch.device(device)
    pinned = device.type == "cuda"
    label = progress if isinstance(progress, str) else model_label(model)
    was_training = model.training
    model.eval().to(device)

    def host(start: int) -> torch.Tensor:
        batch = torch.from_numpy(np.array(images[start : start + batch_size]))
        return batch.pin_memory() if pinned else batch

    out: np.ndarray | None = None
    pending: list[tuple[int, torch.Tensor, torch.cuda.Event | None]] = []

    def collect(start: int, z: torch.Tensor, done: torch.cuda.Event | None) -> None:
        nonlocal out
        if done is not None:
            done.synchronize()  # this batch's copy; later batches keep the GPU busy
        if out is None:
            out = np.empty((len(images), z.shape[1]), dtype=np.float32)
        out[start : start + len(z)] = z.numpy()

    # the GPU's own streams and events (cuda:N need not be the current device)
    on_gpu = torch.cuda.device(device) if pinned else contextlib.nullcontext()
    try:
        with on_gpu, torch.inference_mode(), exact(device, precision):
            starts = range(0, len(images), batch_size)
            waiting = host(0)
            for start in tqdm(starts, desc=label, disable=progress is False, leave=False):
                with torch.autocast(device.type, enabled=False):  # resizing stays fp32
                    x = preprocess(waiting.to(device, non_blocking=True))
                z = pooled_features(model, x).float()  # queued on a GPU
                if pinned:  # copied back without blocking; collected one batch later
                    back = torch.empty(z.shape, dtype=torch.float32, pin_memory=True)
                    back.copy_(z, non_blocking=True)
                    done = torch.cuda.Event()
                    done.record(torch.cuda.current_stream(device))
                    pending.append((start, back, done))
                else:
                    pending.append((start, z.cpu(), None))
                if start + batch_size < len(images):
                    waiting = host(start + batch_size)  # prepared while the GPU computes
                while len(pending) > (1 if pinned else 0):
                    collect(*pending.pop(0))
            while pending:
                collect(*pending.pop(0))
    finally:
        model.train(was_training)
    return out
