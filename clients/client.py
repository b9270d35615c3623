"""The user as a Flower ``NumPyClient``: fit trains on the AP's pilots, evaluate classifies."""

from __future__ import annotations

import numpy as np
from flwr.compat.client.numpy_client import NumPyClient

from common.parties import protocol
from common.parties.user import User


class AlignmentClient(NumPyClient):
    """Wraps one :class:`~common.parties.user.User`; the message kind arrives in ``config["kind"]``.

    ``parameters`` are the message's arrays in their declared order; the reply's
    arrays come back the same way, its kind in the returned metrics (``"kind"``).
    """

    def __init__(self, user: User) -> None:
        self.user = user

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list, int, dict]:
        message = protocol.message_class(str(config["kind"])).from_list(parameters)
        reply = self.user.train(message)
        metrics = {**reply.metrics, "kind": reply.message.KIND}
        return reply.message.to_list(), self.user.n_pilots, metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict) -> tuple[float, int, dict]:
        message = protocol.message_class(str(config["kind"])).from_list(parameters)
        metrics = self.user.evaluate(message)
        return metrics["mse"], int(metrics["n_test"]), metrics
