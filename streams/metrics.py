"""Counters of one worker, logged as rates so `cityagent up` shows the stream is alive."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

__all__ = ("WorkerCounters",)

log = logging.getLogger("cityagent.streams")


@dataclass
class WorkerCounters:
    readings_total: int = 0
    batches_total: int = 0
    batches_rejected_total: int = 0  # messages that are no reading batch: skipped
    batches_failed_total: int = 0  # batches detection raised an error on: skipped (a bug)
    readings_outside_total: int = 0
    anomalies_total: int = 0
    alerts_total: int = 0
    readings_late_total: int = 0
    readings_future_total: int = 0  # dated more than FUTURE_TOLERANCE_MS past the clock
    readings_wrong_kind_total: int = 0  # of another kind than their sensor's: dropped
    checkpoints_total: int = 0
    #: Sensors whose detection state was dropped: not heard from for forget_after_s.
    sensors_forgotten_total: int = 0
    commands_total: int = 0
    messages_failed_total: int = 0  # alerting messages that raised an error: skipped (a bug)
    #: Seconds the worker took to read the zones, maintenance and routing topics up to where
    #: they ended at its start (streams/feeds.py); None while it has not.
    feeds_caught_up_s: float | None = None
    _last: tuple[float, int] = field(default_factory=lambda: (time.monotonic(), 0))

    def log_rates(self) -> None:
        now = time.monotonic()
        then, readings_then = self._last
        self._last = (now, self.readings_total)
        rate = (self.readings_total - readings_then) / max(now - then, 1e-9)
        log.info(
            "detect: %.0f readings/s, %d readings, %d anomalies, %d alert events, "
            "%d bad batches, %d failed messages, %d readings outside the province, "
            "%d late readings (after their window closed: counted, not judged), "
            "%d readings from the future (dated over 5 min past the clock: dropped), "
            "%d readings of another kind than their sensor's (dropped), "
            "%d sensors forgotten (silent for forget_after_s)",
            rate, self.readings_total, self.anomalies_total, self.alerts_total,
            self.batches_rejected_total, self.batches_failed_total + self.messages_failed_total,
            self.readings_outside_total, self.readings_late_total, self.readings_future_total,
            self.readings_wrong_kind_total, self.sensors_forgotten_total,
        )
        if self.feeds_caught_up_s is None:
            log.warning("the zones, maintenance and routing topics are not read up to where "
                        "they ended when this worker started: alerts are judged without "
                        "what they hold")
