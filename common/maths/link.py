"""Air-interface settings shared by the AP and every user."""

from __future__ import annotations

from typing import Annotated

from common.maths import noise, validation
from common.maths.compression import compressed_dim
from common.schema import Scope, Section, check, setting


class LinkConfig(Section):
    """Antennas, channel uses ``u``, SNR and power budget ``P`` of every link.

    The configuration's ``communication`` section (the paper code's key names are the
    aliases); values are checked here, where they enter, and nowhere downstream.

    Attributes
    ----------
    antennas_tx : int
        Transmit antennas ``N_t`` at the AP (config key ``antennas_transmitter``).
    antennas_rx : int
        Receive antennas ``N_r`` at each user (config key ``antennas_receiver``).
    channel_uses : int
        Channel uses ``u`` per sample (config key ``channel_usage``).
    snr_db : float
        Average received SNR per receive antenna and channel use, in dB (config key
        ``snr``; ``inf``: no noise).
    power : float
        Power budget ``P`` (linear): ``‖F‖² ≤ P``, the average transmit energy per sample.

    Each field's check and description are its ``setting(...)`` declaration.

    Raises
    ------
    pydantic.ValidationError
        A value is refused (its message says what is allowed).
    """

    antennas_tx: Annotated[int, check(validation.positive_int)] = setting(
        "transmit antennas N_t at the AP", alias="antennas_transmitter", scope=Scope.RESULT
    )
    antennas_rx: Annotated[int, check(validation.positive_int)] = setting(
        "receive antennas N_r at each user", alias="antennas_receiver", scope=Scope.RESULT
    )
    channel_uses: Annotated[int, check(validation.positive_int)] = setting(
        "channel uses u per sample", alias="channel_usage", scope=Scope.RESULT
    )
    snr_db: Annotated[float, check(validation.snr_db)] = setting(
        "average received SNR per receive antenna and channel use (inf: no noise)",
        alias="snr",
        unit="dB",
        scope=Scope.RESULT,
    )
    power: Annotated[float, check(validation.positive_float)] = setting(
        "power budget P: ‖F‖² ≤ P, the average transmit energy per sample", scope=Scope.RESULT
    )

    @property
    def tx_dim(self) -> int:
        """Complex symbols sent per sample, ``Nt·u``."""
        return self.antennas_tx * self.channel_uses

    @property
    def rx_dim(self) -> int:
        """Complex symbols received per sample, ``Nr·u``."""
        return self.antennas_rx * self.channel_uses

    @property
    def noise_variance(self) -> float:
        """``σ² = P / (u · 10^{SNR/10})`` (:func:`common.maths.noise.noise_variance`)."""
        return noise.noise_variance(self.power, self.channel_uses, self.snr_db)

    def compression_factor(self, latent_dim: int) -> float:
        """``ζ = u / m`` in percent, with ``m = ⌈d/2⌉`` the AP's complex latent size.

        docs/ALGORITHM.md, §2 "Signal-processing blocks", *Compression factor* (without the
        side-information uses of the effective ζ).

        Parameters
        ----------
        latent_dim : int
            The AP's real latent size ``d``.

        Returns
        -------
        float
            ``100 · u / ⌈d/2⌉``, in percent.
        """
        return 100.0 * self.channel_uses / compressed_dim(latent_dim)
