"""The ADMM methods: federated (one shared ``F``) and multi-link (one ``F`` per user).

The AP precodes its whitened pilots with ``F``; each :class:`AdmmUser` fits its
MMSE equalizer ``G_k`` on what it receives and sends back ``Aᴴ A`` and ``Aᴴ Ȳ``
(``A = G_k 𝓗_k``); the AP solves each user's local ``F_k`` step and runs the
consensus, projection and dual updates (see docs/ALGORITHM.md).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

from common.maths import admm
from common.maths.aggregation import Mean
from common.maths.compression import compress, decompress
from common.maths.seeding import Stream, rng
from common.maths.whitening import Whitening, fit_whitening
from common.parties import grouping, protocol
from common.parties.access_point import AccessPoint
from common.parties.user import TrainReply, User
from common.registry import METHODS

logger = logging.getLogger(__name__)


class AdmmUser(User):
    """Fits ``G_k`` on the precoded pilots; decodes test transmissions with it.

    Trains on :class:`~common.parties.protocol.AlignPilots`, answers with
    :class:`~common.parties.protocol.AlignUplink` and decodes
    :class:`~common.parties.protocol.AlignTest` (docs/ALGORITHM.md, §3 "Federated ADMM").

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`~common.parties.user.User`.

    Attributes
    ----------
    g : ndarray, shape (m_k, Nr·u), complex128, or None
        The last fitted equalizer ``G_k`` (``None`` before the first training round).
    """

    TRAIN_KIND = protocol.AlignPilots.KIND
    TEST_KIND = protocol.AlignTest.KIND
    REFIT_KIND = protocol.AlignRefit.KIND
    SLOT_KIND = protocol.AlignSlot.KIND
    TRACK_KIND = protocol.AlignTrack.KIND

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._y_bar = self.prepared.derived["y_bar"]
        self._y_energy = float(self.prepared.derived["y_energy"])
        self.g: np.ndarray | None = None

    @classmethod
    def derive(cls, pilots: np.ndarray, whitening: Whitening) -> dict[str, np.ndarray]:
        """The whitened pilots ``Ȳ`` (every G step's target) and their energy.

        Parameters
        ----------
        pilots : ndarray, shape (d_k, n), float32
            The user's pilot latents, one column per sample.
        whitening : Whitening
            The user's whitening ``(μ_k, L_k)``.

        Returns
        -------
        dict of str to ndarray
            ``y_bar``: ``Ȳ_k = L_k⁻¹(c(Y_k) − μ_k1ᵀ)``, shape (m_k, n), complex128;
            ``y_energy``: ``‖Ȳ_k‖²``, a 0-d float64 array.
        """
        y_bar = whitening.whiten(compress(pilots))
        return {"y_bar": y_bar, "y_energy": np.array(np.vdot(y_bar, y_bar).real)}

    def export_state(self) -> dict[str, np.ndarray]:
        """The equalizer learned so far.

        Returns
        -------
        dict of str to ndarray
            ``{"g": G_k}`` (m_k × Nr·u, complex128), or empty before the first round.
        """
        return {} if self.g is None else {"g": self.g}

    def import_state(self, state: dict[str, np.ndarray]) -> None:
        """Take back what :meth:`export_state` returned.

        Parameters
        ----------
        state : dict of str to ndarray
            ``{"g": G_k}``, or empty (no equalizer yet).
        """
        self.g = state.get("g")

    def train(self, message: protocol.Message) -> TrainReply:
        """The G step and the uplink (docs/ALGORITHM.md, §3 "Federated ADMM", steps 2–3).

        Receives ``R_k = 𝓗_k F X̄`` without noise (the noise enters through ``nσ²``),
        fits ``G_k`` (:func:`~common.maths.admm.equalizer`, or the paper's loading with
        :func:`~common.maths.admm.equalizer_with`) and sends ``Aᴴ A``, ``Aᴴ Ȳ`` with
        ``A = G_k 𝓗̂_k``.

        Parameters
        ----------
        message : Message
            An :class:`~common.parties.protocol.AlignPilots` (``F X̄``, Nt·u × n), or an
            :class:`~common.parties.protocol.AlignTrack` (a ``full`` refresh: the same over
            the channel of its deployment slot, and its estimate there).

        Returns
        -------
        TrainReply
            An :class:`~common.parties.protocol.AlignUplink` and the metrics
            ``objective`` (the user's term of the objective), ``pilot_mse`` (the data fit
            per entry of ``Ȳ_k``) and :meth:`~common.parties.user.User.pilot_metrics`.

        Raises
        ------
        TypeError
            The message is not ``align_pilots``.
        ValueError
            The signal does not hold ``n`` pilots of ``Nt·u`` symbols.
        numpy.linalg.LinAlgError
            Under the paper's conventions, a singular loaded system.
        """
        self._expect(message, self.TRAIN_KIND, self.TRACK_KIND)
        true, known = self.h_block, self.h_known
        if message.KIND == self.TRACK_KIND:
            channels = self.channels_at(float(message.time[0]), int(message.slot[0]))
            true, known = channels.train, channels.known
        moments, noise_energy = self._fit(message.signal, true)
        a_gram, a_y = admm.uplink_statistics(self.g, known, self._y_bar)
        objective, fit = admm.local_objective(self._y_energy, moments, self.g, noise_energy)
        metrics = {
            "objective": objective,
            "pilot_mse": fit / self._y_bar.size,
            **self.pilot_metrics(),
        }
        return TrainReply(protocol.AlignUplink(a_gram=a_gram, a_y=a_y), metrics)

    def _fit(
        self, signal: np.ndarray, channel: np.ndarray, columns: np.ndarray | None = None
    ) -> tuple[admm.ReceivedMoments, float]:
        """The G step on the precoded pilots ``signal`` (Nt·u × n, or the ``p`` pilots
        ``columns`` of them) through ``channel``: sets :attr:`g`; the received pilots'
        moments and the noise energy ``pσ²``."""
        target = self._y_bar
        if columns is None:
            self._check_pilot_count(signal)
        else:
            self._check_columns(signal, columns)
            target = self._y_bar[:, columns]
        count = target.shape[1]
        received = channel @ signal
        noise_energy = count * self.noise_variance
        moments = admm.ReceivedMoments.of(target, received)
        if self.conventions.paper:
            loading = self.conventions.paper_g_loading(count, self.link, received.shape[0])
            self.g = admm.equalizer_with(moments, loading)
        else:
            self.g = admm.equalizer(moments, noise_energy)
        return moments, noise_energy

    def decode(self, message: protocol.Message) -> np.ndarray:
        """``ŷ_k = c⁻¹(L_k G_k r + μ_k)`` of the received test transmission ``r``.

        docs/ALGORITHM.md, §2, *Equalizer*; ``r`` goes through the test-time channel with
        noise from ``Stream.EVAL_NOISE``.

        Parameters
        ----------
        message : Message
            An :class:`~common.parties.protocol.AlignTest` (Nt·u × n_test), or an
            :class:`~common.parties.protocol.AlignRefit` whose pilots the user first fits
            its equalizer on (it has not trained in this run), or an
            :class:`~common.parties.protocol.AlignSlot` decoded over the channel at its
            time, after re-fitting ``G_k`` on its pilots when it carries some.

        Returns
        -------
        ndarray, shape (n_test, d_k), float64
            The decoded latents, one row per test sample.

        Raises
        ------
        RuntimeError
            No equalizer yet (the user never trained).
        """
        channel = None  # the test-time channel
        if message.KIND == self.REFIT_KIND:
            self._fit(message.pilots, self.h_block)
        elif message.KIND == self.SLOT_KIND:
            time, slot = float(message.time[0]), int(message.slot[0])
            if message.columns.size:  # a refresh (or what rebuilds a resumed user's G)
                fit_time = float(message.fit_time[0])
                self._fit(message.pilots, self.channels_at(fit_time, slot).train, message.columns)
            channel = self.channels_at(time, slot).train
        if self.g is None:
            raise RuntimeError(f"user {self.index} has no equalizer yet: train first")
        # every slot has the evaluation's noise: slots differ by their channel alone
        received = self.receive(message.signal, Stream.EVAL_NOISE, channel)
        return decompress(self.whitening.dewhiten(self.g @ received), self.dim).T

    def _check_columns(self, signal: np.ndarray, columns: np.ndarray) -> None:
        """A refresh's pilots: ``p`` distinct columns of the ``n``, one signal column each."""
        n = self.n_pilots
        if columns.ndim != 1 or signal.shape[1] != columns.size:
            raise ValueError(
                f"user {self.index}: a refresh of {signal.shape[1]} pilots names "
                f"{columns.size} pilot columns"
            )
        if columns.size and (columns.min() < 0 or columns.max() >= n):
            raise ValueError(
                f"user {self.index}: refresh pilot columns must be in 0..{n - 1}, got "
                f"{int(columns.min())}..{int(columns.max())}"
            )
        if columns.size > 1 and (np.diff(columns) <= 0).any():
            raise ValueError(
                f"user {self.index}: refresh pilot columns must be distinct and increasing"
            )
        if signal.shape[0] != self.link.tx_dim:
            raise ValueError(
                f"user {self.index}: refresh pilots have {signal.shape[0]} symbols per "
                f"sample, expected Nt·u = {self.link.tx_dim}"
            )


@dataclasses.dataclass(frozen=True)
class LocalPrecoder:
    """User k's local precoder ``F_k`` (Nt·u × m, complex128): what the ADMM APs keep
    of its uplink until the round's update (:meth:`_ConsensusAccessPoint.absorb`)."""

    f: np.ndarray


class _ConsensusAccessPoint(AccessPoint):
    """Shared machinery of the ADMM methods: whitened pilots and pilot geometry."""

    user_class = AdmmUser

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        compressed = compress(self._pilots)
        self.whitening = fit_whitening(compressed, unbiased=self.conventions.unbiased_covariance)
        self.x_bar = self.whitening.whiten(compressed)
        self._x_test_bar = self.whitening.whiten(compress(self._test))
        self.geometry = admm.PilotGeometry.from_pilots(self.x_bar, self.rho)
        self.shape = (self.link.tx_dim, self.x_bar.shape[0])

    def _state(self, user: int) -> admm.ConsensusState:
        raise NotImplementedError

    def _check_state(self, state: admm.ConsensusState) -> None:
        """Stop the run, naming the settings, if an update left ``F``, ``Z`` or ``U``
        non-finite (every accepted local step was finite, so the AP's own numbers are)."""
        for name, value in state.arrays().items():
            if not np.isfinite(value).all():
                raise FloatingPointError(
                    f"the AP's {name} is not finite after its update (strategy.rho="
                    f"{self.rho:g}, communication.power={self.link.power:g}): the consensus "
                    "overflowed; use a ρ nearer 1"
                )

    def check_reply(self, user: int, reply: protocol.Message) -> None:
        """Refuse a reply that is not an ``align_uplink`` of the expected shapes.

        Parameters
        ----------
        user : int
            The replying user.
        reply : Message
            Its uplink: ``a_gram`` (Nt·u × Nt·u) and ``a_y`` (Nt·u × n).

        Raises
        ------
        ValueError
            Another kind, another shape, or non-finite values.
        """
        if reply.KIND != protocol.AlignUplink.KIND:
            raise ValueError(f"{self.method} AP expects align_uplink replies, got {reply.KIND!r}")
        m, n = self.link.tx_dim, self.n_pilots
        expected = {"a_gram": (m, m), "a_y": (m, n)}
        for name, shape in expected.items():
            got = getattr(reply, name).shape
            if got != shape:
                raise ValueError(f"align_uplink.{name} must have shape {shape}, got {got}")
        super().check_reply(user, reply)

    def absorb(self, user, reply):
        """The user's local F step (§3, step 4), solved as its uplink arrives.

        Parameters
        ----------
        user : int
            The replying user.
        reply : AlignUplink
            Its accepted uplink (``Nt·u × n`` ``Aᴴ Ȳ``).

        Returns
        -------
        LocalPrecoder
            ``F_k`` (Nt·u × m, complex128), what :meth:`update` needs of the uplink.

        Raises
        ------
        TypeError
            The reply is not an ``align_uplink``.
        ValueError
            The local step is not finite (the session records the user's failure).
        """
        f = self._local_f(self._state(user), reply)
        if not np.isfinite(f).all():
            raise ValueError(
                "its local F step is not finite (the uplink's values overflow the update)"
            )
        return LocalPrecoder(f)

    def _local_f(self, state: admm.ConsensusState, reply: object) -> np.ndarray:
        if isinstance(reply, LocalPrecoder):
            return reply.f
        kind = getattr(reply, "KIND", type(reply).__name__)
        if kind != protocol.AlignUplink.KIND:
            raise TypeError(f"{self.method} AP expects align_uplink replies, got {kind!r}")
        return admm.local_f_step(self.geometry, reply.a_gram, reply.a_y, state.z, state.u)

    def _per_state(
        self, users: Sequence[int], make: Callable[[admm.ConsensusState], protocol.Message]
    ) -> dict[int, protocol.Message]:
        """One message per distinct precoder state (the federated AP sends one to all)."""
        built: dict[int, protocol.Message] = {}
        out = {}
        for k in users:
            state = self._state(k)
            if id(state) not in built:
                built[id(state)] = make(state)
            out[k] = built[id(state)]
        return out

    def train_messages(self, users):
        """``F X̄`` for each user, one message per distinct precoder (§3, step 1).

        Parameters
        ----------
        users : sequence of int
            This round's participants.

        Returns
        -------
        dict of int to AlignPilots
            Signals of shape (Nt·u, n), complex128.
        """
        return self._per_state(users, lambda s: protocol.AlignPilots(signal=s.f @ self.x_bar))

    def test_messages(self, users):
        """``Z X̄_test`` (``F X̄_test`` under the paper's conventions) for each user.

        Parameters
        ----------
        users : sequence of int
            The users to evaluate.

        Returns
        -------
        dict of int to AlignTest
            Signals of shape (Nt·u, n_test), complex128.
        """

        def test(state: admm.ConsensusState) -> protocol.Message:
            precoder = state.f if self.conventions.test_with_f else state.z
            return protocol.AlignTest(signal=precoder @ self._x_test_bar)

        return self._per_state(users, test)


@METHODS.register("federated")
class FederatedAccessPoint(_ConsensusAccessPoint):
    """One shared precoder ``F`` agreed on by consensus over all users (the paper's method).

    docs/ALGORITHM.md, §3 "Federated ADMM".

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`~common.parties.access_point.AccessPoint`.

    Attributes
    ----------
    state : ConsensusState
        ``F, Z, U`` (Nt·u × m, complex128), ``F`` drawn from ``Stream.AP_INIT``.
    geometry : PilotGeometry
        ``X̄``, ``B = (X̄X̄ᴴ)⁻¹`` and the F-step solver.
    x_bar : ndarray, shape (m, n), complex128
        The AP's whitened pilots ``X̄``.
    shape : tuple of int
        ``(Nt·u, m)``.

    Raises
    ------
    ValueError
        As :class:`~common.parties.access_point.AccessPoint`, or the AP's pilots cannot
        be whitened (:func:`~common.maths.whitening.fit_whitening`) or ``ρ ≤ 0``.
    """

    method = "federated"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.state = admm.ConsensusState.initial(self.shape, rng(self.seed, Stream.AP_INIT))

    def _state(self, user):
        return self.state

    def update(self, replies, weights=None):
        """Local F steps, consensus, projection and dual step (§3, steps 4–7).

        With no replies, ``F``, ``Z`` and ``U`` stay as they are.

        Parameters
        ----------
        replies : Mapping of int to AlignUplink or LocalPrecoder
            The accepted uplinks by user, or their local steps (:meth:`absorb`).
        weights : Mapping of int to float, optional
            Each replying user's reliability, for the aggregator.

        Returns
        -------
        dict of str to float
            ``primal_residual`` ``‖F − Z‖`` and ``power`` ``‖Z‖²`` (linear).

        Raises
        ------
        TypeError
            A reply is not an ``align_uplink``.
        KeyError
            ``weights`` lacks a replying user.
        ValueError
            The aggregator refuses the weights (``weighted_mean``: non-finite or ≤ 0).
        """
        if replies:
            users = sorted(replies)
            local = [self._local_f(self.state, replies[k]) for k in users]
            w = None if weights is None else [weights[k] for k in users]
            self.state.update(local, self.link.power, self.aggregator, w)
            self._check_state(self.state)
        return {
            "primal_residual": self.state.primal_residual,
            "power": float(np.linalg.norm(self.state.z) ** 2),
        }

    def precoders(self):
        """The shared state.

        Returns
        -------
        dict of str to ndarray
            ``F``, ``Z``, ``U``, each (Nt·u, m) complex128 (the arrays themselves).
        """
        return self.state.arrays()

    def restore(self, state):
        """Take back ``F``, ``Z``, ``U`` from a checkpoint (copied).

        Parameters
        ----------
        state : Mapping of str to ndarray
            What :meth:`precoders` returned.

        Raises
        ------
        ValueError
            ``state`` does not hold exactly ``F``, ``Z``, ``U`` of this AP's shapes.
        """
        self._expect_state(state)
        self.state = admm.ConsensusState.from_arrays(state)


@METHODS.register("multi_link")
class MultiLinkAccessPoint(_ConsensusAccessPoint):
    """One precoder per user: no consensus, K times the downlink streams.

    docs/ALGORITHM.md, §4 "Multi-link, clustered and the baselines". Each user's ``F_k`` starts from
    its own draw (``Stream.AP_INIT``, index k + 1), or from the federated draw (index 0)
    for every user under the paper's conventions.

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`~common.parties.access_point.AccessPoint`.

    Attributes
    ----------
    states : dict of int to ConsensusState
        ``F_k, Z_k, U_k`` (Nt·u × m, complex128) by user.
    geometry, x_bar, shape
        As :class:`FederatedAccessPoint`.

    Raises
    ------
    ValueError
        As :class:`FederatedAccessPoint`.
    """

    method = "multi_link"
    uses_aggregator = False  # one precoder per user: nothing to combine

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        shared = self.conventions.shared_initial_f
        self.states = {
            k: admm.ConsensusState.initial(
                self.shape, rng(self.seed, Stream.AP_INIT, 0 if shared else k + 1)
            )
            for k in self.users
        }

    def _state(self, user):
        return self.states[user]

    def groups(self):
        """Each user's own group (its own stream).

        Returns
        -------
        dict of int to int
            User k → k.
        """
        return {k: k for k in self.users}

    def update(self, replies, weights=None):
        """Each replying user's local F step becomes its precoder's F; projection and dual
        step per user (no aggregation; ``weights`` and the aggregator are not used).

        Parameters
        ----------
        replies : Mapping of int to AlignUplink or LocalPrecoder
            The accepted uplinks by user, or their local steps (:meth:`absorb`).
        weights : Mapping of int to float, optional
            Ignored.

        Returns
        -------
        dict of str to float
            ``primal_residual`` ``√(Σ_k ‖F_k − Z_k‖²)`` and ``power``, the mean of
            ``‖Z_k‖²`` over all users (linear).

        Raises
        ------
        TypeError
            A reply is not an ``align_uplink``.
        KeyError
            A reply comes from a user this AP does not serve.
        """
        for k in sorted(replies):  # one user per precoder: nothing to aggregate
            self.states[k].update(
                [self._local_f(self.states[k], replies[k])], self.link.power, Mean()
            )
            self._check_state(self.states[k])
        return {
            "primal_residual": math.sqrt(sum(s.primal_residual**2 for s in self.states.values())),
            "power": float(np.mean([np.linalg.norm(s.z) ** 2 for s in self.states.values()])),
        }

    def precoders(self):
        """Every user's state.

        Returns
        -------
        dict of str to ndarray
            ``F_k``, ``Z_k``, ``U_k`` for each user k (e.g. ``F_0``), each (Nt·u, m)
            complex128.
        """
        return {name: v for k, s in self.states.items() for name, v in s.arrays(f"_{k}").items()}

    def restore(self, state):
        """Take back every user's ``F_k``, ``Z_k``, ``U_k`` from a checkpoint (copied).

        Parameters
        ----------
        state : Mapping of str to ndarray
            What :meth:`precoders` returned.

        Raises
        ------
        ValueError
            ``state`` does not hold exactly this AP's arrays and shapes.
        """
        self._expect_state(state)
        for k in self.states:
            self.states[k] = admm.ConsensusState.from_arrays(state, f"_{k}")


@METHODS.register("clustered")
class ClusteredAccessPoint(_ConsensusAccessPoint):
    """One precoder per group of users, each agreed on by consensus among its members.

    Between the federated AP (one group) and the multi-link AP (one user per group):
    ``C`` federated ADMM problems run side by side in the same rounds and messages, and
    the AP sends ``C`` downlink streams (docs/ALGORITHM.md, §4 "Multi-link, clustered and
    the baselines").
    The groups come from ``strategy.grouping`` (:mod:`common.parties.grouping`): by
    encoder, given, or k-means on the users' local precoders after round 1 (until then,
    every user is in group 0), re-clustered every ``strategy.regroup_every`` rounds; a
    user first heard from after a clustering joins the group of the nearest centre. A
    user that changes group takes its new group's ``F, Z, U`` from the next round on.

    Group ``c``'s ``F`` starts from ``Stream.AP_INIT`` index ``c + 1`` (multi-link's draw
    for user ``c``), or index 0 (the federated draw) when there is one group, under the
    paper's conventions, or under k-means grouping (whose round 1 is a federated round).
    So one group gives the federated AP's numbers, and ``given`` labels ``0..K-1`` the
    multi-link AP's.

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`~common.parties.access_point.AccessPoint`; ``grouping`` says how
        users are grouped.

    Attributes
    ----------
    states : dict of int to ConsensusState
        ``F_c, Z_c, U_c`` (Nt·u × m, complex128) by group ``0..C-1``.
    labels : dict of int to int
        Each user's group.
    clustered_after : int
        The round after which k-means last grouped the users (0: not yet).
    centroids : ndarray, shape (C, 2·Nt·u·m), float64
        ``kmeans``: the groups' centres, where users first heard from later are placed.
    assigned : set of int
        ``kmeans``: the users k-means has grouped (the others are in group 0).
    geometry, x_bar, shape
        As :class:`FederatedAccessPoint`.

    Raises
    ------
    ValueError
        As :class:`FederatedAccessPoint`, or the grouping cannot group these users.
    """

    method = "clustered"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.labels = self.grouping.initial(self.users)
        self.clusters = count = self.grouping.count(self.users)
        one_draw = count == 1 or self.conventions.shared_initial_f or self.grouping.rule == "kmeans"
        first = admm.ConsensusState.initial(self.shape, rng(self.seed, Stream.AP_INIT))
        self.states = {}
        for c in range(count):
            if one_draw:  # groups that have had no members start as copies of group 0
                self.states[c] = first if c == 0 else _copied(first)
            else:
                self.states[c] = admm.ConsensusState.initial(
                    self.shape, rng(self.seed, Stream.AP_INIT, c + 1)
                )
        self.clustered_after = 0
        self._round = 0  # updates made (the round just finished)
        features = 2 * self.shape[0] * self.shape[1]
        self.centroids = np.zeros((count if self.grouping.rule == "kmeans" else 0, features))
        self.assigned: set[int] = set()  # users k-means has grouped (kmeans)
        self.trimmed = 0  # users the consensus rule cut at each end, summed over groups

    def _state(self, user):
        return self.states[self.labels[user]]

    def groups(self):
        """Each user's group.

        Returns
        -------
        dict of int to int
            User → group label ``0..C-1``.
        """
        return dict(self.labels)

    def update(self, replies, weights=None):
        """Per group: its members' local F steps, consensus, projection and dual step
        (§3, steps 4–7); then, when due, k-means regroups the users that replied (never
        after the training rounds: a deployment phase's refresh rounds keep the groups).

        Parameters
        ----------
        replies : Mapping of int to AlignUplink or LocalPrecoder
            The accepted uplinks by user, or their local steps (:meth:`absorb`).
        weights : Mapping of int to float, optional
            Each replying user's reliability, for the aggregator (within its group).

        Returns
        -------
        dict of str to float
            ``primal_residual`` ``√(Σ_c ‖F_c − Z_c‖²)`` and ``power``, the mean of
            ``‖Z_c‖²`` (linear), both over the groups with members, whether they replied
            yet or not (as multi-link's over all its users: a group none of whose users
            has trained yet counts with its initial ``F`` and ``Z = 0``).

        Raises
        ------
        TypeError
            A reply is not an ``align_uplink``.
        KeyError
            A reply comes from a user this AP does not serve, or ``weights`` lacks one.
        ValueError
            The aggregator refuses the weights.
        """
        self._round += 1
        local = {k: self._local_f(self._state(k), replies[k]) for k in sorted(replies)}
        members: dict[int, list[int]] = {}
        for k in local:
            members.setdefault(self.labels[k], []).append(k)
        self.trimmed = 0
        for c, users in sorted(members.items()):
            w = None if weights is None else [weights[k] for k in users]
            self.states[c].update([local[k] for k in users], self.link.power, self.aggregator, w)
            self._check_state(self.states[c])
            self.trimmed += self.aggregator.trimmed(len(users))
        if self._round > self.num_rounds:  # a deployment phase's refresh: groups stay
            pass
        elif local and self.grouping.due(self._round, self.clustered_after):
            self._regroup(local)
        elif self.clustered_after:  # users heard for the first time join the nearest group
            newcomers = {k: f for k, f in local.items() if k not in self.assigned}
            self.labels.update(grouping.nearest(newcomers, self.centroids))
            self.assigned |= set(newcomers)
        if self.grouping.rule == "kmeans" and self._round == self.num_rounds:
            if not self.clustered_after:
                logger.warning(
                    "k-means never grouped the users: no round brought %d distinct local "
                    "precoders (strategy.clusters=%d); every user stayed in group 0",
                    self.clusters,
                    self.clusters,
                )
            elif unheard := len(self.users) - len(self.assigned):
                logger.warning(
                    "%d users never replied after round %d and stayed in group 0 unclustered",
                    unheard,
                    self.clustered_after,
                )
        active = sorted(set(self.labels.values()))
        return {
            "primal_residual": math.sqrt(sum(self.states[c].primal_residual ** 2 for c in active)),
            "power": float(np.mean([np.linalg.norm(self.states[c].z) ** 2 for c in active])),
        }

    def _regroup(self, local: dict[int, np.ndarray]) -> None:
        """k-means on this round's local precoders; a group that had no members takes a
        copy of the state of the group most of its new members come from."""
        found = grouping.cluster(local, self.clusters, self.seed, self.labels)
        if found is None:  # fewer distinct precoders than groups: wait for a fuller round
            return
        labels, self.centroids = found
        self.assigned |= set(local)
        before = set(self.labels.values())
        for c in sorted(set(labels.values()) - before):
            came_from = [self.labels[k] for k, g in labels.items() if g == c]
            source = min(set(came_from), key=lambda g: (-came_from.count(g), g))
            self.states[c] = _copied(self.states[source])
        self.labels = labels
        self.clustered_after = self._round

    def precoders(self):
        """Every group's state, the users' groups and the clustering's schedule.

        Returns
        -------
        dict of str to ndarray
            ``F_c``, ``Z_c``, ``U_c`` for each group c (e.g. ``F_0``), each (Nt·u, m)
            complex128; ``groups``, shape (K,), int64, each user's group in user order;
            ``clustered_after`` and ``round`` (0-d int64): the round of the last
            k-means grouping (0: none) and the rounds done; under ``kmeans``,
            ``centroids`` (C × 2·Nt·u·m float64, the groups' centres) and ``assigned``
            (K int64, 1 for the users k-means has grouped).
        """
        out = {n: v for c, s in self.states.items() for n, v in s.arrays(f"_{c}").items()}
        out["groups"] = np.array([self.labels[k] for k in self.users], dtype=np.int64)
        out["clustered_after"] = np.array(self.clustered_after, dtype=np.int64)
        out["round"] = np.array(self._round, dtype=np.int64)
        if self.grouping.rule == "kmeans":
            out["centroids"] = self.centroids
            out["assigned"] = np.array([k in self.assigned for k in self.users], dtype=np.int64)
        return out

    def restore(self, state):
        """Take back every group's ``F_c``, ``Z_c``, ``U_c``, the users' groups and the
        clustering's schedule from a checkpoint (copied).

        Parameters
        ----------
        state : Mapping of str to ndarray
            What :meth:`precoders` returned.

        Raises
        ------
        ValueError
            ``state`` does not hold exactly this AP's arrays and shapes, or a group label
            outside ``0..C-1``.
        """
        self._expect_state(state)
        labels = [int(g) for g in np.asarray(state["groups"])]
        if any(not 0 <= g < self.clusters for g in labels):
            raise ValueError(f"the checkpoint's groups are not all in 0..{self.clusters - 1}")
        for c in self.states:
            self.states[c] = admm.ConsensusState.from_arrays(state, f"_{c}")
        self.labels = dict(zip(self.users, labels, strict=True))
        self.clustered_after = int(state["clustered_after"])
        self._round = int(state["round"])
        if self.grouping.rule == "kmeans":
            self.centroids = np.array(state["centroids"], dtype=np.float64)
            flags = np.asarray(state["assigned"]) != 0
            self.assigned = {k for k, f in zip(self.users, flags, strict=True) if f}

    def trimmed_per_end(self, accepted):
        """Users the consensus rule cut at each end in the last update, summed over the
        groups (each group's rule runs over its own members).

        Parameters
        ----------
        accepted : sequence of int
            The users whose uplinks the update took (unused: the update counted them).

        Returns
        -------
        int
        """
        return self.trimmed


def _copied(state: admm.ConsensusState) -> admm.ConsensusState:
    """A copy of ``state`` (``from_arrays`` copies what ``arrays`` names)."""
    return admm.ConsensusState.from_arrays(state.arrays())
