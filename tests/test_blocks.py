"""Signal-processing blocks: compression, whitening, channel, noise."""

import math

import numpy as np
import pytest

from common.maths import fading, noise
from common.maths.compression import compress, compressed_dim, decompress
from common.maths.whitening import fit_whitening
from tests.synthetic import link


@pytest.mark.parametrize("d", [1, 2, 7, 8, 191, 192])
def test_compression_round_trip_is_exact(d):
    x = np.random.default_rng(d).standard_normal((d, 13))
    z = compress(x)
    assert z.shape == (compressed_dim(d), 13) == ((d + 1) // 2, 13)
    np.testing.assert_array_equal(decompress(z, d), x)
    np.testing.assert_array_equal(z.real, x[: (d + 1) // 2])
    if d % 2:
        np.testing.assert_array_equal(z.imag[-1], 0.0)  # the padding feature


def test_decompress_rejects_wrong_size():
    with pytest.raises(ValueError, match="d=10"):
        decompress(np.zeros((4, 2), complex), 10)


def test_whitened_pilots_have_identity_covariance():
    rng = np.random.default_rng(1)
    mix = rng.standard_normal((6, 6)) + 1j * rng.standard_normal((6, 6))
    v = mix @ (rng.standard_normal((6, 500)) + 1j * rng.standard_normal((6, 500))) + 3.0
    w = fit_whitening(v)
    v_bar = w.whiten(v)
    assert w.loading == 0.0
    np.testing.assert_allclose(v_bar.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(v_bar @ v_bar.conj().T / 500, np.eye(6), atol=1e-10)
    np.testing.assert_allclose(w.dewhiten(v_bar), v, atol=1e-10)


def test_rank_deficient_covariance_gets_smallest_working_loading():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((3, 40)) + 1j * rng.standard_normal((3, 40))
    v = np.vstack([base, base[:1] * 2.0])  # fourth row duplicates the first: singular C
    w = fit_whitening(v)
    assert w.loading > 0
    # the previous candidate loading (10x smaller) must not have been acceptable
    cov = np.cov(v, bias=True)
    smaller = w.loading / 10
    try:
        chol = np.linalg.cholesky(cov + smaller * np.eye(4))
        diag = np.abs(np.diag(chol))
        assert (diag.max() / diag.min()) ** 2 > 1e12
    except np.linalg.LinAlgError:
        pass


def test_rayleigh_entries_have_unit_variance_per_complex_entry():
    h = fading.cn((200, 200), np.random.default_rng(3))
    assert h.shape == (200, 200)
    assert abs(np.mean(np.abs(h) ** 2) - 1.0) < 0.02
    assert abs(np.var(h.real) - 0.5) < 0.02 and abs(np.var(h.imag) - 0.5) < 0.02


def test_block_channel_is_kronecker_of_identity():
    h = fading.cn((2, 3), np.random.default_rng(4))
    blk = fading.block_diagonal(h[None], 3)
    np.testing.assert_array_equal(blk, np.kron(np.eye(3), h))
    assert blk.shape == (6, 9)


def test_block_fading_changes_the_channel_every_coherence_block():
    blocks = fading.cn((2, 2, 3), np.random.default_rng(5))
    blk = fading.block_diagonal(blocks, 4)  # u = 4 uses, 2 blocks: uses 0-1, then 2-3
    np.testing.assert_array_equal(blk[2:4, 3:6], blocks[0])
    np.testing.assert_array_equal(blk[4:6, 6:9], blocks[1])
    assert np.count_nonzero(blk[0:2, 3:]) == 0


def test_a_coherence_that_does_not_divide_u_keeps_its_length_and_the_last_block_is_shorter():
    # communication.coherence_uses=3 with u = 4: uses 0-2 on one channel, use 3 on the next
    # (it ran as coherence 2 when the block length was re-derived from the block count)
    blocks = fading.cn((2, 2, 3), np.random.default_rng(6))
    blk = fading.block_diagonal(blocks, 4, coherence=3)
    for t in range(3):
        np.testing.assert_array_equal(blk[2 * t : 2 * t + 2, 3 * t : 3 * t + 3], blocks[0])
    np.testing.assert_array_equal(blk[6:8, 9:12], blocks[1])
    with pytest.raises(ValueError, match="do not cover u = 4 uses exactly"):
        fading.block_diagonal(blocks, 4, coherence=4)

    def train(coherence):
        config = fading.RAYLEIGH.model_copy(update={"coherence_uses": coherence})
        rng = np.random.default_rng(7)
        return fading.draw_link_channels(config, fading.PERFECT_CSI, 2, 3, 4, rng, rng).train

    three, two = train(3), train(2)
    assert not np.array_equal(three, two)
    np.testing.assert_array_equal(three[0:2, 0:3], three[4:6, 6:9])  # use 2 still on block 0
    assert not np.array_equal(three[4:6, 6:9], three[6:8, 9:12])


def test_noise_variance_follows_snr_definition():
    assert math.isclose(noise.noise_variance(1.0, 4, 20.0), 1.0 / (4 * 100))
    assert noise.noise_variance(2.0, 1, 0.0) == 2.0
    assert noise.noise_variance(1.0, 4, math.inf) == 0.0
    n = noise.complex_noise((4, 20000), 0.3, np.random.default_rng(5))
    assert abs(np.mean(np.abs(n) ** 2) - 0.3) < 0.01


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"antennas_tx": 0}, "antennas_tx"),
        ({"antennas_rx": -1}, "antennas_rx"),
        ({"channel_uses": 0}, "channel_uses"),
        ({"channel_uses": 2.5}, "channel_uses"),
        ({"power": 0.0}, "power"),
        ({"power": -1.0}, "power"),
        ({"snr_db": float("nan")}, "snr_db"),
    ],
)
def test_link_config_rejects_bad_values_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name) as info:
        link(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


def test_the_g_step_falls_back_to_least_squares_when_the_loaded_system_is_singular():
    """At a very high SNR the noise loading vanishes next to R Rᴴ; with more receive than
    transmit dimensions the system is singular, and the minimum-norm solution is used."""
    from common.maths import admm

    rng = np.random.default_rng(0)
    r = np.repeat(rng.standard_normal((2, 40)) + 1j * rng.standard_normal((2, 40)), 3, axis=0)
    y = rng.standard_normal((3, 40)) + 0j
    moments = admm.ReceivedMoments.of(y, r)
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.solve(moments.gram + 1e-320 * np.eye(6), moments.cross.conj().T)
    g = admm.equalizer(moments, 1e-320)
    np.testing.assert_allclose(g, admm.equalizer(moments, 0.0), rtol=1e-10)
    assert np.all(np.isfinite(g))
