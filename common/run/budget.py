"""How much memory a run needs, from its sizes, before anything is allocated.

The big arrays of a run are known from the settings and the data's sizes: the
AP's whitened pilots and test latents, the precoded downlink ``F X̄``
(``Nt·u × n``), every user's uplink ``Aᴴ Ȳ`` (``Nt·u × n``) and its channels
(``Nr·u × Nt·u``, three of them: true, known, test), pilots, received signals
and test latents. Under Flower on a local Ray, the actors share one copy of
each user's prepared inputs (pilots, whitened pilots), the large part; on a
Ray cluster every actor may hold a copy of every user it serves. A run whose
estimate exceeds the memory available is refused with the numbers, instead of
exhausting the machine seconds later.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from common.run.settings import RunSettings

COMPLEX, REAL, SINGLE = 16, 8, 4  # bytes per entry


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of the AP's arrays, of one copy of all users' arrays, and of the whole run."""

    ap: int
    users: int
    copies: int  # how many copies of the users the runtime may hold

    @property
    def total(self) -> int:
        return self.ap + self.copies * self.users


def estimate(
    settings: RunSettings,
    n_pilots: int,
    n_test: int,
    ap_dim: int,
    user_dims: Sequence[int],
    *,
    user_copies: int = 1,
    models: Sequence[str] | None = None,
) -> MemoryEstimate:
    """The run's memory from its sizes (latent dimensions are real feature counts).

    Parameters
    ----------
    settings : RunSettings
        The link (``Nt·u``, ``Nr·u``).
    n_pilots, n_test : int
        Pilot and test samples.
    ap_dim : int
        The AP's latent dimension ``d``.
    user_dims : sequence of int
        Each user's latent dimension ``d_k``, one per user.
    user_copies : int
        How many copies of the users the runtime may hold.
    models : sequence of str, optional
        Each user's model: users of one model share its prepared inputs (pilots, ``Ȳ``,
        test latents), counted once; what a user holds of its own (channels, received
        signals, ``G_k``) is counted per user. Default: every user its own model.

    Returns
    -------
    MemoryEstimate
        Bytes of the AP's arrays (its inputs, the downlink and every user's uplink of a
        round), of one copy of the users, and how many copies.
    """
    tx, rx = settings.link.tx_dim, settings.link.rx_dim
    users = len(user_dims)
    m_ap = math.ceil(ap_dim / 2)
    ap = COMPLEX * (
        m_ap * (n_pilots + n_test) + tx * (n_pilots + n_test) + users * tx * (n_pilots + tx)
    )
    names = list(range(users)) if models is None else list(models)
    shared: dict[object, int] = {}
    own = 0
    for name, d in zip(names, user_dims, strict=True):
        m_k = math.ceil(d / 2)
        own += COMPLEX * (3 * rx * tx + rx * (n_pilots + n_test) + m_k * rx)
        shared[name] = COMPLEX * m_k * n_pilots + SINGLE * d * n_pilots + REAL * d * n_test
    return MemoryEstimate(ap=ap, users=own + sum(shared.values()), copies=user_copies)


def available_memory() -> int:
    """Bytes the machine can still give without swapping (the kernel's ``MemAvailable``)."""
    return psutil.virtual_memory().available


def check_fits(needed: MemoryEstimate, available: int, what: str) -> None:
    """Raise ``MemoryError`` with the numbers if ``needed`` exceeds 90% of ``available``."""
    if needed.total > 0.9 * available:
        gib = 1024**3
        raise MemoryError(
            f"{what} needs about {needed.total / gib:.1f} GiB (AP {needed.ap / gib:.1f} GiB, "
            f"users {needed.users / gib:.1f} GiB x {needed.copies} cop"
            f"{'y' if needed.copies == 1 else 'ies'}) but {available / gib:.1f} GiB are "
            "available: reduce communication.antennas_transmitter/antennas_receiver/"
            "channel_usage, the number of users or data.pilot_fraction"
        )
