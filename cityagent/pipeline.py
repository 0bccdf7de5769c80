"""One batch through the domain: tag regions → windows → detectors → anomalies.

The Faust detection agent, the benchmark, eval and the tests all call ``process_batch``;
only where the ``BucketState`` lives differs (a checkpointed Faust table, an object).
"""

from __future__ import annotations

from dataclasses import dataclass

from cityagent.batch import ReadingBatch
from cityagent.detection import Anomaly, DetectionEngine
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


@dataclass(frozen=True)
class Detector:
    """The detection step with its fixed inputs (engine and regions), built once."""

    engine: DetectionEngine
    regions: RegionIndex

    def tag(self, batch: ReadingBatch) -> ReadingBatch:
        """Tag rows that carry no district code yet (code 0) by their position."""
        untagged = batch.district == 0
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
        if outside:
            batch = batch.take(inside)
        result = self.engine.process(state, batch, now_ms)
        return BatchOutcome(result.anomalies, len(batch), outside, result.late)
