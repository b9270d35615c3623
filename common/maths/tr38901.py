"""3GPP TR 38.901 tapped-delay-line (TDL) and clustered-delay-line (CDL) MIMO channels.

The models are Sionna's (:class:`sionna.phy.channel.tr38901.TDL` and ``CDL``),
not re-implemented here: this module draws one user's channel impulse response
from them, seeded from the user's own stream, and turns it into the frequency
response on the resource elements the ``u`` channel uses of a sample occupy
(:func:`sionna.phy.channel.cir_to_ofdm_channel`).

The mapping (docs/ALGORITHM.md, §6, *3GPP channels*): the ``u`` channel uses of a
sample are ``u`` subcarriers of one OFDM symbol, spread evenly over the
``fft_size`` subcarriers of spacing ``subcarrier_spacing`` (use ``t`` on
subcarrier ``t·⌊fft_size/u⌋`` of Sionna's ``subcarrier_frequencies``, which run
from ``−fft_size/2`` to ``fft_size/2 − 1`` spacings). So each use sees its own
``H`` (the link's block-diagonal ``𝓗`` holds one block per use), and two uses are
as correlated as the power-delay profile makes subcarriers that far apart.

Each model's paths are normalised to unit total power, so every entry of ``H`` has
unit mean power (tested), as under the other channel models.
"""

from __future__ import annotations

import math

import numpy as np

PROFILES = ("A", "B", "C", "D", "E")  # TR 38.901 Tables 7.7.2-1..5 (TDL), 7.7.1-1..5 (CDL)
ARRAYS = ("ula", "upa")  # CDL antenna arrays at both ends
CARRIER_RANGE = (0.5e9, 100e9)  # Hz: the frequencies TR 38.901's models are defined for
DELAY_SPREAD_RANGE = (1e-9, 1e-5)  # s: 1 ns .. 10 µs (the standard's scalings: 10-1000 ns)
MAX_SPEED = 1000.0  # m/s: a user's speed (Sionna takes any; 1000 m/s is an aircraft's)
SUBCARRIER_SPACINGS = tuple(15e3 * 2**mu for mu in range(7))  # NR numerologies μ = 0..6, Hz


def subcarriers(channel_uses: int, fft_size: int) -> np.ndarray:
    """The subcarrier index of each channel use: ``t·⌊fft_size/u⌋``, ``t = 0..u−1``.

    Parameters
    ----------
    channel_uses : int
        ``u``.
    fft_size : int
        Subcarriers of the OFDM symbol (``≥ u``).

    Returns
    -------
    ndarray, shape (u,), int64
        Indices into Sionna's ``subcarrier_frequencies(fft_size, spacing)``.

    Raises
    ------
    ValueError
        ``fft_size < u`` (two uses would share a subcarrier).
    """
    if fft_size < channel_uses:
        raise ValueError(f"fft_size {fft_size} has fewer subcarriers than u = {channel_uses}")
    return np.arange(channel_uses) * (fft_size // channel_uses)


def _factor(n: int) -> tuple[int, int]:
    """``(rows, columns)`` of a UPA of ``n`` elements: the largest divisor ``≤ √n`` rows."""
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return rows, n // rows


def _array(kind: str, n: int, spacing: float, carrier_frequency: float, precision: str):
    """A Sionna ``PanelArray`` of ``n`` single-polarised omnidirectional elements, one
    row (``ula``) or the squarest grid (``upa``), ``spacing`` wavelengths apart."""
    from sionna.phy.channel.tr38901 import PanelArray

    rows, cols = (1, n) if kind == "ula" else _factor(n)
    return PanelArray(
        num_rows_per_panel=rows,
        num_cols_per_panel=cols,
        polarization="single",
        polarization_type="V",
        antenna_pattern="omni",
        carrier_frequency=carrier_frequency,
        element_vertical_spacing=spacing,
        element_horizontal_spacing=spacing,
        precision=precision,
    )


def response(
    model: str,
    profile: str,
    *,
    n_rx: int,
    n_tx: int,
    delay_spread: float,
    carrier_frequency: float,
    frequencies: np.ndarray,
    times: np.ndarray,
    seed: int,
    speed: float = 0.0,
    array: str = "ula",
    spacing: float = 0.5,
) -> np.ndarray:
    """One realisation of a TDL or CDL channel's frequency response (downlink: AP → user).

    Parameters
    ----------
    model : str
        ``tdl`` or ``cdl``.
    profile : str
        The model letter, one of :data:`PROFILES`.
    n_rx, n_tx : int
        Receive (user) and transmit (AP) antennas.
    delay_spread : float
        RMS delay spread, s (scales the normalised delays of the profile's table).
    carrier_frequency : float
        Carrier frequency, Hz.
    frequencies : ndarray, shape (F,), float
        Baseband frequencies to evaluate, Hz (subcarriers).
    times : ndarray, shape (T,), float
        Instants to evaluate, s, equally spaced from 0 (one instant: ``[0.0]``).
    seed : int
        Seeds the model's random draws (paths' phases, Doppler angles, CDL's random
        coupling), so a ``(seed, model, antennas)`` gives one channel everywhere.
    speed : float, optional
        The user's speed, m/s (the Doppler of the time evolution; 0: static).
    array : str, optional
        ``cdl``: ``ula`` or ``upa`` at both ends (:data:`ARRAYS`).
    spacing : float, optional
        ``cdl``: element spacing, wavelengths.

    Returns
    -------
    ndarray, shape (T, F, Nr, Nt), complex128
        ``H`` at each instant and frequency; unit mean power per entry.

    Raises
    ------
    ValueError
        ``times`` not equally spaced from 0, or an unknown model.
    """
    import torch
    from sionna.phy.channel import cir_to_ofdm_channel
    from sionna.phy.channel.tr38901 import CDL, TDL

    times = np.asarray(times, dtype=np.float64)
    steps = len(times)
    step = float(times[1] - times[0]) if steps > 1 else 1.0
    if times[0] != 0 or (steps > 1 and not np.allclose(np.diff(times), step)):
        raise ValueError("times must be equally spaced instants from 0")
    generator = torch.Generator().manual_seed(int(seed))
    common = dict(min_speed=speed, max_speed=speed, precision="double")
    if model == "tdl":
        channel = TDL(
            profile,
            delay_spread=delay_spread,
            carrier_frequency=carrier_frequency,
            num_rx_ant=n_rx,
            num_tx_ant=n_tx,
            **common,
        )
    elif model == "cdl":
        arrays = {
            name: _array(array, n, spacing, carrier_frequency, "double")
            for name, n in (("ut_array", n_rx), ("bs_array", n_tx))
        }
        channel = CDL(
            profile,
            delay_spread=delay_spread,
            carrier_frequency=carrier_frequency,
            direction="downlink",
            **arrays,
            **common,
        )
    else:
        raise ValueError(f"unknown 3GPP model {model!r}; known: tdl, cdl")
    _draw_from(generator, channel, getattr(channel, "_cir_gen", None))  # CDL's rays too
    a, tau = channel(batch_size=1, num_time_steps=steps, sampling_frequency=1.0 / step)
    f = torch.as_tensor(np.asarray(frequencies, dtype=np.float64))
    h = cir_to_ofdm_channel(f, a, tau, normalize=False)  # [1, 1, Nr, 1, Nt, T, F]
    return h[0, 0, :, 0, :, :, :].permute(2, 3, 0, 1).numpy().astype(np.complex128)


def _draw_from(generator, *objects) -> None:
    """Make Sionna objects draw from ``generator`` instead of Sionna's global one (each
    becomes an instance of a subclass whose ``torch_rng`` is ``generator``), so that a
    draw depends on its seed alone, whatever else the process drew before."""
    for obj in objects:
        if obj is None:
            continue

        class Seeded(type(obj)):
            @property
            def torch_rng(self):
                return generator

        Seeded.__name__ = f"Seeded{type(obj).__name__}"
        obj.__class__ = Seeded


def frequencies(fft_size: int, subcarrier_spacing: float) -> np.ndarray:
    """Sionna's baseband subcarrier frequencies, Hz (``−fft_size/2 .. fft_size/2 − 1``
    spacings), as numpy."""
    from sionna.phy.channel import subcarrier_frequencies

    return subcarrier_frequencies(fft_size, subcarrier_spacing, precision="double").numpy()
