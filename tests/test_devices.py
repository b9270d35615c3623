"""Where encoders, latents and heads are computed (``device``, ``latents.*``): resolution,
refusals naming the key and what the machine has, the cache's rule for devices and
precisions (the GPU path against the CPU: tests/test_gpu.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.assets import devices
from common.assets.cache import Cache
from common.assets.devices import DeviceError, check_device, resolve_device
from common.assets.latents import extract_latents
from common.assets.store import encoder_latents, load_encoder
from common.run.points import point_key
from common.run.settings import ConfigError
from conf import settings
from launch.simulation import check_resources
from tests.test_refusals import _cli, _one_error_line
from tests.test_zoo import TINY_SPEC, tiny_data  # noqa: F401 (a fixture)

CUDA = torch.cuda.is_available()


def _no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def _one_gpu(monkeypatch, bf16: bool = True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Old GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def test_auto_takes_cuda_then_mps_then_the_cpu():
    expected = "cuda" if CUDA else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_is_the_cpu_on_a_machine_without_a_gpu(monkeypatch):
    _no_gpu(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")


def test_a_device_the_machine_lacks_is_refused_naming_the_key_and_what_it_has(monkeypatch):
    _no_gpu(monkeypatch)
    with pytest.raises(DeviceError, match=r"'device' = 'cuda': this machine has only the CPU"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match=r"'device' = 'mps': this machine has only the CPU"):
        resolve_device("mps")
    _one_gpu(monkeypatch)
    with pytest.raises(
        DeviceError,
        match=r"'device' = 'cuda:7': this machine has 1 CUDA device \(Old GPU\); "
        r"use cuda:0..cuda:0, cpu or auto",
    ):
        resolve_device("cuda:7")
    assert resolve_device("cuda") == torch.device("cuda", 0)
    for name in ("bogus", "cuda:x", "meta"):  # what torch cannot parse, or computes nothing on
        with pytest.raises(DeviceError, match=rf"'device' = '{name}': not a device; use auto"):
            resolve_device(name)


def test_a_precision_the_device_cannot_compute_in_is_refused(monkeypatch):
    _one_gpu(monkeypatch, bf16=False)
    with pytest.raises(
        DeviceError,
        match=r"'latents.precision' = 'bf16': cuda:0 \(Old GPU\) cannot compute in it; "
        r"use fp32 or fp16",
    ):
        check_device("cuda:0", "bf16")
    check_device("cuda:0", "fp16")
    check_device("cpu", "bf16")  # torch's CPU autocast computes in bfloat16


def test_bad_device_settings_are_refused_by_the_schema():
    with pytest.raises(ConfigError, match=r"'device' = 'gpu' .*auto, cpu, cuda, cuda:N"):
        settings("device=gpu")
    with pytest.raises(ConfigError, match=r"'latents.precision' = 'fp8' .*fp32, bf16, fp16"):
        settings("latents.precision=fp8")
    with pytest.raises(ConfigError, match=r"'latents.batch_size' = 0"):
        settings("latents.batch_size=0")


def test_gpus_per_user_without_a_gpu_is_refused_before_ray(monkeypatch):
    _no_gpu(monkeypatch)
    with pytest.raises(ConfigError, match=r"'experiment.gpus_per_user' = 0.5 .*0 CUDA GPU"):
        check_resources(1.0, None, 0.5)
    check_resources(1.0, None, 0.0)
    check_resources(1.0, "10.0.0.1:6379", 0.5)  # a cluster's GPUs are not known here


@pytest.mark.skipif(CUDA, reason="this machine has CUDA: device=cuda is not refused")
def test_device_cuda_on_the_command_line_is_one_error_line_before_any_work(tmp_path):
    line = _one_error_line(_cli("device=cuda", f"hydra.run.dir={tmp_path}/run"))
    assert line.startswith("error: config key 'device' = 'cuda': this machine has"), line
    assert not (tmp_path / "run").exists()


def test_batch_size_is_the_given_one_else_256_on_a_cpu():
    assert devices.batch_size(torch.device("cpu"), None) == devices.CPU_BATCH == 256
    assert devices.batch_size(torch.device("cpu"), 17) == 17


def test_cpu_extraction_reproduces_the_cached_latents_bit_for_bit(tiny_data, tmp_path):  # noqa: F811
    cache = Cache(tmp_path)
    cached = encoder_latents(TINY_SPEC, tiny_data, cache, progress=False, device="cpu")
    model, preprocess, _ = load_encoder(TINY_SPEC, tiny_data, cache, progress=False)
    again = extract_latents(model, tiny_data.images["test"], preprocess, progress=False)
    np.testing.assert_array_equal(again, cached.splits["test"])
    assert cached.meta["device"] == "cpu" and cached.meta["precision"] == "fp32"
    assert cached.meta["torch"] == torch.__version__ and cached.meta["timm"]


def test_reduced_precision_latents_are_cached_apart_and_close_to_fp32(tiny_data, tmp_path):  # noqa: F811
    cache = Cache(tmp_path)
    fp32 = encoder_latents(TINY_SPEC, tiny_data, cache, progress=False)
    bf16 = encoder_latents(TINY_SPEC, tiny_data, cache, progress=False, precision="bf16")
    assert bf16.cache_key != fp32.cache_key and bf16.meta["precision"] == "bf16"
    assert bf16.splits["test"].dtype == np.float32
    difference = np.abs(bf16.splits["test"] - fp32.splits["test"]).max()
    scale = np.abs(fp32.splits["test"]).max()
    assert 0 < difference < 0.05 * scale  # bfloat16 keeps about three significant digits


def test_the_device_is_resolved_only_when_latents_must_be_built(
    tiny_data,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    cache = Cache(tmp_path)
    built = encoder_latents(TINY_SPEC, tiny_data, cache, progress=False, device="cpu")
    _no_gpu(monkeypatch)  # a Ray actor, say, which sees no GPU
    cached = encoder_latents(TINY_SPEC, tiny_data, cache, progress=False, device="cuda")
    assert cached.meta["cached"] and cached.cache_key == built.cache_key  # one asset
    with pytest.raises(DeviceError, match=r"'device' = 'cuda': this machine has only the CPU"):
        encoder_latents(TINY_SPEC, tiny_data, Cache(tmp_path / "new"), device="cuda")


def test_the_default_preprocessing_is_f_interpolate_bit_for_bit_and_the_matrix_one_close():
    import torch.nn.functional as F

    from common.assets.latents import make_preprocess

    images = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (6, 3, 32, 40), dtype=np.uint8)
    )
    for mode in ("bicubic", "bilinear", "nearest"):
        config = {"input_size": (3, 64, 48), "mean": (0.4, 0.5, 0.6), "std": (0.2, 0.25, 0.3)}
        config["interpolation"] = mode
        mean = torch.tensor(config["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(config["std"]).view(1, -1, 1, 1)
        x = torch.addcmul(-mean / std, images.float(), 1.0 / (255.0 * std))
        x = x.contiguous(memory_format=torch.channels_last)
        align = None if mode == "nearest" else False
        before = F.interpolate(x, size=(64, 48), mode=mode, align_corners=align)
        default = make_preprocess(config)(images)
        assert torch.equal(default, before)  # what every cached latent was made with
        fast = make_preprocess(config, matrix_resize=True)(images)
        assert fast.is_contiguous(memory_format=torch.channels_last)
        assert float((fast - before).abs().max()) < 1e-4 * float(before.abs().max())


def test_extraction_returns_every_batch_in_order_whatever_the_batch_count(tiny_data, tmp_path):  # noqa: F811
    model, preprocess, _ = load_encoder(TINY_SPEC, tiny_data, Cache(tmp_path), progress=False)
    images = tiny_data.images["test"]
    whole = extract_latents(model, images, preprocess, batch_size=len(images), progress=False)
    for batch in (1, 7, len(images) - 1):
        np.testing.assert_allclose(
            extract_latents(model, images, preprocess, batch_size=batch, progress=False),
            whole,
            rtol=1e-5,
            atol=1e-6,
        )


def test_device_and_fp32_stay_out_of_every_key(tiny_data):  # noqa: F811
    from common.assets.store import encoder_key

    key = encoder_key(TINY_SPEC, tiny_data)
    assert "device" not in key and "precision" not in key
    assert point_key(settings("device=cpu")) == point_key(settings("device=auto"))
