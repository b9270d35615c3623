"""Channel models and channel knowledge: what each user's link really is, and what it knows.

A :class:`ChannelConfig` says which model draws the MIMO channel ``H``, a
:class:`CsiConfig` how well the user knows it. Per user, :func:`draw_link_channels` returns three
block-diagonal matrices over the ``u`` channel uses:

- the true channel during training (the semantic pilots go through it),
- the user's estimate of it (what the algorithm lets it use: ``A = G_k 𝓗̂_k``,
  First-K's equalizer), and
- the true channel at test time (the training channel aged by a Gauss–Markov
  step, or the same channel).

Models: ``rayleigh`` (i.i.d. ``CN(0, 1)``, the paper's and the default, whose
numbers do not change), ``correlated`` (Kronecker model with exponential
correlation ``ρ^|i-j|`` at both ends, from Sionna), ``rician`` (a line-of-sight
rank-one component between half-wavelength uniform linear arrays plus the
scattered part, power split by the K-factor), and the 3GPP TR 38.901 ``tdl`` and
``cdl`` models (Sionna's), whose ``u`` uses are ``u`` subcarriers of an OFDM symbol,
each with its own ``H`` (:mod:`common.maths.tr38901`). ``coherence_uses`` (``B``) makes the
channel block-fading over the ``u`` uses: ``⌈u/B⌉`` independent draws, each held for
``⌈u/⌈u/B⌉⌉`` consecutive uses (the last possibly fewer), so at most ``B`` uses each
(0: one draw for all of them). Every entry has unit mean power under every model.

Channel knowledge: ``perfect``, or an estimate from ``N_t`` orthogonal training
symbols at ``csi_snr_db`` per entry: least squares (``Ĥ = H + E``) or LMMSE
(the LS estimate shrunk by the channel's own second-order statistics). The
random parts draw from the user's named streams, so a user's channel is the
same in every process and runtime. Sionna is imported only for the correlated
model, and its tensors are converted to numpy once per user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import numpy as np

from common.maths import tr38901, validation
from common.schema import Applies, Scope, Section, check, setting

MODELS = ("rayleigh", "correlated", "rician", "tdl", "cdl")
THREE_GPP = ("tdl", "cdl")  # 3GPP TR 38.901 models, through Sionna (common.maths.tr38901)
MAX_FFT_SIZE = 4096  # NR's largest FFT
ESTIMATORS = ("perfect", "ls", "lmmse")


_3GPP = Applies("communication.model", lambda m: m in THREE_GPP, "channel=tdl or channel=cdl")
_CDL = Applies("communication.model", lambda m: m == "cdl", "channel=cdl")
_NOT_3GPP = Applies(
    "communication.model",
    lambda m: m not in THREE_GPP,
    "channel=rayleigh, correlated or rician (tdl and cdl map the uses onto subcarriers)",
)


def _numerology(name: str, value: object) -> float:
    """An NR subcarrier spacing, ``15e3·2^μ`` Hz for ``μ = 0..6``."""
    allowed = ", ".join(f"{v:g}" for v in tr38901.SUBCARRIER_SPACINGS)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or number not in tr38901.SUBCARRIER_SPACINGS:
        raise validation.InvalidValue(
            name, f"{name} must be an NR subcarrier spacing in Hz ({allowed}), got {value!r}"
        )
    return number


class ChannelConfig(Section):
    """The model the MIMO channel ``H`` is drawn from, and its parameters (a part of the
    configuration's ``communication`` section).

    Attributes
    ----------
    model : str
        One of :data:`MODELS`.
    correlation : float
        Exponential correlation coefficient ``ρ_c`` at both ends, in ``[0, 1)``
        (``correlated``).
    k_factor : float
        Rician K-factor, linear (not dB), ``>= 0`` (``rician``).
    coherence_uses : int
        Channel uses per fading block, ``>= 0`` (0: one channel for all ``u`` uses; not
        for ``tdl``/``cdl``, whose uses are subcarriers).
    profile : str
        The TR 38.901 model letter, ``A``–``E`` (``tdl``, ``cdl``).
    delay_spread : float
        RMS delay spread, s (``tdl``, ``cdl``).
    carrier_frequency : float
        Carrier frequency, Hz (``tdl``, ``cdl``).
    subcarrier_spacing : float
        OFDM subcarrier spacing, Hz (``tdl``, ``cdl``).
    fft_size : int
        Subcarriers the ``u`` uses are spread over (``tdl``, ``cdl``; at least ``u``).
    speed : float
        The user's speed, m/s (``tdl``, ``cdl``; 0: a static channel).
    array : str
        ``ula`` or ``upa`` at both ends (``cdl``).
    antenna_spacing : float
        Element spacing, wavelengths (``cdl``).

    Each field's check and description are its ``setting(...)`` declaration.

    Raises
    ------
    pydantic.ValidationError
        A value is refused (its message says what is allowed).
    """

    model: Annotated[str, check(validation.one_of, MODELS)] = setting(
        "the channel model: rayleigh, correlated (Kronecker), rician, tdl, cdl (3GPP)",
        scope=Scope.RESULT,
    )
    correlation: Annotated[float, check(validation.in_range, 0, 1, "[0, 1)", upper_open=True)] = (
        setting(
            "exponential correlation coefficient at both ends, in [0, 1) (correlated)",
            scope=Scope.RESULT,
            applies=Applies(
                "communication.model", lambda m: m == "correlated", "channel=correlated"
            ),
        )
    )
    k_factor: Annotated[float, check(validation.in_range, 0, math.inf, ">= 0 (linear, not dB)")] = (
        setting(
            "Rician K-factor, linear, >= 0 (rician)",
            scope=Scope.RESULT,
            applies=Applies("communication.model", lambda m: m == "rician", "channel=rician"),
        )
    )
    coherence_uses: Annotated[int, check(validation.whole_number)] = setting(
        "block fading: a fresh channel every this many channel uses (0: one for all u)",
        scope=Scope.RESULT,
        applies=_NOT_3GPP,
    )
    profile: Annotated[str, check(validation.one_of, tr38901.PROFILES)] = setting(
        "the TR 38.901 model letter, A-E (TDL-A..E, CDL-A..E; D and E have a line of sight)",
        scope=Scope.RESULT,
        applies=_3GPP,
        neutral="A",
    )
    delay_spread: Annotated[
        float, check(validation.in_range, *tr38901.DELAY_SPREAD_RANGE, "[1e-9, 1e-5] s")
    ] = setting(
        "RMS delay spread (tdl, cdl), scales the model's normalised delays",
        unit="s",
        scope=Scope.RESULT,
        applies=_3GPP,
        neutral=1e-7,
    )
    carrier_frequency: Annotated[
        float, check(validation.in_range, *tr38901.CARRIER_RANGE, "[0.5e9, 100e9] Hz")
    ] = setting(
        "carrier frequency (tdl, cdl), within TR 38.901's 0.5-100 GHz",
        unit="Hz",
        scope=Scope.RESULT,
        applies=_3GPP,
        neutral=3.5e9,
    )
    subcarrier_spacing: Annotated[float, check(_numerology)] = setting(
        "OFDM subcarrier spacing (tdl, cdl): an NR numerology, 15e3·2^μ for μ = 0..6",
        unit="Hz",
        scope=Scope.RESULT,
        applies=_3GPP,
        neutral=30e3,
    )
    fft_size: Annotated[int, check(validation.positive_int, MAX_FFT_SIZE)] = setting(
        "subcarriers of the OFDM symbol the u channel uses are spread over (tdl, cdl), u to 4096",
        scope=Scope.RESULT,
        applies=_3GPP,
        neutral=64,
    )
    speed: Annotated[float, check(validation.in_range, 0, tr38901.MAX_SPEED, "[0, 1000] m/s")] = (
        setting(
            "the user's speed (tdl, cdl): the Doppler of the channel's evolution in time "
            "(tracking.*); 0: static",
            unit="m/s",
            scope=Scope.RESULT,
            applies=(_3GPP, Applies("tracking.slots", lambda s: s > 0, "tracking.slots=1 or more")),
            neutral=0.0,
        )
    )
    array: Annotated[str, check(validation.one_of, tr38901.ARRAYS)] = setting(
        "antenna arrays at both ends (cdl): ula (one row) or upa (the squarest grid)",
        scope=Scope.RESULT,
        applies=_CDL,
        neutral="ula",
    )
    antenna_spacing: Annotated[
        float, check(validation.in_range, 0.05, 10.0, "[0.05, 10] wavelengths")
    ] = setting(
        "element spacing of both arrays (cdl), in wavelengths",
        scope=Scope.RESULT,
        applies=_CDL,
        neutral=0.5,
    )


class CsiConfig(Section):
    """What each user knows of its channel (the configuration's ``csi`` section).

    Attributes
    ----------
    estimation : str
        One of :data:`ESTIMATORS`.
    csi_snr_db : float
        SNR of the estimation training symbols per entry, in dB (config key ``snr``;
        ``inf``: no estimation error).
    ageing : float
        Gauss–Markov correlation between the training and the test-time channel, in
        ``[0, 1]`` (1: the same channel).

    Each field's check and description are its ``setting(...)`` declaration.

    Raises
    ------
    pydantic.ValidationError
        A value is refused (its message says what is allowed).
    """

    estimation: Annotated[str, check(validation.one_of, ESTIMATORS)] = setting(
        "perfect, or an estimate from N_t orthogonal training symbols: ls, lmmse",
        scope=Scope.RESULT,
    )
    csi_snr_db: Annotated[float, check(validation.snr_db)] = setting(
        "SNR of the channel-estimation training symbols, per entry",
        alias="snr",
        unit="dB",
        scope=Scope.RESULT,
        applies=Applies(
            "csi.estimation", lambda e: e != "perfect", "csi.estimation=ls or csi.estimation=lmmse"
        ),
    )
    ageing: Annotated[float, check(validation.in_range, 0, 1, "[0, 1]")] = setting(
        "Gauss–Markov correlation between the training and the test-time channel, in [0, 1] "
        "(1: the same channel)",
        scope=Scope.RESULT,
    )

    @property
    def perfect(self) -> bool:
        """Today's assumptions: the user knows the one static channel, unchanged at test.

        Returns
        -------
        bool
            ``estimation == "perfect"`` and ``ageing == 1``.
        """
        return self.estimation == "perfect" and self.ageing == 1.0


RAYLEIGH = ChannelConfig(
    model="rayleigh",
    correlation=0.0,
    k_factor=0.0,
    coherence_uses=0,
    profile="A",
    delay_spread=1e-7,
    carrier_frequency=3.5e9,
    subcarrier_spacing=30e3,
    fft_size=64,
    speed=0.0,
    array="ula",
    antenna_spacing=0.5,
)
"""The paper's channel: static i.i.d. Rayleigh."""
PERFECT_CSI = CsiConfig(estimation="perfect", csi_snr_db=math.inf, ageing=1.0)
"""The paper's channel knowledge: known exactly, unchanged at test time."""


@dataclass(frozen=True)
class LinkChannels:
    """One user's block-diagonal channels over the ``u`` uses (``Nr·u × Nt·u`` each).

    Attributes
    ----------
    train : ndarray, shape (Nr·u, Nt·u), complex128
        The true channel ``𝓗`` the training pilots go through.
    known : ndarray, shape (Nr·u, Nt·u), complex128
        The user's estimate ``𝓗̂`` of ``train`` (``train`` itself under perfect CSI).
    test : ndarray, shape (Nr·u, Nt·u), complex128
        The true channel ``𝓗^{test}`` at test time (``train`` aged, or ``train``).
    """

    train: np.ndarray
    known: np.ndarray
    test: np.ndarray


def cn(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """I.i.d. ``CN(0, 1)`` entries (each part of variance 1/2).

    Parameters
    ----------
    shape : tuple of int
        The shape of the draw.
    rng : numpy.random.Generator
        The stream to draw from (real parts first, then imaginary parts).

    Returns
    -------
    ndarray, shape ``shape``, complex128
    """
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / math.sqrt(2.0)


def exponential_correlation(coefficient: float, n: int) -> np.ndarray:
    """``R_ij = ρ^|i-j|`` (Sionna's ``exp_corr_mat``), as numpy.

    docs/ALGORITHM.md, §6 "Channel models and channel knowledge" (``correlated``). Imports
    torch and Sionna.

    Parameters
    ----------
    coefficient : float
        The correlation coefficient ``ρ``, in ``[0, 1)``.
    n : int
        The number of antennas.

    Returns
    -------
    ndarray, shape (n, n), complex128
        The (real-valued) correlation matrix.
    """
    import torch
    from sionna.phy.channel import exp_corr_mat

    matrix = exp_corr_mat(torch.tensor(coefficient, dtype=torch.float64), n, precision="double")
    return matrix.numpy().astype(np.complex128)


def correlate(h: np.ndarray, r_tx: np.ndarray, r_rx: np.ndarray) -> np.ndarray:
    """``R_rx^{1/2} H R_tx^{1/2}`` through Sionna's Kronecker model (a batch of H at once).

    Uses ``sionna.phy.channel.KroneckerModel`` in double precision (imports torch and
    Sionna). docs/ALGORITHM.md, §6 "Channel models and channel knowledge" (``correlated``).

    Parameters
    ----------
    h : ndarray, shape (blocks, Nr, Nt), complex128
        Uncorrelated channel draws ``H_w``.
    r_tx : ndarray, shape (Nt, Nt), complex128
        Transmit-side correlation matrix.
    r_rx : ndarray, shape (Nr, Nr), complex128
        Receive-side correlation matrix.

    Returns
    -------
    ndarray, shape (blocks, Nr, Nt), complex128
        The correlated draws.
    """
    import torch
    from sionna.phy.channel import KroneckerModel

    model = KroneckerModel(torch.from_numpy(r_tx), torch.from_numpy(r_rx), precision="double")
    return model(torch.from_numpy(np.ascontiguousarray(h))).numpy()


def steering(n: int, angle: float) -> np.ndarray:
    """Response of an ``n``-antenna half-wavelength ULA to a plane wave at ``angle`` (rad).

    ``a(θ)_i = e^{jπ i sin θ}`` (docs/ALGORITHM.md, §6, ``rician``).

    Parameters
    ----------
    n : int
        The number of antennas.
    angle : float
        The angle of arrival or departure, in radians from broadside.

    Returns
    -------
    ndarray, shape (n,), complex128
        Unit-modulus entries.
    """
    return np.exp(1j * math.pi * np.arange(n) * math.sin(angle))


class ChannelModel:
    """Draws ``H`` (``Nr × Nt``) blocks of one model; ``scattered`` is its zero-mean part.

    ``H = mean + scattered``: ``rayleigh`` has a zero mean and ``CN(0, 1)`` scattering;
    ``correlated`` correlates the scattering at both ends (Kronecker, Sionna);
    ``rician`` adds the line-of-sight mean ``√(K/(K+1)) a_r(θ_r) a_t(θ_t)ᴴ`` and scales
    the scattering by ``√(1/(K+1))`` (docs/ALGORITHM.md, §6 "Channel models and channel
    knowledge"). A new model adds its branch here (see docs/ARCHITECTURE.md, "Recipes",
    *Add a channel model*).

    Parameters
    ----------
    config : ChannelConfig
        The model and its parameters.
    n_rx : int
        Receive antennas ``Nr``.
    n_tx : int
        Transmit antennas ``Nt``.
    rng : numpy.random.Generator
        The user's channel stream; ``rician`` draws its two angles from it, uniform in
        ``(−π/2, π/2)`` (the other models draw nothing here).
    channel_uses : int, optional
        ``u``, the subcarriers a ``tdl``/``cdl`` draw covers (default 1).

    Attributes
    ----------
    config : ChannelConfig
        As given.
    n_rx, n_tx : int
        As given.
    mean : ndarray, shape (Nr, Nt), complex128
        The deterministic (line-of-sight) part; zeros except for ``rician``.
    """

    def __init__(
        self,
        config: ChannelConfig,
        n_rx: int,
        n_tx: int,
        rng: np.random.Generator,
        channel_uses: int = 1,
    ):
        self.config, self.n_rx, self.n_tx = config, n_rx, n_tx
        self.channel_uses = channel_uses
        self._r_tx = self._r_rx = None
        if config.model == "correlated" and config.correlation > 0:
            self._r_tx = exponential_correlation(config.correlation, n_tx)
            self._r_rx = exponential_correlation(config.correlation, n_rx)
        self.mean = np.zeros((n_rx, n_tx), dtype=np.complex128)
        self._scatter_power = 1.0
        if config.model == "rician":
            k = config.k_factor
            angles = rng.uniform(-math.pi / 2, math.pi / 2, size=2)
            los = np.outer(steering(n_rx, angles[0]), steering(n_tx, angles[1]).conj())
            self.mean = math.sqrt(k / (k + 1.0)) * los
            self._scatter_power = 1.0 / (k + 1.0)

    def scattered(self, blocks: int, rng: np.random.Generator, time: float = 0.0) -> np.ndarray:
        """``blocks`` draws of the zero-mean part (``blocks × Nr × Nt``).

        Parameters
        ----------
        blocks : int
            The number of independent draws (fading blocks).
        rng : numpy.random.Generator
            The stream to draw from.
        time : float, optional
            Seconds since the draw's time origin (``tdl``/``cdl``: the realisation evolved
            for that long at ``speed``, the same realisation at every time; the other
            models are static and ignore it). Default 0.

        Returns
        -------
        ndarray, shape (blocks, Nr, Nt), complex128
            The scattered part, of mean power ``1/(K+1)`` per entry (``rician``) or 1.
        """
        if self.config.model in THREE_GPP:
            return self._three_gpp(rng, time)
        # block by block: the default model's first draw is the paper's Rayleigh matrix
        h = np.stack([cn((self.n_rx, self.n_tx), rng) for _ in range(blocks)])
        if self._r_tx is not None:
            h = correlate(h, self._r_tx, self._r_rx)
        return math.sqrt(self._scatter_power) * h

    def _three_gpp(self, rng: np.random.Generator, time: float) -> np.ndarray:
        """One TDL/CDL realisation on the ``u`` uses' subcarriers (``u × Nr × Nt``) at
        ``time`` s, seeded by one draw from ``rng`` (:func:`common.maths.tr38901.response`:
        one seed gives one realisation, evaluated at ``[0, time]``)."""
        c = self.config
        index = tr38901.subcarriers(self.channel_uses, c.fft_size)
        h = tr38901.response(
            c.model,
            c.profile,
            n_rx=self.n_rx,
            n_tx=self.n_tx,
            delay_spread=c.delay_spread,
            carrier_frequency=c.carrier_frequency,
            frequencies=tr38901.frequencies(c.fft_size, c.subcarrier_spacing)[index],
            times=np.array([0.0, time]) if time > 0 else np.zeros(1),
            seed=int(rng.integers(2**63 - 1)),
            speed=c.speed,
            array=c.array,
            spacing=c.antenna_spacing,
        )
        return h[-1]

    def covariance(self) -> np.ndarray:
        """Covariance of ``vec(H)`` (column-major) of the zero-mean part.

        ``R = (1/(K+1)) R_txᵀ ⊗ R_rx`` (identity correlation matrices unless
        ``correlated``); docs/ALGORITHM.md, §6, *CSI* (``lmmse``). For ``tdl`` and ``cdl``
        the identity: unit power per entry, the spatial correlation of a CDL
        realisation's few clusters not modelled in the prior.

        Returns
        -------
        ndarray, shape (Nr·Nt, Nr·Nt), float64 or complex128
            complex128 for ``correlated`` (with a positive correlation), float64 otherwise.
        """
        r_tx = np.eye(self.n_tx) if self._r_tx is None else self._r_tx
        r_rx = np.eye(self.n_rx) if self._r_rx is None else self._r_rx
        return self._scatter_power * np.kron(r_tx.T, r_rx)


def estimate(
    h: np.ndarray, model: ChannelModel, csi: CsiConfig, rng: np.random.Generator
) -> np.ndarray:
    """The user's estimate of each block of ``h`` (``blocks × Nr × Nt``).

    docs/ALGORITHM.md, §6 "Channel models and channel knowledge", *CSI*: ``perfect``
    (a copy of ``h``); ``ls``, ``Ĥ = H + E`` with ``E ~ CN(0, σ_e²)`` per entry and
    ``σ_e² = 10^{−csi_snr_db/10}`` (``N_t`` orthogonal unit-power training symbols);
    ``lmmse``, ``vec(Ĥ) = vec(M) + R(R + σ_e² I)⁻¹ vec(Ĥ_LS − M)``.

    Parameters
    ----------
    h : ndarray, shape (blocks, Nr, Nt), complex128
        The true channel blocks.
    model : ChannelModel
        The model ``h`` was drawn from (its mean ``M`` and covariance ``R``, for LMMSE).
    csi : CsiConfig
        The estimator and its training SNR (dB).
    rng : numpy.random.Generator
        The user's CSI stream (the estimation error); not drawn from under ``perfect``.

    Returns
    -------
    ndarray, shape (blocks, Nr, Nt), complex128
        The estimate ``Ĥ`` of each block.
    """
    if csi.estimation == "perfect":
        return h.copy()
    # N_t orthogonal unit-power training symbols: Y = H P + N, P P^H = N_t I, so the
    # least-squares estimate is H plus noise of variance 1 / snr per entry.
    error_variance = 10.0 ** (-csi.csi_snr_db / 10.0)
    ls = h + math.sqrt(error_variance) * cn(h.shape, rng)
    if csi.estimation == "ls":
        return ls
    r = model.covariance()
    shrink = r @ np.linalg.inv(r + error_variance * np.eye(r.shape[0]))
    out = np.empty_like(ls)
    for b, block in enumerate(ls):
        centred = (block - model.mean).reshape(-1, order="F")
        out[b] = model.mean + (shrink @ centred).reshape(block.shape, order="F")
    return out


def block_diagonal(blocks: np.ndarray, channel_uses: int, coherence: int = 0) -> np.ndarray:
    """``𝓗``: block ``⌊t / B⌋`` on channel use ``t`` (``B`` uses per fading block).

    ``I_u ⊗ H`` for a single block (docs/ALGORITHM.md, §2, *MIMO channel over u uses*); with
    several, the last block covers the ``u − (b−1)·B`` uses left (§6, *Block fading*).

    Parameters
    ----------
    blocks : ndarray, shape (b, Nr, Nt), complex
        The channel of each fading block, ``b = ⌈u / B⌉``.
    channel_uses : int
        The channel uses ``u``.
    coherence : int, optional
        ``B``, channel uses per fading block (0, the default: ``⌈u / b⌉``, blocks of equal
        length where ``b`` divides ``u``).

    Returns
    -------
    ndarray, shape (Nr·u, Nt·u), complex128
        Block-diagonal, one ``Nr × Nt`` block per channel use, zeros elsewhere.

    Raises
    ------
    ValueError
        ``b`` is not ``⌈u / B⌉`` (a block would be left unused, or a use without a block).
    """
    per_block = coherence or -(-channel_uses // blocks.shape[0])
    if -(-channel_uses // per_block) != blocks.shape[0]:
        raise ValueError(
            f"{blocks.shape[0]} fading blocks of {per_block} channel uses do not cover "
            f"u = {channel_uses} uses exactly (expected {-(-channel_uses // per_block)} blocks)"
        )
    n_rx, n_tx = blocks.shape[1:]
    out = np.zeros((n_rx * channel_uses, n_tx * channel_uses), dtype=np.complex128)
    for t in range(channel_uses):
        out[t * n_rx : (t + 1) * n_rx, t * n_tx : (t + 1) * n_tx] = blocks[t // per_block]
    return out


def draw_link_channels(
    config: ChannelConfig,
    csi: CsiConfig,
    n_rx: int,
    n_tx: int,
    channel_uses: int,
    rng: np.random.Generator,
    csi_rng: np.random.Generator,
    scale: float = 1.0,
    time: float = 0.0,
) -> LinkChannels:
    """One user's training, known and test channels. ``rng`` draws the channel itself (its
    first draw is the i.i.d. Rayleigh matrix of the default model) from ``config``;
    ``csi_rng`` draws the estimation error (``csi``) and the ageing innovation.

    docs/ALGORITHM.md, §6 "Channel models and channel knowledge": ``⌈u/B⌉`` fading blocks
    (``B = coherence_uses``, 0: one block), the estimate of :func:`estimate`, and the
    test channel ``H^{test} = M + α(H − M) + √(1−α²) H'`` (``α = csi.ageing``, ``H'`` a
    fresh scattered draw) when ``α < 1``.

    Parameters
    ----------
    config : ChannelConfig
        The channel model.
    csi : CsiConfig
        The user's channel knowledge and ageing.
    n_rx : int
        Receive antennas ``Nr``.
    n_tx : int
        Transmit antennas ``Nt``.
    channel_uses : int
        Channel uses ``u`` per sample.
    rng : numpy.random.Generator
        The user's channel stream (``Stream.CHANNEL``, index k).
    csi_rng : numpy.random.Generator
        The user's CSI stream (``Stream.CSI``, index k).
    scale : float, optional
        Amplitude factor applied to all three channels (the conventions'
        :attr:`~common.maths.conventions.Conventions.channel_scale`: 1, or ``1/√2`` for
        the paper's). Default 1.
    time : float, optional
        Seconds after training: the channel the user sees then (``tdl``/``cdl`` evolve at
        ``speed``; the other models are static). Default 0 (the training channel).

    Returns
    -------
    LinkChannels
        The training, known and test channels, ``Nr·u × Nt·u`` complex128 each.
    """
    coherence = min(config.coherence_uses or channel_uses, channel_uses)
    if config.model in THREE_GPP:  # each use on its own subcarrier: its own H
        coherence = 1
    blocks = -(-channel_uses // coherence)
    model = ChannelModel(config, n_rx, n_tx, rng, channel_uses)
    h = model.mean + model.scattered(blocks, rng, time)
    known = estimate(h, model, csi, csi_rng)
    test = h
    if csi.ageing < 1.0:
        a = csi.ageing
        test = (
            model.mean
            + a * (h - model.mean)
            + math.sqrt(1 - a * a) * model.scattered(blocks, csi_rng)
        )
    return LinkChannels(
        train=scale * block_diagonal(h, channel_uses, coherence),
        known=scale * block_diagonal(known, channel_uses, coherence),
        test=scale * block_diagonal(test, channel_uses, coherence),
    )
