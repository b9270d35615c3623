"""The ADMM methods: federated (one shared ``F``) and multi-link (one ``F`` per user).

The AP precodes its whitened pilots with ``F``; each :class:`AdmmUser` fits its
MMSE equalizer ``G_k`` on what it receives and sends back ``Aᴴ A`` and ``Aᴴ Ȳ``
(``A = G_k 𝓗_k``); the AP solves each user's local ``F_k`` step and runs the
consensus, projection and dual updates (see ALGORITHM.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from common.maths import admm
from common.maths.aggregation import Mean
from common.maths.compression import compress, decompress
from common.maths.seeding import Stream, rng
from common.maths.whitening import Whitening, fit_whitening
from common.parties import protocol
from common.parties.access_point import AccessPoint
from common.parties.user import TrainReply, User
from common.registry import METHODS


class AdmmUser(User):
    """Fits ``G_k`` on the precoded pilots; decodes test transmissions with it."""

    TRAIN_KIND = protocol.AlignPilots.KIND
    TEST_KIND = protocol.AlignTest.KIND

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._y_bar = self.prepared.derived["y_bar"]
        self._y_energy = float(self.prepared.derived["y_energy"])
        self.g: np.ndarray | None = None

    @classmethod
    def derive(cls, pilots: np.ndarray, whitening: Whitening) -> dict[str, np.ndarray]:
        """The whitened pilots ``Ȳ`` (every G step's target) and their energy."""
        y_bar = whitening.whiten(compress(pilots))
        return {"y_bar": y_bar, "y_energy": np.array(np.vdot(y_bar, y_bar).real)}

    def export_state(self) -> dict[str, np.ndarray]:
        return {} if self.g is None else {"g": self.g}

    def import_state(self, state: dict[str, np.ndarray]) -> None:
        self.g = state.get("g")

    def train(self, message: protocol.Message) -> TrainReply:
        self._expect(message, self.TRAIN_KIND)
        self._check_pilot_count(message.signal)
        received = self.h_block @ message.signal
        noise_energy = self.n_pilots * self.noise_variance
        moments = admm.ReceivedMoments.of(self._y_bar, received)
        if self.conventions.paper:
            loading = self.conventions.paper_g_loading(self.n_pilots, self.link, received.shape[0])
            self.g = admm.equalizer_with(moments, loading)
        else:
            self.g = admm.equalizer(moments, noise_energy)
        a_gram, a_y = admm.uplink_statistics(self.g, self.h_known, self._y_bar)
        objective, fit = admm.local_objective(self._y_energy, moments, self.g, noise_energy)
        metrics = {
            "objective": objective,
            "pilot_mse": fit / self._y_bar.size,
            **self.pilot_metrics(),
        }
        return TrainReply(protocol.AlignUplink(a_gram=a_gram, a_y=a_y), metrics)

    def decode(self, message: protocol.Message) -> np.ndarray:
        if self.g is None:
            raise RuntimeError(f"user {self.index} has no equalizer yet: train first")
        received = self.receive(message.signal, Stream.EVAL_NOISE)
        return decompress(self.whitening.dewhiten(self.g @ received), self.dim).T


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

    def check_reply(self, user: int, reply: protocol.Message) -> None:
        if reply.KIND != protocol.AlignUplink.KIND:
            raise ValueError(f"{self.method} AP expects align_uplink replies, got {reply.KIND!r}")
        m, n = self.link.tx_dim, self.n_pilots
        expected = {"a_gram": (m, m), "a_y": (m, n)}
        for name, shape in expected.items():
            got = getattr(reply, name).shape
            if got != shape:
                raise ValueError(f"align_uplink.{name} must have shape {shape}, got {got}")
        super().check_reply(user, reply)

    def _local_f(self, state: admm.ConsensusState, reply: protocol.Message) -> np.ndarray:
        if reply.KIND != protocol.AlignUplink.KIND:
            raise TypeError(f"{self.method} AP expects align_uplink replies, got {reply.KIND!r}")
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
        return self._per_state(users, lambda s: protocol.AlignPilots(signal=s.f @ self.x_bar))

    def test_messages(self, users):
        def test(state: admm.ConsensusState) -> protocol.Message:
            precoder = state.f if self.conventions.test_with_f else state.z
            return protocol.AlignTest(signal=precoder @ self._x_test_bar)

        return self._per_state(users, test)


@METHODS.register("federated")
class FederatedAccessPoint(_ConsensusAccessPoint):
    """One shared precoder ``F`` agreed on by consensus over all users (the paper's method)."""

    method = "federated"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.state = admm.ConsensusState.initial(self.shape, rng(self.seed, Stream.AP_INIT))

    def _state(self, user):
        return self.state

    def update(self, replies, weights=None):
        if replies:
            users = sorted(replies)
            local = [self._local_f(self.state, replies[k]) for k in users]
            w = None if weights is None else [weights[k] for k in users]
            self.state.update(local, self.link.power, self.aggregator, w)
        return {
            "primal_residual": self.state.primal_residual,
            "power": float(np.linalg.norm(self.state.z) ** 2),
        }

    def precoders(self):
        return self.state.arrays()

    def restore(self, state):
        self._expect_state(state)
        self.state = admm.ConsensusState.from_arrays(state)


@METHODS.register("multi_link")
class MultiLinkAccessPoint(_ConsensusAccessPoint):
    """One precoder per user: no consensus, K times the downlink streams."""

    method = "multi_link"

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

    def update(self, replies, weights=None):
        for k in sorted(replies):  # one user per precoder: nothing to aggregate
            self.states[k].update(
                [self._local_f(self.states[k], replies[k])], self.link.power, Mean()
            )
        return {
            "primal_residual": math.sqrt(sum(s.primal_residual**2 for s in self.states.values())),
            "power": float(np.mean([np.linalg.norm(s.z) ** 2 for s in self.states.values()])),
        }

    def precoders(self):
        return {name: v for k, s in self.states.items() for name, v in s.arrays(f"_{k}").items()}

    def restore(self, state):
        self._expect_state(state)
        for k in self.states:
            self.states[k] = admm.ConsensusState.from_arrays(state, f"_{k}")
