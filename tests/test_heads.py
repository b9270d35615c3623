"""The paper's classifier head: structure, training, (de)serialisation, prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.assets.encoders import state_arrays
from common.assets.heads import (
    ClassifierHead,
    accuracy,
    head_from_state,
    predict,
    train_head,
)


def _blobs(n: int, dim: int = 24, classes: int = 4, seed: int = 0):
    """Separable Gaussian clusters: a head must learn them almost perfectly."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(size=(classes, dim)) * 3
    y = np.arange(n) % classes
    z = centres[y] + rng.normal(size=(n, dim))
    return z.astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def data():
    return _blobs(400, seed=0), _blobs(100, seed=1), _blobs(200, seed=2)


def test_head_structure_and_scale_invariance():
    head = ClassifierHead(24, 7).eval()
    names = [type(m).__name__ for m in head.children()]
    assert names == ["LayerNorm", "Linear", "LayerNorm", "Linear"]
    assert head.fc1.out_features == 10 and head.dim == 24 and head.num_classes == 7
    z = torch.randn(5, 24)
    out = head(z)
    assert out.shape == (5, 7)
    torch.testing.assert_close(head(3.0 * z), out)  # L2 normalisation first
    with pytest.raises(ValueError, match="num_classes"):
        ClassifierHead(4, 0)


def test_training_learns_and_reports(data):
    (tz, ty), (vz, vy), (sz, sy) = data
    head, info = train_head(tz, ty, vz, vy, num_classes=4, seed=0, max_epochs=30, patience=5)
    assert accuracy(head, sz, sy) > 0.95
    assert info["val_accuracy"] == pytest.approx(accuracy(head, vz, vy))  # best restored
    assert 1 <= info["best_epoch"] <= info["epochs"] <= 30
    assert not head.training


def test_early_stopping_stops(data):
    (tz, ty), (vz, vy), _ = data
    _, info = train_head(tz, ty, vz, vy, num_classes=4, seed=0, max_epochs=200, patience=2)
    assert info["epochs"] < 200 and info["epochs"] - info["best_epoch"] <= 2


def test_training_is_deterministic_per_seed(data):
    (tz, ty), (vz, vy), _ = data
    kwargs = {"num_classes": 4, "max_epochs": 5, "patience": 5}
    a, _ = train_head(tz, ty, vz, vy, seed=1, **kwargs)
    b, _ = train_head(tz, ty, vz, vy, seed=1, **kwargs)
    c, _ = train_head(tz, ty, vz, vy, seed=2, **kwargs)
    sa, sb, sc = state_arrays(a), state_arrays(b), state_arrays(c)
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert not all(np.array_equal(sa[k], sc[k]) for k in sa)


def test_state_round_trip(data):
    (tz, ty), (vz, vy), (sz, _) = data
    head, _ = train_head(tz, ty, vz, vy, num_classes=4, seed=0, max_epochs=3)
    state = state_arrays(head)
    assert all(isinstance(v, np.ndarray) for v in state.values())
    rebuilt = head_from_state(state)
    assert (rebuilt.dim, rebuilt.num_classes) == (24, 4)
    np.testing.assert_array_equal(predict(rebuilt, sz), predict(head, sz))
    with pytest.raises(ValueError, match="ClassifierHead"):
        head_from_state({"weight": np.zeros((2, 2))})


def test_predict_is_batched_int64(data):
    (tz, ty), (vz, vy), (sz, sy) = data
    head, _ = train_head(tz, ty, vz, vy, num_classes=4, seed=0, max_epochs=3)
    full = predict(head, sz)
    assert full.dtype == np.int64 and full.shape == (len(sz),)
    np.testing.assert_array_equal(predict(head, sz, batch_size=7), full)
    assert accuracy(head, sz, sy) == pytest.approx(np.mean(full == sy))
    with pytest.raises(ValueError, match="N x d"):
        predict(head, sz[0])


def test_bad_training_inputs(data):
    (tz, ty), (vz, vy), _ = data
    with pytest.raises(ValueError, match="train"):
        train_head(tz, ty[:-1], vz, vy, num_classes=4, seed=0)
    with pytest.raises(ValueError, match="patience=0"):
        train_head(tz, ty, vz, vy, num_classes=4, seed=0, patience=0)
    with pytest.raises(ValueError, match="lr"):
        train_head(tz, ty, vz, vy, num_classes=4, seed=0, lr=-1.0)
