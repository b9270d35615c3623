"""The GPU path against the CPU (marked ``gpu``; skipped where torch sees no CUDA device).

It imports only what the assets need (torch, timm, numpy), so it also runs on a machine
that has a GPU but not the project's other dependencies:
``python -m pytest -m gpu tests/test_gpu.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.assets.cache import Cache
from common.assets.data import ImageSplits
from common.assets.latents import extract_latents
from common.assets.store import encoder_latents, head_asset, load_encoder
from tests.tiny import TINY_SPEC, tiny_splits

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

SPEC = TINY_SPEC


@pytest.fixture(scope="module")
def data() -> ImageSplits:
    return tiny_splits("tiny-gpu-test")


def test_fp32_latents_on_cuda_match_the_cpu_to_float32_rounding(data, tmp_path):
    model, preprocess, _ = load_encoder(SPEC, data, Cache(tmp_path), progress=False)
    images = data.images["test"]
    cpu = extract_latents(model, images, preprocess, progress=False, device="cpu")
    gpu = extract_latents(model, images, preprocess, progress=False, device="cuda", batch_size=7)
    model.cpu()
    scale = np.abs(cpu).max()
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-5 * scale)  # no TF32
    half = extract_latents(
        model, images, preprocess, progress=False, device="cuda", precision="bf16"
    )
    assert half.dtype == np.float32 and 0 < np.abs(half - cpu).max() < 0.05 * scale


def test_fp32_latents_built_on_cuda_are_the_cpus_asset(data, tmp_path):
    cpu = encoder_latents(SPEC, data, Cache(tmp_path / "cpu"), progress=False, device="cpu")
    gpu = encoder_latents(SPEC, data, Cache(tmp_path / "gpu"), progress=False, device="cuda")
    assert gpu.cache_key == cpu.cache_key  # the same asset, whichever device made it
    assert gpu.meta["device"].startswith("cuda:0 (") and cpu.meta["device"] == "cpu"
    scale = np.abs(cpu.splits["test"]).max()
    np.testing.assert_allclose(gpu.splits["test"], cpu.splits["test"], rtol=1e-4, atol=1e-5 * scale)
    # a head trained on either is as good (heads are trained on the CPU)
    assert (
        abs(
            head_asset(gpu, data, 0, Cache(tmp_path / "gpu")).clean_test_accuracy
            - head_asset(cpu, data, 0, Cache(tmp_path / "cpu")).clean_test_accuracy
        )
        <= 0.05
    )


def test_the_pretrained_zoos_resize_on_cuda_matches_f_interpolate(data):
    import torch.nn.functional as F

    from common.assets.latents import make_preprocess

    config = {"input_size": (3, 224, 224), "mean": (0.5,) * 3, "std": (0.25,) * 3}
    config["interpolation"] = "bicubic"
    images = torch.from_numpy(data.images["test"][:16]).cuda()
    fast = make_preprocess(config, matrix_resize=True)(images)
    x = ((images.float() / 255 - 0.5) / 0.25).expand(-1, 3, -1, -1)
    exact = F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    assert float((fast - exact).abs().max()) < 1e-4
