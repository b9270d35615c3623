"""The access point's side of every alignment method, runtime-agnostic.

An :class:`AccessPoint` produces the downlink messages of each round, absorbs
the users' replies, and produces the test transmissions. Each subclass names the
:class:`~common.parties.user.User` class that answers it, so a new method is one
pair of classes, registered by name in :data:`common.registry.METHODS` (or
loaded by import path, ``package.module:ClassName``).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from common.maths import validation
from common.maths.aggregation import Aggregator, Mean
from common.maths.conventions import CORRECTED, Conventions
from common.maths.link import LinkConfig
from common.maths.whitening import Whitening
from common.parties import protocol
from common.parties.user import User
from common.registry import METHODS


class AccessPoint(abc.ABC):
    """One AP holding its pilot and test latents and its precoder state.

    ``rounds``, ``rho``, ``seed`` and ``conventions`` come from the validated run settings.
    """

    method: ClassVar[str] = ""
    user_class: ClassVar[type[User]]  # the user side of this method
    whitening: Whitening | None = None  # the AP's whitening of what it sends, if any

    def __init__(
        self,
        pilots: np.ndarray,
        test: np.ndarray,
        link: LinkConfig,
        users: Sequence[int],
        *,
        rounds: int,
        rho: float,
        seed: int,
        conventions: Conventions = CORRECTED,
        aggregator: Aggregator | None = None,
    ):
        pilots = validation.finite_matrix("AP pilot latents", pilots)
        test = validation.finite_matrix("AP test latents", test)
        if pilots.shape[1] != test.shape[1]:
            raise ValueError(
                f"AP pilot latents have {pilots.shape[1]} features, test latents {test.shape[1]}"
            )
        if not users:
            raise ValueError("an access point needs at least one user")
        self.link = link
        self.users = tuple(int(k) for k in users)
        self.rounds = rounds
        self.rho = rho
        self.seed = seed
        self.conventions = conventions
        self.aggregator = Mean() if aggregator is None else aggregator
        self.dim = pilots.shape[1]
        self._pilots = pilots.T.astype(np.float64)  # (d, n)
        self._test = test.T.astype(np.float64)

    @property
    def n_pilots(self) -> int:
        return self._pilots.shape[1]

    @classmethod
    def rounds_for(cls, rounds: int) -> int:
        """Training rounds this method runs when configured with ``rounds`` (iterative
        methods: all of them); known before the AP is built, so runs can be grouped."""
        return rounds

    @property
    def num_rounds(self) -> int:
        return self.rounds_for(self.rounds)

    @abc.abstractmethod
    def train_messages(self, users: Sequence[int]) -> dict[int, protocol.Message]:
        """Downlink of the current round for each listed user."""

    @abc.abstractmethod
    def update(
        self,
        replies: Mapping[int, protocol.Message],
        weights: Mapping[int, float] | None = None,
    ) -> dict[str, float]:
        """Absorb the replies of the users that answered; return AP-side round metrics.

        ``weights`` (each user's reliability) serve aggregators that weigh users."""

    def check_reply(self, user: int, reply: protocol.Message) -> None:
        """Refuse a reply the update must not see (raises ``ValueError`` saying why).

        Non-finite values would poison the consensus for every user; subclasses
        add the shapes they expect.
        """
        for name, value in reply.arrays().items():
            if bad := validation.non_finite(value):
                raise ValueError(f"{reply.KIND}.{name} has {bad} non-finite value(s)")

    @abc.abstractmethod
    def test_messages(self, users: Sequence[int]) -> dict[int, protocol.Message]:
        """The test-split transmission for each listed user."""

    def precoders(self) -> dict[str, np.ndarray]:
        """The learned state, by name (for checks and for saving)."""
        return {}

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Take back what :meth:`precoders` returned after some round, to resume an
        interrupted run from its checkpoint. Iterative methods implement it; without it a
        run of this AP cannot be checkpointed."""
        raise NotImplementedError(f"{type(self).__name__} does not implement restore()")

    def _expect_state(self, state: Mapping[str, np.ndarray]) -> None:
        """``state`` holds the arrays :meth:`precoders` has, with their shapes (a checkpoint
        of this AP)."""
        shapes = {name: value.shape for name, value in self.precoders().items()}
        if set(state) != set(shapes):
            raise ValueError(f"a {self.method} AP's state holds {sorted(shapes)}, "
                             f"the checkpoint has {sorted(state)}")  # fmt: skip
        for name, shape in shapes.items():
            if tuple(state[name].shape) != tuple(shape):
                raise ValueError(f"state {name} has shape {tuple(state[name].shape)}, "
                                 f"this AP's is {tuple(shape)}")  # fmt: skip

    def side_channel_uses(self) -> int:
        """Channel uses that side information costs on top of the values' ``u``.

        The convention of the paper's code: Top-K's indices cost as many channel
        uses as the values they index; every other method sends none per sample.
        """
        return 0

    @property
    def whitening_loading(self) -> float:
        """Diagonal loading its whitening needed (reported in the history)."""
        return 0.0 if self.whitening is None else self.whitening.loading


def access_point_class(name: str) -> type[AccessPoint]:
    """A registered method by name or paper alias, or ``package.module:ClassName``."""
    return METHODS.get(name, subclass_of=AccessPoint)
