"""The access point's side of every alignment method, runtime-agnostic.

An :class:`AccessPoint` produces the downlink messages of each round, absorbs
the users' replies, and produces the test transmissions. The in-process driver
and the Flower strategy both drive these objects, so a new method is one
subclass, registered by name or loaded by import path.
"""

from __future__ import annotations

import abc
import importlib
import math
from collections.abc import Mapping, Sequence

import numpy as np

from common import admm, protocol, validation
from common.compression import compress
from common.link import LinkConfig
from common.seeding import Stream, rng
from common.whitening import Whitening, fit_whitening


class AccessPoint(abc.ABC):
    """One AP holding its pilot and test latents and its precoder state."""

    method: str = ""

    def __init__(
        self,
        pilots: np.ndarray,
        test: np.ndarray,
        link: LinkConfig,
        users: Sequence[int],
        *,
        rounds: int = 30,
        rho: float = 1.0,
        seed: int = 0,
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
        self.rounds = validation.positive_int("rounds", rounds)
        self.rho = validation.positive_float("rho", rho)
        self.seed = seed
        self.dim = pilots.shape[1]
        self._pilots = pilots.T.astype(np.float64)  # (d, n)
        self._test = test.T.astype(np.float64)

    @property
    def n_pilots(self) -> int:
        return self._pilots.shape[1]

    @property
    def num_rounds(self) -> int:
        """Training rounds this method runs (iterative methods: ``rounds``)."""
        return self.rounds

    @abc.abstractmethod
    def train_messages(self, users: Sequence[int]) -> dict[int, protocol.Message]:
        """Downlink of the current round for each listed user."""

    @abc.abstractmethod
    def update(self, replies: Mapping[int, protocol.Message]) -> dict[str, float]:
        """Absorb the replies of the users that answered; return AP-side round metrics."""

    @abc.abstractmethod
    def test_messages(self, users: Sequence[int]) -> dict[int, protocol.Message]:
        """The test-split transmission for each listed user."""

    def precoders(self) -> dict[str, np.ndarray]:
        """The learned state, by name (for checks and for saving)."""
        return {}

    whitening: Whitening | None = None  # the AP's whitening of what it sends, if any

    @property
    def whitening_loading(self) -> float:
        """Diagonal loading its whitening needed (reported in the history)."""
        return 0.0 if self.whitening is None else self.whitening.loading


class _AdmmAccessPoint(AccessPoint):
    """Shared machinery of the ADMM methods: whitened pilots and pilot geometry."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        compressed = compress(self._pilots)
        self.whitening = fit_whitening(compressed)
        self.x_bar = self.whitening.whiten(compressed)
        self._x_test_bar = self.whitening.whiten(compress(self._test))
        self.geometry = admm.PilotGeometry.from_pilots(self.x_bar, self.rho)
        self.shape = (self.link.tx_dim, self.x_bar.shape[0])

    def _state(self, user: int) -> admm.ConsensusState:
        raise NotImplementedError

    def _local_f(self, state: admm.ConsensusState, reply: protocol.Message) -> np.ndarray:
        if not isinstance(reply, protocol.AlignUplink):
            raise TypeError(f"{self.method} AP expects align_uplink replies, got {reply.KIND!r}")
        return admm.local_f_step(self.geometry, reply.a_gram, reply.a_y, state.z, state.u)

    def _per_state(self, users, make) -> dict[int, protocol.Message]:
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
        return self._per_state(users, lambda s: protocol.AlignTest(signal=s.z @ self._x_test_bar))


class FederatedAccessPoint(_AdmmAccessPoint):
    """One shared precoder ``F`` agreed on by consensus over all users (the paper's method)."""

    method = "federated"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.state = admm.ConsensusState.initial(self.shape, rng(self.seed, Stream.AP_INIT))

    def _state(self, user):
        return self.state

    def update(self, replies):
        if replies:
            local = [self._local_f(self.state, replies[k]) for k in sorted(replies)]
            self.state.update(local, self.link.power)
        return {
            "primal_residual": self.state.primal_residual,
            "power": float(np.linalg.norm(self.state.z) ** 2),
        }

    def precoders(self):
        return {"F": self.state.f, "Z": self.state.z, "U": self.state.u}


class MultiLinkAccessPoint(_AdmmAccessPoint):
    """One precoder per user: no consensus, K times the downlink streams."""

    method = "multi_link"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.states = {
            k: admm.ConsensusState.initial(self.shape, rng(self.seed, Stream.AP_INIT, k + 1))
            for k in self.users
        }

    def _state(self, user):
        return self.states[user]

    def update(self, replies):
        for k in sorted(replies):
            self.states[k].update([self._local_f(self.states[k], replies[k])], self.link.power)
        return {
            "primal_residual": math.sqrt(sum(s.primal_residual**2 for s in self.states.values())),
            "power": float(np.mean([np.linalg.norm(s.z) ** 2 for s in self.states.values()])),
        }

    def precoders(self):
        out = {}
        for k, s in self.states.items():
            out.update({f"F_{k}": s.f, f"Z_{k}": s.z, f"U_{k}": s.u})
        return out


class _FeatureAccessPoint(AccessPoint):
    """First-K / Top-K: send raw selected features, no learned projection.

    ``2·Nt·u`` real features per sample (at most ``d``) are complex-compressed,
    whitened on the pilots, zero-padded to ``Nt·u`` symbols if needed and sent
    through the power-normalised precoder ``√(P/(Nt·u)) I``. One exchange: the
    user fits its least-squares map on the received pilots.
    """

    sends_indices = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.k = min(2 * self.link.tx_dim, self.dim)
        values, _ = self._select(self._pilots)
        self.whitening = fit_whitening(compress(values))

    @property
    def num_rounds(self) -> int:
        return 1

    @abc.abstractmethod
    def _select(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Selected values (k × n, in index order) and their indices (k × n, uint16)."""

    def _signal(self, values: np.ndarray) -> np.ndarray:
        symbols = self.whitening.whiten(compress(values))
        pad = self.link.tx_dim - symbols.shape[0]
        if pad:
            symbols = np.vstack([symbols, np.zeros((pad, symbols.shape[1]))])
        return math.sqrt(self.link.power / self.link.tx_dim) * symbols

    def _side_indices(self, indices: np.ndarray) -> np.ndarray:
        return indices if self.sends_indices else np.zeros((0, 0), dtype=protocol.INDEX)

    def train_messages(self, users):
        values, indices = self._select(self._pilots)
        message = protocol.FeaturePilots(
            signal=self._signal(values),
            mean=self.whitening.mean,
            chol=self.whitening.chol,
            indices=self._side_indices(indices),
            feature_dim=np.array([self.dim], dtype=protocol.INT),
        )
        return {k: message for k in users}

    def update(self, replies):
        return {"primal_residual": 0.0, "power": self.link.power * min(1.0, self._fill)}

    @property
    def _fill(self) -> float:
        return math.ceil(self.k / 2) / self.link.tx_dim

    def test_messages(self, users):
        values, indices = self._select(self._test)
        message = protocol.FeatureTest(
            signal=self._signal(values), indices=self._side_indices(indices)
        )
        return {k: message for k in users}


class FirstKAccessPoint(_FeatureAccessPoint):
    """The first ``2·Nt·u`` features of every sample."""

    method = "first_k"

    def _select(self, x):
        idx = np.broadcast_to(np.arange(self.k)[:, None], (self.k, x.shape[1]))
        return x[: self.k], idx.astype(protocol.INDEX)


class TopKAccessPoint(_FeatureAccessPoint):
    """The ``2·Nt·u`` largest-magnitude features of every sample; indices sent as side info."""

    method = "top_k"
    sends_indices = True

    def _select(self, x):
        top = np.argpartition(-np.abs(x), self.k - 1, axis=0)[: self.k]
        top.sort(axis=0)
        return np.take_along_axis(x, top, axis=0), top.astype(protocol.INDEX)


ACCESS_POINTS: dict[str, type[AccessPoint]] = {
    cls.method: cls
    for cls in (FederatedAccessPoint, MultiLinkAccessPoint, FirstKAccessPoint, TopKAccessPoint)
}
# The paper's code names (base_station.status / base_station.strategy).
ALIASES = {
    "shared": "federated",
    "multi-link": "multi_link",
    "First-K": "first_k",
    "Top-K": "top_k",
}


def canonical_method(name: str) -> str:
    """Resolve an alias; import paths (``pkg.module:Class``) pass through."""
    return ALIASES.get(name, name)


def access_point_class(name: str) -> type[AccessPoint]:
    """A registered method by name, or a user's own class as ``package.module:ClassName``."""
    name = canonical_method(name)
    if name in ACCESS_POINTS:
        return ACCESS_POINTS[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"strategy {name!r} could not be imported: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, AccessPoint)):
            raise ValueError(
                f"strategy {name!r} is not a subclass of common.access_point.AccessPoint"
            )
        return cls
    allowed = sorted(ACCESS_POINTS) + sorted(ALIASES)
    raise ValueError(
        f"unknown strategy {name!r}; allowed: {', '.join(allowed)} or 'package.module:ClassName'"
    )
