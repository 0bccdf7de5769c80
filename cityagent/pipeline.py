"""One batch through the domain: tag regions → windows → detectors → anomalies.

The Faust detection agent, the benchmark and the tests call ``process_batch``; only where
the ``BucketState`` lives differs (a checkpointed Faust table, an object). Before detection
it drops, and counts, the rows detection must not see: rows in no district, and rows dated
more than ``future_tolerance_ms`` (default ``FUTURE_TOLERANCE_MS``, 5 min) past the processing
clock. A bucket's event time is the
latest reading time it has seen, so a sensor whose clock runs ahead would leave every other
sensor of its bucket late, unjudged, for as long as its clock is ahead: rows up to the
tolerance ahead are judged, but move the bucket's event time no further than the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cityagent.batch import ReadingBatch
from cityagent.detection import Anomaly, DetectionEngine
from cityagent.readings import FUTURE_TOLERANCE_MS
from cityagent.regions import RegionIndex
from cityagent.state import BucketState

__all__ = ("Detector", "BatchOutcome")


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch caused: the anomalies to publish and the counts to report."""

    anomalies: list[Anomaly]
    readings: int  # rows that were detected on
    outside: int  # rows dropped because their position is in no district
    late: int  # rows that came after their window had closed (counted, not judged)
    future: int = 0  # rows dropped because they are dated too far past the clock
    #: (sensor id, ms past the clock) of each sensor with such rows, the furthest row each.
    ahead: tuple[tuple[str, int], ...] = field(default=())
    wrong_kind: int = 0  # rows dropped because their kind is not their sensor's
    #: (sensor id, its kind, the kind claimed) of each sensor with such rows.
    wrong_kind_sensors: tuple[tuple[str, str, str], ...] = field(default=())
    #: Sensors forgotten after the batch (not heard from for the settings' forget_after_s).
    forgotten: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Detector:
    """The detection step with its fixed inputs (engine and regions), built once."""

    engine: DetectionEngine
    regions: RegionIndex
    #: Readings dated further than this past the clock are dropped (Settings.future_tolerance_s).
    future_tolerance_ms: int = FUTURE_TOLERANCE_MS

    def tag(self, batch: ReadingBatch) -> ReadingBatch:
        """Tag rows that carry no district code yet (code 0), or one that is not a Shandong
        district's (anything may write to the readings topic), by their position."""
        untagged = ~self.regions.is_district_code(batch.district)
        if not untagged.any():
            return batch
        district = batch.district.copy()
        found = self.regions.locate(batch.lon[untagged], batch.lat[untagged])
        district[untagged] = self.regions.district_code_numbers(found)
        return batch.with_districts(district)

    def process_batch(self, batch: ReadingBatch, state: BucketState, now_ms: int) -> BatchOutcome:
        """Detect on one bucket's batch (``state`` is updated in place)."""
        batch = self.tag(batch)
        inside = batch.district != 0
        outside = int(len(batch) - inside.sum())
        ahead_rows = inside & (batch.ts_ms > now_ms + self.future_tolerance_ms)
        future = int(ahead_rows.sum())
        ahead: tuple[tuple[str, int], ...] = ()
        if future:
            ahead = _furthest_ahead(batch.sensor_id[ahead_rows], batch.ts_ms[ahead_rows] - now_ms)
            inside &= ~ahead_rows
        if outside or future:
            batch = batch.take(inside)
        result = self.engine.process(state, batch, now_ms, watermark_limit_ms=now_ms)
        return BatchOutcome(result.anomalies, len(batch) - result.wrong_kind, outside,
                            result.late, future, ahead, result.wrong_kind,
                            result.wrong_kind_sensors, result.forgotten)


def _furthest_ahead(sensors: np.ndarray, ahead_ms: np.ndarray) -> tuple[tuple[str, int], ...]:
    """(sensor, its furthest ms ahead) per sensor, in the order of their first row."""
    furthest: dict[str, int] = {}
    for sensor, ms in zip(sensors.tolist(), ahead_ms.tolist(), strict=True):
        furthest[sensor] = max(ms, furthest.get(sensor, ms))
    return tuple(furthest.items())
