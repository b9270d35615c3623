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
from common.parties.grouping import Grouping
from common.parties.user import User
from common.registry import METHODS


class AccessPoint(abc.ABC):
    """One AP holding its pilot and test latents and its precoder state.

    ``rounds``, ``rho``, ``seed`` and ``conventions`` come from the validated run settings.

    A subclass (one per method, registered with ``@METHODS.register("name")`` or named
    by import path ``package.module:ClassName``) provides:

    - ``method``, its registered name, and ``user_class``, the
      :class:`~common.parties.user.User` subclass that answers it;
    - :meth:`train_messages`, :meth:`update` and :meth:`test_messages` (abstract);
    - for an iterative method, :meth:`precoders` and :meth:`restore`, so that an
      interrupted run can resume from its checkpoint (without ``restore`` it is not
      checkpointed);
    - optionally :meth:`rounds_for` (a one-shot method returns 1), :meth:`check_reply`
      (the shapes it expects, then ``super().check_reply``), :meth:`side_channel_uses`,
      and ``whitening`` (the whitening of what it sends, for the reported loading);
    - if it defines ``__init__``, the same arguments, passed on to ``super().__init__``
      (the session builds every AP class alike).

    Parameters
    ----------
    pilots : ndarray, shape (n, d), float
        The AP's pilot latents, one row per pilot (stored as ``d × n`` float64 columns).
    test : ndarray, shape (n_test, d), float
        The AP's test latents, one row per test sample.
    link : LinkConfig
        Antennas, channel uses, SNR and power of every link.
    users : sequence of int
        The indices of the users it serves (at least one).
    rounds : int
        The configured training rounds ``T`` (see :meth:`rounds_for`).
    rho : float
        The ADMM penalty ``ρ`` (> 0; used by the ADMM methods).
    seed : int
        The run's seed (the AP's random streams).
    conventions : Conventions, optional
        The reading of the algorithm (default: corrected).
    aggregator : Aggregator, optional
        The consensus rule (default: :class:`~common.maths.aggregation.Mean`).
    grouping : Grouping, optional
        How users are grouped (``strategy.clusters``, ``grouping``, ``groups``,
        ``regroup_every``; read by the clustered AP only).

    Attributes
    ----------
    method : str
        The registered method name (class attribute).
    user_class : type of User
        The user side of the method (class attribute).
    whitening : Whitening or None
        The AP's whitening of what it sends, if any.
    link : LinkConfig
        As given.
    users : tuple of int
        As given.
    rounds : int
        As given.
    rho : float
        As given.
    seed : int
        As given.
    conventions : Conventions
        As given.
    aggregator : Aggregator
        The consensus rule.
    grouping : Grouping
        As given (default: by model).
    dim : int
        The AP's latent size ``d``.

    Raises
    ------
    common.maths.validation.InvalidValue
        The pilot or test latents are not a non-empty 2-D array of finite values (a
        ``ValueError``).
    ValueError
        The pilot and test latents have different feature counts, or ``users`` is empty.
    """

    method: ClassVar[str] = ""
    user_class: ClassVar[type[User]]  # the user side of this method
    # the settings this method reads (one it does not read is refused when set explicitly)
    uses_rho: ClassVar[bool] = True  # strategy.rho
    uses_aggregator: ClassVar[bool] = True  # consensus.aggregator, consensus.trim_fraction
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
        grouping: Grouping | None = None,
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
        self.grouping = Grouping() if grouping is None else grouping
        self.dim = pilots.shape[1]
        self._pilots = pilots.T.astype(np.float64)  # (d, n)
        self._test = test.T.astype(np.float64)

    @property
    def n_pilots(self) -> int:
        """The number of pilots ``n``."""
        return self._pilots.shape[1]

    @classmethod
    def rounds_for(cls, rounds: int) -> int:
        """Training rounds this method runs when configured with ``rounds`` (iterative
        methods: all of them); known before the AP is built, so runs can be grouped.

        Overridable (the feature-selection baselines return 1).

        Parameters
        ----------
        rounds : int
            The configured rounds ``T``.

        Returns
        -------
        int
            The rounds this method runs.
        """
        return rounds

    @property
    def num_rounds(self) -> int:
        """The training rounds this AP runs (:meth:`rounds_for` of its ``rounds``)."""
        return self.rounds_for(self.rounds)

    @abc.abstractmethod
    def train_messages(self, users: Sequence[int]) -> dict[int, protocol.Message]:
        """Downlink of the current round for each listed user.

        Parameters
        ----------
        users : sequence of int
            This round's participants (a subset of :attr:`users`, sorted).

        Returns
        -------
        dict of int to Message
            One message per listed user, of its ``user_class.TRAIN_KIND`` (users may share
            one message object); bytes are counted per user.
        """

    def absorb(self, user: int, reply: protocol.Message) -> object:
        """What :meth:`update` keeps of one accepted reply, taken as the reply arrives.

        Overridable; the reply itself by default. A method whose update reduces each
        uplink on its own (the ADMM APs' local F step) returns the reduction, so a round
        holds K small reductions instead of K uplinks; it is called after the previous
        round's update and before this round's.

        Parameters
        ----------
        user : int
            The replying user.
        reply : Message
            Its uplink, accepted by :meth:`check_reply`.

        Returns
        -------
        object
            What :meth:`update` receives for this user.

        Raises
        ------
        ValueError
            The reply cannot be used (the session records the user's failure, as for
            :meth:`check_reply`).
        """
        return reply

    @abc.abstractmethod
    def update(
        self,
        replies: Mapping[int, object],
        weights: Mapping[int, float] | None = None,
    ) -> dict[str, float]:
        """Absorb the replies of the users that answered; return AP-side round metrics.

        ``weights`` (each user's reliability) serve aggregators that weigh users.

        Parameters
        ----------
        replies : Mapping of int to object
            The accepted uplinks by user (those :meth:`check_reply` let through), as
            :meth:`absorb` kept them; may be empty, in which case the state must stay
            as it is.
        weights : Mapping of int to float, optional
            Each replying user's reliability (``1 / pilot MSE``, or 1).

        Returns
        -------
        dict of str to float
            AP-side metrics of the round; the history reads ``primal_residual`` and
            ``power`` (``‖Z‖²``, linear) from it.
        """

    def check_reply(self, user: int, reply: protocol.Message) -> None:
        """Refuse a reply the update must not see (raises ``ValueError`` saying why).

        Non-finite values would poison the consensus for every user; subclasses
        add the shapes they expect.

        Parameters
        ----------
        user : int
            The replying user's index.
        reply : Message
            Its uplink.

        Raises
        ------
        ValueError
            An array of the reply holds NaN or Inf. The session catches exactly
            ``ValueError`` and records the user's failure, so overrides raise it too.
        """
        for name, value in reply.arrays().items():
            if bad := validation.non_finite(value):
                raise ValueError(f"{reply.KIND}.{name} has {bad} non-finite value(s)")

    @abc.abstractmethod
    def test_messages(self, users: Sequence[int]) -> dict[int, protocol.Message]:
        """The test-split transmission for each listed user.

        Parameters
        ----------
        users : sequence of int
            The users to evaluate (sorted).

        Returns
        -------
        dict of int to Message
            One message per listed user, of its ``user_class.TEST_KIND``.
        """

    def precoders(self) -> dict[str, np.ndarray]:
        """The learned state, by name (for checks and for saving).

        Overridable; what it returns is what :meth:`restore` takes back.

        Returns
        -------
        dict of str to ndarray
            Named arrays (empty for a method that learns nothing); e.g. ``F``, ``Z``,
            ``U`` (``Nt·u × m`` complex128) for the federated AP.
        """
        return {}

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Take back what :meth:`precoders` returned after some round, to resume an
        interrupted run from its checkpoint. Iterative methods implement it; without it a
        run of this AP cannot be checkpointed.

        Parameters
        ----------
        state : Mapping of str to ndarray
            What :meth:`precoders` returned.

        Raises
        ------
        NotImplementedError
            On the base class (the method is not checkpointed).
        ValueError
            In implementations, a ``state`` that does not hold this AP's arrays with its
            shapes.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement restore()")

    def _expect_state(self, state: Mapping[str, np.ndarray]) -> None:
        """``state`` holds the arrays :meth:`precoders` has, with their shapes (a checkpoint
        of this AP)."""
        shapes = {name: value.shape for name, value in self.precoders().items()}
        if set(state) != set(shapes):
            raise ValueError(
                f"a {self.method} AP's state holds {sorted(shapes)}, "
                f"the checkpoint has {sorted(state)}"
            )
        for name, shape in shapes.items():
            if tuple(state[name].shape) != tuple(shape):
                raise ValueError(
                    f"state {name} has shape {tuple(state[name].shape)}, "
                    f"this AP's is {tuple(shape)}"
                )

    def trimmed_per_end(self, accepted: Sequence[int]) -> int:
        """Users the consensus rule cut at each end in the last :meth:`update`.

        Overridable (a method that runs the rule per group sums over its groups).

        Parameters
        ----------
        accepted : sequence of int
            The users whose replies the update took.

        Returns
        -------
        int
            ``aggregator.trimmed(len(accepted))`` for a method that combines precoders
            (``trimmed_mean``: ``⌊β·accepted⌋``), else 0.
        """
        return self.aggregator.trimmed(len(accepted)) if self.uses_aggregator else 0

    def groups(self) -> dict[int, int]:
        """Each user's group: the users that receive one downlink stream.

        Overridable; every user in group 0 by default (one broadcast stream, as the
        federated AP and the feature-selection baselines send).

        Returns
        -------
        dict of int to int
            User → group label, for every user of :attr:`users`.
        """
        return {k: 0 for k in self.users}

    def side_channel_uses(self) -> int:
        """Channel uses that side information costs on top of the values' ``u``.

        The convention of the paper's code: Top-K's indices cost as many channel
        uses as the values they index; every other method sends none per sample.

        Returns
        -------
        int
            Channel uses per sample charged to side information (0 here).
        """
        return 0

    @property
    def whitening_loading(self) -> float:
        """Diagonal loading its whitening needed (reported in the history).

        Returns
        -------
        float
            The absolute loading δ; 0.0 without whitening.
        """
        return 0.0 if self.whitening is None else self.whitening.loading


def access_point_class(name: str) -> type[AccessPoint]:
    """A registered method by name or paper alias, or ``package.module:ClassName``.

    Parameters
    ----------
    name : str
        ``federated``, ``multi_link``, ``first_k``, ``top_k``, ``eigen_k``, a paper alias
        (``shared``, ``multi-link``, ``First-K``, ``Top-K``) or an import path.

    Returns
    -------
    type of AccessPoint

    Raises
    ------
    ValueError
        ``name`` is unknown, cannot be imported, or does not name an
        :class:`AccessPoint` subclass.
    """
    return METHODS.get(name, subclass_of=AccessPoint)
