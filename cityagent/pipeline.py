"""One batch through the domain: tag regions → detect breaches → anomalies, in ~20 lines.

The Faust detection agent, the benchmark and the tests all call ``process_batch``; only the
storage of ``state`` differs (a Faust table, a dict).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cityagent.batch import ReadingBatch
from cityagent.detection import Anomaly, Thresholds, detect_breaches
from cityagent.regions import RegionIndex

__all__ = ("Detector", "BatchOutcome")


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch changed: the bucket's new state and the anomalies to publish."""

    state: Mapping[str, Any]
    anomalies: list[Anomaly]
    readings: int  # rows that were detected on
    outside: int  # rows dropped because their position is in no district


@dataclass(frozen=True)
class Detector:
    """The detection step with its fixed inputs (thresholds and regions), built once."""

    thresholds: Thresholds
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

    def process_batch(
        self, batch: ReadingBatch, state: Mapping[str, Any], now_ms: int
    ) -> BatchOutcome:
        """Detect on one bucket's batch; rows outside the province are dropped and counted."""
        batch = self.tag(batch)
        inside = batch.district != 0
        outside = int(len(batch) - inside.sum())
        if outside:
            batch = batch.take(inside)
        new_state, anomalies = detect_breaches(batch, state, self.thresholds, now_ms)
        return BatchOutcome(new_state, anomalies, len(batch), outside)
