"""A small, fast stand-in for a dataset, for tests of encoders, latents and heads (it
imports only numpy and the dataset class, so GPU-only machines can use it too)."""

from __future__ import annotations

import numpy as np

from common.assets.data import ImageSplits
from common.assets.zoo import EncoderSpec

# a resnet10t trained for one epoch on tiny_splits (a second or two on a CPU)
TINY_SPEC = EncoderSpec(
    "tiny_resnet",
    "resnet10t",
    seed=5,
    epochs=1,
    lr=3e-3,
    batch_size=32,
    mean=(0.1,),
    std=(0.3,),
)


def tiny_splits(fingerprint: str = "tiny-0") -> ImageSplits:
    """Random 1 x 32 x 32 'digits' whose class sets a bright row: 320 train, 60 val and 60
    test images of 10 classes (uint8), seeded."""
    rng = np.random.default_rng(0)

    def split(n: int):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, size=(n, 1, 32, 32), dtype=np.uint8)
        images[np.arange(n), 0, 3 + 2 * labels, :] = 255
        return images, labels.astype(np.int64)

    parts = {"train": split(320), "val": split(60), "test": split(60)}
    return ImageSplits(
        name="tiny",
        images={k: v[0] for k, v in parts.items()},
        labels={k: v[1] for k, v in parts.items()},
        num_classes=10,
        fingerprint=fingerprint,
    )
