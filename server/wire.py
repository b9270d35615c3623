"""Protocol messages in Flower's records: the air interface of the simulation.

A message travels as ``RecordDict({"arrays": ArrayRecord, "config": ConfigRecord})``
with the arrays under their declared names and the message kind in the config.
Metrics travel as a ``MetricRecord`` of finite floats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from common import protocol

ARRAYS, CONFIG, METRICS = "arrays", "config", "metrics"


def array_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.ascontiguousarray(a)) for name, a in arrays.items()})


def numpy_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: record[name].numpy() for name in record}


def encode(message: protocol.Message, **config: int | float | str) -> RecordDict:
    return RecordDict(
        {
            ARRAYS: array_record(message.arrays()),
            CONFIG: ConfigRecord({"kind": message.KIND, **config}),
        }
    )


def decode(content: RecordDict) -> protocol.Message:
    return protocol.decode(str(content[CONFIG]["kind"]), numpy_arrays(content[ARRAYS]))


def metric_record(metrics: Mapping[str, float]) -> MetricRecord:
    """Finite scalar metrics only (``MetricRecord`` rejects numpy scalars and strings)."""
    return MetricRecord(
        {k: float(v) for k, v in metrics.items() if isinstance(v, int | float | np.number)
         and math.isfinite(float(v))}
    )  # fmt: skip
