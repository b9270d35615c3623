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
from common.assets.heads import accuracy, train_head
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


def test_an_encoder_and_a_head_trained_on_cuda_are_cached_apart_and_as_good(data, tmp_path):
    cache = Cache(tmp_path)
    cpu = encoder_latents(SPEC, data, cache, progress=False, device="cpu")
    gpu = encoder_latents(SPEC, data, cache, progress=False, device="cuda")
    assert gpu.cache_key != cpu.cache_key  # trained elsewhere: another encoder
    assert gpu.meta["device"].startswith("cuda:0 (") and gpu.meta["precision"] == "fp32"
    head_gpu = head_asset(gpu, data, 0, cache, device="cuda")
    head_cpu = head_asset(gpu, data, 0, cache, device="cpu")
    assert head_gpu.checksum != head_cpu.checksum
    assert abs(head_gpu.clean_test_accuracy - head_cpu.clean_test_accuracy) <= 0.15
    z, y = gpu.splits["test"], data.labels["test"]
    head, _ = train_head(z, y, z, y, num_classes=10, seed=0, device="cuda", max_epochs=3)
    assert next(head.parameters()).device.type == "cpu"  # handed to the users on the CPU
    assert 0 <= accuracy(head, z, y) <= 1
