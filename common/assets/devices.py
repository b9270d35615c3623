"""Where encoders, latents and heads are computed: the ``device`` setting made a
``torch.device``, checked against what this machine has, and the extraction's precision.

``device=auto`` takes CUDA when torch sees a GPU, else Apple's MPS, else the CPU.
Everything else names a device that must exist here: a name this machine lacks is
refused (:class:`DeviceError`, naming the key and what the machine has) before any
work. ``latents.precision`` is the extraction's autocast dtype (``fp32``: none).

What moves between devices, and what does not (the cache's rule):

- fp32 latents are a function of the encoder's weights; on a GPU they are computed
  without TF32 (:func:`exact`), so they match the CPU's to float32 rounding (checked to
  1e-4 relative, about 1e-6 seen) and the cache treats them as the same asset: a cache
  built on one machine serves another, and ``device`` changes no run's identity;
- bf16/fp16 latents differ in the third significant digit: their cache key, and a run's
  identity, name the precision;
- what is trained (an embedded encoder, a head) is trained on the CPU whatever
  ``device`` says: a head is a 10-unit MLP that a GPU does not speed up, the embedded zoo
  trains in about two minutes on two cores, and a GPU's training (cuDNN's kernels are not
  deterministic) would make an asset that no key could name across machines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BATCH = 256  # latents.batch_size=null on a CPU
GPU_BATCH_LIMITS = (32, 1024)  # latents.batch_size=null on a GPU: within these
BYTES_PER_IMAGE = 64 << 20  # the free memory set aside per image of a batch (224 px, ViT-B)


class DeviceError(ValueError):
    """``device`` or ``latents.precision`` names what this machine cannot do (reported as
    one line by the entry points, like a bad setting)."""


def machine() -> str:
    """What this machine offers, in words (``"2 CUDA devices (NVIDIA H200, ...)"``)."""
    parts = []
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(count))
        parts.append(f"{count} CUDA device{'s' if count > 1 else ''} ({names})")
    if torch.backends.mps.is_available():
        parts.append("MPS")
    return ", ".join(parts) or "only the CPU (torch sees no CUDA or MPS device)"


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` that ``device`` names, on this machine.

    Parameters
    ----------
    name : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises
    ------
    DeviceError
        A name that is none of these, CUDA or MPS asked for where torch sees none, or
        ``cuda:N`` beyond the GPUs
        present (the message names ``device``, the value and what the machine has).
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(
            f"config key 'device' = {name!r}: not a device; use auto, cpu, cuda, cuda:N or mps"
        )
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if device.index is None else device.index
        if index >= count:
            raise DeviceError(
                f"config key 'device' = {name!r}: this machine has {machine()}; use "
                + (f"cuda:0..cuda:{count - 1}, " if count else "")
                + "cpu or auto"
            )
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(
            f"config key 'device' = {name!r}: this machine has {machine()}; use cpu or auto"
        )
    return device


def check_precision(device: torch.device, precision: str) -> None:
    """Refuse an autocast dtype ``device`` cannot compute in.

    Raises
    ------
    DeviceError
        bf16 on a GPU without bfloat16 (before Ampere), fp16/bf16 on MPS where torch lacks
        it; the message names ``latents.precision`` and the device.
    """
    if precision == "fp32":
        return
    able = True
    if device.type == "cuda":
        able = precision == "fp16" or torch.cuda.is_bf16_supported()
    elif device.type == "mps":
        able = precision == "fp16" or torch.backends.mps.is_macos_or_newer(14, 0)
    if not able:
        raise DeviceError(
            f"config key 'latents.precision' = {precision!r}: {label(device)} cannot "
            f"compute in it; use fp32{' or fp16' if precision == 'bf16' else ''}"
        )


def label(device: torch.device) -> str:
    """``"cuda:0 (NVIDIA H200)"``, ``"cpu"``: what the cache's manifest records."""
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def batch_size(device: torch.device, given: int | None) -> int:
    """Images per forward pass: ``given``, else :data:`CPU_BATCH` on a CPU, else the free
    GPU memory over :data:`BYTES_PER_IMAGE`, a power of two within
    :data:`GPU_BATCH_LIMITS`."""
    if given is not None:
        return given
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    fits = max(1, free // BYTES_PER_IMAGE)
    low, high = GPU_BATCH_LIMITS
    return max(low, min(high, 1 << (int(fits).bit_length() - 1)))


@contextlib.contextmanager
def exact(device: torch.device, precision: str = "fp32") -> Iterator[None]:
    """fp32 arithmetic without TF32 on a GPU (restored after), or the autocast of
    ``precision`` (bf16/fp16)."""
    if precision != "fp32":
        with torch.autocast(device.type, dtype=DTYPES[precision]):
            yield
        return
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def check_device(device: str, precision: str = "fp32") -> torch.device:
    """:func:`resolve_device` then :func:`check_precision`: the device, or the refusal."""
    resolved = resolve_device(device)
    check_precision(resolved, precision)
    return resolved
