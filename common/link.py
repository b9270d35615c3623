"""Air-interface settings shared by the AP and every user."""

from __future__ import annotations

import math
from dataclasses import dataclass

from common import channel, validation


@dataclass(frozen=True)
class LinkConfig:
    """Antennas, channel uses ``u``, SNR and power budget ``P`` of every link."""

    antennas_tx: int = 4
    antennas_rx: int = 4
    channel_uses: int = 4
    snr_db: float = 20.0
    power: float = 1.0

    def __post_init__(self) -> None:
        validation.positive_int("antennas_tx", self.antennas_tx)
        validation.positive_int("antennas_rx", self.antennas_rx)
        validation.positive_int("channel_uses", self.channel_uses)
        validation.snr_db("snr_db", self.snr_db)
        validation.positive_float("power", self.power)

    @property
    def tx_dim(self) -> int:
        """Complex symbols sent per sample, ``Nt·u``."""
        return self.antennas_tx * self.channel_uses

    @property
    def rx_dim(self) -> int:
        return self.antennas_rx * self.channel_uses

    @property
    def noise_variance(self) -> float:
        return channel.noise_variance(self.power, self.channel_uses, self.snr_db)

    def compression_factor(self, latent_dim: int) -> float:
        """``ζ = u / m`` in percent, with ``m = ⌈d/2⌉`` the AP's complex latent size."""
        return 100.0 * self.channel_uses / math.ceil(latent_dim / 2)
