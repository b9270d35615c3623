"""Encoder zoo: names, specs, weight files, preprocessing, extraction, cached assets."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pytest
import timm
import torch

from common.assets.cache import Cache
from common.assets.data import ImageSplits
from common.assets.encoders import (
    UnknownModelError,
    WeightsNotFoundError,
    check_model_name,
    create_encoder,
    find_weights_file,
    random_shift,
    train_encoder,
)
from common.assets.latents import extract_latents, make_preprocess
from common.assets.source import AssetSource
from common.assets.store import encoder_latents, head_asset, load_encoder
from common.assets.zoo import EMBEDDED, PAPER, EncoderSpec, get_zoo
from common.registry import ZOOS
from tests.tiny import TINY_SPEC, tiny_splits

PAPER_HETEROGENEOUS = [
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "mobilenetv3_small_075",
    "levit_128s.fb_dist_in1k",
]
PAPER_HOMOGENEOUS = [
    "rexnet_100",
    "mobilenetv3_small_075",
    "mobilenetv3_large_100",
    "mobilenetv3_small_100",
]


# --------------------------------------------------------------------------- names and zoos
def test_unknown_model_suggests_close_matches():
    with pytest.raises(UnknownModelError) as info:
        check_model_name("resnet10")
    assert isinstance(info.value, ValueError)
    assert "resnet10" in str(info.value) and "resnet10t" in str(info.value)
    spec = EncoderSpec("x", "mobilenetv3_smal_100", pretrained=True)
    with pytest.raises(UnknownModelError, match="mobilenetv3_small_100"):
        create_encoder(spec, in_chans=3, num_classes=10)


def test_pretrained_tags_are_accepted():
    for name in ("efficientvit_m5.r224_in1k", "levit_128s.fb_dist_in1k", "vit_tiny_patch16_224"):
        check_model_name(name)
    with pytest.raises(UnknownModelError):
        check_model_name("not_a_model.r224_in1k")


def test_get_zoo_and_groups_validate_names():
    assert set(ZOOS) == {"embedded", "paper"}
    with pytest.raises(ValueError, match="'nope'.*embedded.*paper"):
        get_zoo("nope")
    with pytest.raises(ValueError, match="'nope'.*heterogeneous"):
        EMBEDDED.group("nope")


def test_embedded_zoo_shape():
    all_users = EMBEDDED.group("all")
    assert len(all_users) >= 8
    for group in ("heterogeneous", "homogeneous"):
        members = EMBEDDED.group(group)
        assert len(members) == 4 and set(members) <= set(all_users)
    specs = [EMBEDDED.ap, *all_users]
    assert len({s.seed for s in specs}) == len(specs)  # each model its own seed
    assert all(not s.pretrained and s.epochs >= 1 for s in specs)


def test_paper_zoo_matches_the_paper():
    assert PAPER.ap.timm_name == "vit_tiny_patch16_224"
    assert [s.name for s in PAPER.group("heterogeneous")] == PAPER_HETEROGENEOUS
    assert [s.name for s in PAPER.group("homogeneous")] == PAPER_HOMOGENEOUS
    assert PAPER.group("all") == PAPER.group("paper10") and len(PAPER.group("all")) == 10
    for spec in [PAPER.ap, *PAPER.group("all")]:
        assert spec.pretrained
        check_model_name(spec.timm_name)


def test_spec_key_is_json_and_complete():
    spec = EMBEDDED.ap
    key = spec.key()
    assert json.loads(json.dumps(key)) == key
    assert key != replace(spec, seed=spec.seed + 1).key()
    assert key != replace(spec, epochs=spec.epochs + 1).key()
    assert key != replace(spec, kwargs=(("depth", 1),)).key()


def test_spec_validation():
    with pytest.raises(ValueError, match="mean and std"):
        EncoderSpec("x", "resnet10t", epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        EncoderSpec("x", "resnet10t", mean=(0.5,), std=(0.5,))


# --------------------------------------------------------------------------- weights files
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_loads_through_timm(tmp_path, suffix):
    torch.manual_seed(0)
    reference = timm.create_model("resnet10t", pretrained=False, num_classes=1000).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics must survive too
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"resnet10t{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    else:
        torch.save(reference.state_dict(), path)

    spec = EncoderSpec("resnet10t", "resnet10t", pretrained=True)
    assert find_weights_file(spec, tmp_path) == path
    loaded = create_encoder(spec, in_chans=3, num_classes=1000, weights_file=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), reference(x))
        # a different head size keeps the loaded features
        features = create_encoder(spec, in_chans=3, num_classes=10, weights_file=path).eval()
        torch.testing.assert_close(features.forward_features(x), reference.forward_features(x))


def test_missing_weights_say_which_file_to_put_where(tmp_path):
    spec = PAPER.users["levit_128s.fb_dist_in1k"]
    with pytest.raises(WeightsNotFoundError) as info:
        find_weights_file(spec, tmp_path)
    assert str(tmp_path / "levit_128s.fb_dist_in1k.safetensors") in str(info.value)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        create_encoder(spec, in_chans=3, num_classes=10, weights_file=tmp_path / "nope.safetensors")


# --------------------------------------------------------------------------- preprocessing
def test_preprocess_matches_channels_size_and_normalisation():
    config = {"input_size": (3, 64, 48), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.2)}
    gray = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    out = make_preprocess(config)(gray)
    assert out.shape == (2, 3, 64, 48) and out.dtype == torch.float32
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([-2.5, -2.0, -1.5]))
    colour = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    one = make_preprocess({"input_size": (1, 8, 8), "mean": 0.0, "std": 1.0})(colour)
    torch.testing.assert_close(one, torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError, match="input_size"):
        make_preprocess({"mean": 0.0, "std": 1.0})


def test_random_shift_moves_content_and_fills_zeros():
    images = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)
    images[:, :, 3:5, 3:5] = 200
    generator = torch.Generator().manual_seed(0)
    assert random_shift(images, 0, generator) is images
    shifted = random_shift(images, 2, generator)
    assert shifted.shape == images.shape
    assert torch.all(shifted.sum(dim=(1, 2, 3)) == images.sum(dim=(1, 2, 3)))  # nothing lost
    assert len({tuple(s.nonzero()[0].tolist()) for s in shifted}) > 5  # varied offsets


# --------------------------------------------------------------------------- extraction
@pytest.fixture(scope="module")
def tiny_data() -> ImageSplits:
    """A small, fast stand-in for a dataset (random 'digits' whose class sets a bright row)."""
    return tiny_splits()


def test_extract_latents_matches_a_plain_forward(tiny_data):
    model = create_encoder(TINY_SPEC, in_chans=1, num_classes=10).eval()
    preprocess = make_preprocess({"input_size": (1, 32, 32), "mean": 0.1, "std": 0.3})
    images = tiny_data.images["test"]
    z = extract_latents(model, images, preprocess, batch_size=7, progress=False)
    assert z.shape == (len(images), model.num_features) and z.dtype == np.float32
    with torch.inference_mode():
        x = preprocess(torch.from_numpy(images.copy()))
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
    np.testing.assert_allclose(z, expected.numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        extract_latents(model, images.astype(np.float32), preprocess, progress=False)


def test_training_is_deterministic(tiny_data):
    images, labels = tiny_data.images["train"], tiny_data.labels["train"]
    first, info = train_encoder(TINY_SPEC, images, labels, num_classes=10, progress=False)
    second, _ = train_encoder(TINY_SPEC, images, labels, num_classes=10, progress=False)
    other, _ = train_encoder(
        replace(TINY_SPEC, seed=6), images, labels, num_classes=10, progress=False
    )
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert info["params"] > 0 and np.isfinite(info["final_loss"])


def test_latents_and_heads_are_cached(tiny_data, tmp_path, monkeypatch):
    cache = Cache(tmp_path)
    latents = encoder_latents(TINY_SPEC, tiny_data, cache, progress=False)
    assert latents.meta["cached"] is False
    assert latents.dim == 512 and latents.splits["train"].shape == (320, 512)
    head = head_asset(latents, tiny_data, seed=0, cache=cache)
    assert head.meta["cached"] is False and 0.0 <= head.clean_test_accuracy <= 1.0

    import common.assets.store as assets

    def forbidden(*args, **kwargs):
        raise AssertionError("a cache hit must not train or extract")

    import common.assets.encoders as encoders

    monkeypatch.setattr(encoders, "train_encoder", forbidden)  # loaded lazily by the store
    monkeypatch.setattr(assets, "extract_latents", forbidden)
    monkeypatch.setattr(assets, "train_head", forbidden)
    again = encoder_latents(TINY_SPEC, tiny_data, cache, progress=False)
    head_again = head_asset(again, tiny_data, seed=0, cache=cache)
    assert again.meta["cached"] and head_again.meta["cached"]
    for split in latents.splits:
        np.testing.assert_array_equal(again.splits[split], latents.splits[split])
    np.testing.assert_array_equal(
        head_again.module()(torch.from_numpy(again.splits["test"])).argmax(1).numpy(),
        head.module()(torch.from_numpy(latents.splits["test"])).argmax(1).numpy(),
    )


def test_latents_rebuilt_from_cached_encoder(tiny_data, tmp_path, monkeypatch):
    """New data to extract (e.g. a new test split) reuses the trained encoder."""
    cache = Cache(tmp_path)
    encoder_latents(TINY_SPEC, tiny_data, cache, progress=False)
    import common.assets.encoders as encoders

    monkeypatch.setattr(encoders, "train_encoder", lambda *a, **k: pytest.fail("retrained"))
    changed = replace(tiny_data, fingerprint="tiny-1")
    latents = encoder_latents(TINY_SPEC, changed, cache, progress=False)
    assert latents.meta["cached"] is False and latents.meta["encoder_cached"] is True


def test_pretrained_model_from_weights_dir(tiny_data, tmp_path):
    """The paper zoo's path: local weights, timm's input size, gray repeated to RGB."""
    spec = PAPER.users["mobilenetv3_small_075"]
    path = tmp_path / "weights" / f"{spec.name}.safetensors"
    path.parent.mkdir()

    def write_weights(seed: int) -> None:
        from safetensors.torch import save_file

        torch.manual_seed(seed)
        model = timm.create_model(spec.timm_name, pretrained=False)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))

    write_weights(0)
    cache = Cache(tmp_path / "cache")
    small = replace(
        tiny_data,
        images={k: v[:40] for k, v in tiny_data.images.items()},
        labels={k: v[:40] for k, v in tiny_data.labels.items()},
    )
    latents = encoder_latents(spec, small, cache, progress=False, weights_dir=path.parent)
    assert latents.dim == 1024 and not latents.meta["cached"]
    model, preprocess, _ = load_encoder(spec, small, cache, weights_dir=path.parent)
    x = preprocess(torch.from_numpy(small.images["test"][:2].copy()))
    assert x.shape == (2, 3, 224, 224)
    cfg = timm.data.resolve_data_config(model=model)
    std, mean = (torch.tensor(cfg[k]).view(1, 3, 1, 1) for k in ("std", "mean"))
    pixels = x * std + mean
    torch.testing.assert_close(pixels[:, 0], pixels[:, 2])  # gray repeated to RGB
    torch.testing.assert_close(pixels[:, 1], pixels[:, 2])
    again = encoder_latents(spec, small, cache, progress=False, weights_dir=path.parent)
    assert again.meta["cached"]
    write_weights(1)  # new weights, same file name: a different cache entry
    changed = encoder_latents(spec, small, cache, progress=False, weights_dir=path.parent)
    assert not changed.meta["cached"]
    assert not np.allclose(changed.splits["test"], latents.splits["test"])


# --------------------------------------------------------------------------- the real zoo
@pytest.mark.slow
def test_embedded_zoo_is_accurate_and_cached(embedded_source):
    source = embedded_source
    table = source.warm(progress=False)  # builds the zoo if the cache is cold
    assert list(table.role) == ["AP", *(f"user {k}" for k in range(source.num_users))]
    assert source.num_users == len(EMBEDDED.group("all"))
    accuracies = dict(zip(table.model, table.clean_test_accuracy, strict=True))
    assert min(accuracies.values()) >= 0.85, accuracies
    dims = table.latent_dim.tolist()
    assert len(set(dims[1:])) >= 5, dims

    started = time.perf_counter()
    again = source.warm(progress=False)
    assert time.perf_counter() - started < 10
    assert again.cached.all()
    assert {"role", "model", "timm_name", "latent_dim", "clean_test_accuracy"} <= set(again)

    # each party loads exactly its own assets
    ap = source.ap_inputs()
    assert ap.model == EMBEDDED.ap.name and ap.test.shape == (1000, dims[0])
    for k in range(source.num_users):
        data = source.user_data(k)
        assert data.name == source.settings.users.models[k]
        assert data.test.shape == (1000, dims[k + 1])
        clean = float(np.mean(data.predict(data.test) == data.test_labels))
        assert clean == table.clean_test_accuracy[k + 1]
    first_two = AssetSource(source.settings.replace(models=source.settings.users.models[:2]))
    np.testing.assert_array_equal(first_two.user_data(1).test, source.user_data(1).test)
