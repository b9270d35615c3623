"""Air-interface settings shared by the AP and every user."""

from __future__ import annotations

from dataclasses import dataclass

from common.maths import channel, validation
from common.maths.compression import compressed_dim


@dataclass(frozen=True)
class LinkConfig:
    """Antennas, channel uses ``u``, SNR and power budget ``P`` of every link.

    The defaults live in the configuration (``conf/channel``); values are checked
    here, where they enter, and nowhere downstream.
    """

    antennas_tx: int
    antennas_rx: int
    channel_uses: int
    snr_db: float
    power: float

    def __post_init__(self) -> None:
        for name in ("antennas_tx", "antennas_rx", "channel_uses"):
            object.__setattr__(self, name, validation.positive_int(name, getattr(self, name)))
        object.__setattr__(self, "snr_db", validation.snr_db("snr_db", self.snr_db))
        object.__setattr__(self, "power", validation.positive_float("power", self.power))

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
        return 100.0 * self.channel_uses / compressed_dim(latent_dim)
