"""3GPP TR 38.901 TDL/CDL channels (Sionna's): statistics against the models, the mapping
of channel uses onto subcarriers, reproducibility, and refusals."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy.special import j0

from common.maths import tr38901
from common.maths.fading import PERFECT_CSI, RAYLEIGH, ChannelConfig, draw_link_channels
from common.maths.seeding import Stream, rng
from common.run.settings import ConfigError
from conf import settings

C = 299_792_458.0  # m/s
F = tr38901.frequencies(64, 30e3)


def _draws(model, profile, seeds, **options):
    kwargs = dict(
        n_rx=2,
        n_tx=2,
        delay_spread=300e-9,
        carrier_frequency=3.5e9,
        frequencies=F[:4],
        times=np.zeros(1),
    )
    kwargs.update(options)
    return np.stack([tr38901.response(model, profile, seed=s, **kwargs) for s in seeds])


@pytest.mark.parametrize(("model", "profile"), [("tdl", "A"), ("tdl", "E"), ("cdl", "C")])
def test_every_entry_has_unit_mean_power(model, profile):
    h = _draws(model, profile, range(400))
    power = np.abs(h) ** 2
    # the mean over 400 realisations, each entry and subcarrier: within 4 standard errors
    per_draw = power.reshape(len(power), -1).mean(axis=1)
    error = per_draw.std() / math.sqrt(len(per_draw))
    assert abs(per_draw.mean() - 1.0) < max(4 * error, 0.03)


def test_tdl_frequency_correlation_follows_its_power_delay_profile():
    """E[H(f₁) H*(f₂)] = Σ_l p_l e^{−j2π(f₁−f₂)τ_l} (TR 38.901 TDL-A, 300 ns)."""
    from sionna.phy.channel.tr38901 import TDL

    spacing = 30e3
    frequencies = tr38901.frequencies(64, spacing)[[0, 4, 16]]  # 0, 120 kHz, 480 kHz apart
    h = _draws("tdl", "A", range(600), frequencies=frequencies, n_rx=1, n_tx=1)[:, 0, :, 0, 0]
    table = TDL("A", delay_spread=300e-9, carrier_frequency=3.5e9, precision="double")
    p, tau = table.mean_powers.numpy(), table.delays.numpy()
    for j in (1, 2):
        measured = np.mean(h[:, 0] * h[:, j].conj())
        expected = np.sum(p * np.exp(-2j * math.pi * (frequencies[0] - frequencies[j]) * tau))
        assert abs(measured - expected) < 0.1, (j, measured, expected)
    assert abs(np.sum(p * np.exp(-2j * math.pi * 480e3 * tau))) < 0.9  # frequency-selective


def test_tdl_time_correlation_follows_clarkes_j0():
    """A moving user's channel decorrelates as J0(2π f_D Δt), f_D = v f_c / c (TDL-A has
    no line of sight: every tap has Clarke's spectrum)."""
    speed, carrier = 30.0, 3.5e9
    doppler = speed * carrier / C  # 350 Hz
    times = np.arange(6) * 2e-4  # 0.2 ms steps: f_D Δt up to 0.35
    h = _draws("tdl", "A", range(600), times=times, speed=speed, frequencies=F[:1], n_rx=1, n_tx=1)[
        :, :, 0, 0, 0
    ]
    for lag in range(1, 6):
        measured = np.mean(h[:, 0] * h[:, lag].conj()).real
        assert abs(measured - j0(2 * math.pi * doppler * times[lag])) < 0.08, lag
    static = _draws("tdl", "A", range(3), times=times, frequencies=F[:1], n_rx=1, n_tx=1)
    np.testing.assert_allclose(static[:, 1:], np.repeat(static[:, :1], 5, axis=1), atol=1e-12)


def _config(**changes) -> ChannelConfig:
    return ChannelConfig(**{**RAYLEIGH.model_dump(), **changes})


@pytest.mark.parametrize("model", ["tdl", "cdl"])
def test_each_channel_use_is_a_subcarrier_and_a_users_draw_is_reproducible(model):
    config = _config(model=model, profile="C", fft_size=64)
    draw = lambda k: draw_link_channels(  # noqa: E731
        config, PERFECT_CSI, 2, 2, 4, rng(5, Stream.CHANNEL, k), rng(5, Stream.CSI, k)
    )
    first, again, other = draw(0), draw(0), draw(1)
    np.testing.assert_array_equal(first.train, again.train)
    assert np.abs(first.train - other.train).max() > 0.1
    blocks = [first.train[2 * t : 2 * t + 2, 2 * t : 2 * t + 2] for t in range(4)]
    off = first.train.copy()
    for t in range(4):
        off[2 * t : 2 * t + 2, 2 * t : 2 * t + 2] = 0
    assert not off.any()  # block-diagonal: one 2×2 H per use
    assert min(np.abs(blocks[0] - b).max() for b in blocks[1:]) > 1e-3  # each its own
    # the blocks are the frequency response on subcarriers 0, 16, 32, 48
    assert tr38901.subcarriers(4, 64).tolist() == [0, 16, 32, 48]
    seed = int(rng(5, Stream.CHANNEL, 0).integers(2**63 - 1))
    expected = tr38901.response(
        model,
        "C",
        n_rx=2,
        n_tx=2,
        delay_spread=1e-7,
        carrier_frequency=3.5e9,
        frequencies=F[[0, 16, 32, 48]],
        times=np.zeros(1),
        seed=seed,
    )[0]
    np.testing.assert_allclose(np.stack(blocks), expected, rtol=1e-12)
    np.testing.assert_array_equal(first.test, first.train)  # static at test time


def test_a_upa_is_the_squarest_grid():
    assert tr38901._factor(4) == (2, 2)
    assert tr38901._factor(8) == (2, 4)
    assert tr38901._factor(7) == (1, 7)


def test_bad_3gpp_settings_are_refused_by_name():
    cases = {
        ("channel=tdl", "communication.profile=F"): "profile must be one of A, B, C, D, E",
        ("channel=tdl", "communication.delay_spread=-1e-7"): "delay_spread must be in [1e-9",
        ("channel=cdl", "communication.carrier_frequency=200e9"): "[0.5e9, 100e9] Hz",
        ("channel=tdl", "communication.fft_size=2"): "must be at least communication.channel_usage",
        ("channel=tdl", "communication.subcarrier_spacing=20e3"): "NR subcarrier spacing",
        ("channel=tdl", "communication.coherence_uses=2"): "tdl and cdl map the uses",
        ("channel=tdl", "communication.array=upa"): "read only with channel=cdl",
        ("communication.profile=B",): "read only with channel=tdl or channel=cdl",
    }
    for overrides, message in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            settings(*overrides)
    tdl = settings("channel=tdl", "communication.profile=D", "communication.delay_spread=3e-7")
    assert (tdl.communication.profile, tdl.communication.delay_spread) == ("D", 3e-7)


def test_the_3gpp_settings_leave_other_channels_identities_as_they_were():
    identity = settings().identity()["communication"]
    assert not {"profile", "delay_spread", "carrier_frequency", "fft_size"} & set(identity)
    tdl = settings("channel=tdl", "communication.profile=C").identity()["communication"]
    assert tdl["model"] == "tdl" and tdl["profile"] == "C"
