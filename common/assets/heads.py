"""The paper's classifier head, trained on a user's clean latents.

Each user classifies what it decodes with a head trained on its own clean
latents; the head's clean test accuracy is the upper bound that alignment can
reach. The head is deliberately small (a 10-unit tanh bottleneck after an L2
normalisation), as in the paper, so that it is cheap to train and to ship.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

HEAD_DEFAULTS: dict[str, Any] = {
    "hidden": 10,
    "max_epochs": 60,
    "patience": 8,
    "lr": 3e-3,
    "batch_size": 128,
}


class ClassifierHead(nn.Module):
    """L2-normalise, LayerNorm(d), Linear(d, h), Tanh, LayerNorm(h), Linear(h, classes)."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 10) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_classes", num_classes), ("hidden", hidden)):
            if int(value) < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        self.norm_in = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.norm_hidden = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    @property
    def dim(self) -> int:
        return self.fc1.in_features

    @property
    def num_classes(self) -> int:
        return self.fc2.out_features

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = F.normalize(z, dim=-1)
        hidden = torch.tanh(self.fc1(self.norm_in(z)))
        return self.fc2(self.norm_hidden(hidden))


def _check_pair(name: str, z: np.ndarray, y: np.ndarray) -> None:
    if z.ndim != 2 or y.ndim != 1 or len(z) != len(y) or len(z) == 0:
        raise ValueError(
            f"{name}: latents must be N x d and labels N (N > 0), got {z.shape} and {y.shape}"
        )


def train_head(
    train_z: np.ndarray,
    train_y: np.ndarray,
    val_z: np.ndarray,
    val_y: np.ndarray,
    *,
    num_classes: int,
    seed: int,
    max_epochs: int = HEAD_DEFAULTS["max_epochs"],
    patience: int = HEAD_DEFAULTS["patience"],
    lr: float = HEAD_DEFAULTS["lr"],
    batch_size: int = HEAD_DEFAULTS["batch_size"],
    hidden: int = HEAD_DEFAULTS["hidden"],
) -> tuple[ClassifierHead, dict]:
    """Train on clean training latents, stop early on validation accuracy.

    Returns the head with its best-validation weights restored and an info
    dict (``epochs``, ``best_epoch``, ``val_accuracy``). Seeded: the same
    inputs and seed give the same head.
    """
    train_z, val_z = np.asarray(train_z, np.float32), np.asarray(val_z, np.float32)
    train_y, val_y = np.asarray(train_y, np.int64), np.asarray(val_y, np.int64)
    _check_pair("train", train_z, train_y)
    _check_pair("val", val_z, val_y)
    for name, value in (
        ("max_epochs", max_epochs),
        ("patience", patience),
        ("batch_size", batch_size),
    ):
        if int(value) < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if not lr > 0:
        raise ValueError(f"lr={lr!r} must be positive")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = ClassifierHead(train_z.shape[1], num_classes, hidden)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    inputs, targets = torch.tensor(train_z), torch.tensor(train_y)

    best = (-1.0, 0, copy.deepcopy(head.state_dict()))
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        head.train()
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(head(inputs[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        val_accuracy = accuracy(head, val_z, val_y)
        if val_accuracy > best[0]:
            best = (val_accuracy, epoch, copy.deepcopy(head.state_dict()))
        elif epoch - best[1] >= patience:
            break
    head.load_state_dict(best[2])
    head.eval()
    info = {"epochs": epoch, "best_epoch": best[1], "val_accuracy": best[0]}
    logger.debug("head trained: %s", info)
    return head, info


def head_from_state(state: dict[str, np.ndarray]) -> ClassifierHead:
    """Rebuild a head from its weights (``state_arrays``); its sizes come from the weight shapes."""
    try:
        hidden, dim = state["fc1.weight"].shape
        num_classes = state["fc2.weight"].shape[0]
    except (KeyError, ValueError) as exc:
        raise ValueError(f"state is not a ClassifierHead state (keys {sorted(state)})") from exc
    head = ClassifierHead(dim, num_classes, hidden)
    head.load_state_dict({name: torch.from_numpy(np.array(v)) for name, v in state.items()})
    head.eval()
    return head


def predict(head: nn.Module, z: np.ndarray, *, batch_size: int = 4096) -> np.ndarray:
    """Class predictions (int64) for latents ``N x d``, batched, in inference mode."""
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2:
        raise ValueError(f"z must be N x d, got shape {z.shape}")
    was_training = head.training
    head.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(z), batch_size):
            logits = head(torch.tensor(z[start : start + batch_size]))
            out.append(logits.argmax(dim=1).numpy())
    head.train(was_training)
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def accuracy(head: nn.Module, z: np.ndarray, y: np.ndarray) -> float:
    """Fraction of correct predictions."""
    y = np.asarray(y)
    if len(y) != len(z):
        raise ValueError(f"z has {len(z)} rows but y has {len(y)} labels")
    return float(np.mean(predict(head, z) == y)) if len(y) else float("nan")
