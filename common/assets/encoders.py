"""Building encoders: timm models created, loaded from local weights, or trained from scratch.

The specs come from :mod:`common.assets.zoo`; the latents and heads built from
these models are cached by :mod:`common.assets.store`.
"""

from __future__ import annotations

import difflib
import logging
import math
import time
from pathlib import Path

import numpy as np
import timm
import timm.data
import timm.optim
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from common.assets.latents import make_preprocess
from common.assets.zoo import EncoderSpec

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin")


class UnknownModelError(ValueError):
    """A timm model name that timm does not know."""


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are neither downloadable nor in the local weights folder."""


def state_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    """A module's weights as numpy arrays (what the cache and the wire carry)."""
    return {name: t.detach().cpu().numpy().copy() for name, t in module.state_dict().items()}


# --------------------------------------------------------------------------- model creation
def check_model_name(timm_name: str) -> None:
    """Raise :class:`UnknownModelError` (with close matches) for names timm lacks.

    A pretrained tag (``efficientvit_m5.r224_in1k``) is accepted when its
    architecture part is known.
    """
    architecture = timm_name.split(".", 1)[0]
    if timm.is_model(architecture):
        return
    known = timm.list_models()
    matches = difflib.get_close_matches(architecture, known, n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(matches)}" if matches else "no close match"
    raise UnknownModelError(f"unknown timm model {timm_name!r} ({hint})")


def find_weights_file(spec: EncoderSpec, weights_dir: str | Path) -> Path:
    """The local weights file of a pretrained model inside ``weights_dir``."""
    folder = Path(weights_dir)
    candidates = [folder / f"{spec.name}{suffix}" for suffix in WEIGHT_SUFFIXES]
    candidates += [
        folder / spec.name / "model.safetensors",
        folder / spec.name / "pytorch_model.bin",
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise WeightsNotFoundError(
        f"no weights for {spec.name!r} in {folder}: put the model's timm state dict at "
        f"{candidates[0]} (or {candidates[1].name}, {candidates[2].name})"
    )


def create_encoder(
    spec: EncoderSpec,
    *,
    in_chans: int,
    num_classes: int,
    weights_file: str | Path | None = None,
) -> nn.Module:
    """Instantiate the timm model of ``spec``.

    Models trained from scratch are initialised from ``spec.seed``. Pretrained
    models load ``weights_file`` through timm's own loader when given (so the
    same key remapping and classifier handling apply), else the hub weights.
    """
    check_model_name(spec.timm_name)
    kwargs = {**spec.model_kwargs, "in_chans": in_chans, "num_classes": num_classes}
    if not spec.pretrained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
    elif weights_file is not None:
        path = Path(weights_file)
        if not path.is_file():
            raise WeightsNotFoundError(f"weights file {path} for {spec.name!r} does not exist")
        overlay = {"file": str(path)}
        model = timm.create_model(
            spec.timm_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
        )
    else:
        try:
            model = timm.create_model(spec.timm_name, pretrained=True, **kwargs)
        except TypeError:
            raise
        except Exception as exc:  # hub/network errors come in many types
            raise WeightsNotFoundError(
                f"could not fetch pretrained weights of {spec.timm_name!r} ({exc}). Offline? "
                f"Put its timm state dict at <weights_dir>/{spec.name}.safetensors and pass "
                "weights_dir"
            ) from exc
    model.zoo_name = spec.name
    # channels-last runs depthwise and grouped convolutions several times faster on CPU
    return model.to(memory_format=torch.channels_last)


def data_config(spec: EncoderSpec, model: nn.Module, image_shape: tuple[int, ...]) -> dict:
    """Input size and normalisation of a model, for images of shape ``(C, H, W)``.

    Pretrained models use timm's config. Models trained from scratch take the
    images' own channels, at ``spec.input_size`` (H, W) when set, else as they are.
    """
    if spec.mean is None or spec.std is None:
        return dict(timm.data.resolve_data_config(model=model))
    channels, height, width = (int(v) for v in image_shape)
    if spec.input_size is not None:
        height, width = spec.input_size[-2:]
    return {
        "input_size": (channels, height, width),
        "mean": spec.mean,
        "std": spec.std,
        "interpolation": "bilinear",
    }


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- training
def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels, filling with zeros."""
    if max_shift <= 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)).view(n, 1, h, 1).expand(n, c, h, w + 2 * max_shift)
    padded = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(w)).view(n, 1, 1, w).expand(n, c, h, w)
    return torch.gather(padded, 3, cols)


def train_encoder(
    spec: EncoderSpec,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    progress: bool = True,
) -> tuple[nn.Module, dict]:
    """Train an embedded encoder from scratch with its own classifier.

    ``spec.optimizer`` (no decay on norms and biases) under a one-cycle schedule, random
    shifts as the only augmentation; the incomplete last batch of an epoch is
    dropped (batch-norm layers need more than one sample). Deterministic given
    ``spec.seed``.
    """
    if spec.pretrained:
        raise ValueError(f"{spec.name} is pretrained: nothing to train")
    if len(images) < spec.batch_size:
        raise ValueError(f"need at least batch_size={spec.batch_size} images, got {len(images)}")
    started = time.perf_counter()
    model = create_encoder(spec, in_chans=images.shape[1], num_classes=num_classes)
    preprocess = make_preprocess(data_config(spec, model, images.shape[1:]))
    inputs = torch.from_numpy(np.array(images))
    targets = torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())
    steps_per_epoch = len(inputs) // spec.batch_size
    optimizer = timm.optim.create_optimizer_v2(
        model, spec.optimizer, lr=spec.lr, weight_decay=spec.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=spec.lr,
        total_steps=spec.epochs * steps_per_epoch,
        pct_start=spec.warmup,
    )
    generator = torch.Generator().manual_seed(spec.seed)
    model.train()
    bar = tqdm(
        total=spec.epochs * steps_per_epoch,
        desc=f"train {spec.name}",
        disable=not progress,
        leave=False,
    )
    loss_value = math.nan
    with bar, torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)  # dropout and friends, if any
        for _ in range(spec.epochs):
            order = torch.randperm(len(inputs), generator=generator)
            for step in range(steps_per_epoch):
                batch = order[step * spec.batch_size : (step + 1) * spec.batch_size]
                x = preprocess(random_shift(inputs[batch], spec.max_shift, generator))
                loss = F.cross_entropy(model(x), targets[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
            loss_value = float(loss.detach())
            bar.set_postfix(loss=f"{loss_value:.3f}")
    model.eval()
    info = {
        "train_seconds": time.perf_counter() - started,
        "final_loss": loss_value,
        "params": param_count(model),
    }
    logger.info(
        "trained %s in %.1f s (final loss %.3f)", spec.name, info["train_seconds"], loss_value
    )
    return model, info
