"""The benchmark's workload: markers where the timing assumes them (no broker needed)."""

from __future__ import annotations

import numpy as np
import pytest

from cityagent.batch import decode_batch
from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig
from cityagent.pipeline import Detector
from cityagent.regions import default_regions
from control.bench import BENCH_WINDOW_S, PARTITIONS, build_workload


@pytest.mark.parametrize(("readings", "sensors", "per_message"),
                         [(30_000, 2_000, 100), (20_000, 500, 500)])
def test_each_marker_is_detected_by_the_message_the_timing_assumes(
        readings: int, sensors: int, per_message: int) -> None:
    work = build_workload(readings=readings, sensors=sensors, per_message=per_message)
    detector = Detector(DetectionEngine(DetectionConfig.load(
        None, window_s=BENCH_WINDOW_S, grace_s=0.0)), default_regions())
    states: dict[bytes, object] = {}
    numbers: dict[int, list[int]] = {}  # partition → its messages' numbers, in order
    sizes: list[int] = []
    found: dict[tuple[str, int], tuple[int, int]] = {}  # marker → (partition, message number)
    late = 0
    for number, (key, value, partition) in enumerate(work.messages):
        numbers.setdefault(partition, []).append(number)
        batch = decode_batch(value)
        sizes.append(len(batch))
        state = states.setdefault(key, detector.engine.new_state())
        outcome = detector.process_batch(batch, state, 0)
        late += outcome.late
        for a in outcome.anomalies:
            if a.phase == "start":
                found[(a.sensor_id, a.window_start_ms)] = (partition, number)

    assert late == 0
    assert len(work.start_markers) == len(work.end_markers) == PARTITIONS
    for m in work.start_markers:  # the prelude: the partition's first message
        assert found[(m.sensor_id, m.ts_ms)] == (m.partition, numbers[m.partition][0])
    timed = 0
    for m in work.end_markers:  # closed_by counts the partition's messages after its prelude
        own = numbers[m.partition]
        assert found[(m.sensor_id, m.ts_ms)] == (m.partition, own[m.closed_by + 1])
        assert m.closed_by + 1 >= len(own) - 256  # among the flush messages at the end
        timed += sum(sizes[n] for n in own[1:m.closed_by + 2])
    # The markers are the only level breaches in the data.
    assert len([k for k in found if k in {(m.sensor_id, m.ts_ms) for m in
                                          work.start_markers + work.end_markers}]) == 16
    assert work.timed_readings == timed
    assert work.readings == sum(sizes)
    assert np.isclose(work.mean_readings_per_message, work.readings / len(work.messages))
