"""The benchmark's workload: markers where the timing assumes them (no broker needed)."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from cityagent.batch import decode_batch
from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig
from cityagent.pipeline import Detector
from cityagent.regions import default_regions
from control.bench import _print_table
from control.bench_api import ApiBenchError, _one_run
from control.bench_workload import BENCH_WINDOW_S, PARTITIONS, build_workload
from control.cli import BENCH_PARTITIONS
from control.cli import main as cli_main
from tests.helpers import free_port


@pytest.mark.parametrize(("readings", "sensors", "per_message"),
                         [(30_000, 2_000, 100), (40_000, 500, 50), (20_000, 500, 500)])
def test_each_marker_is_detected_by_the_message_the_timing_assumes(
        readings: int, sensors: int, per_message: int) -> None:
    work = build_workload(readings=readings, sensors=sensors, per_message=per_message)
    detector = Detector(DetectionEngine(DetectionConfig.load(
        None, window_s=BENCH_WINDOW_S, grace_s=0.0)), default_regions())
    states: dict[bytes, object] = {}
    numbers: dict[int, list[int]] = {}  # partition → its messages' numbers, in order
    sizes: list[int] = []
    found: dict[tuple[str, int], tuple[int, int]] = {}  # marker → (partition, message number)
    first_seen: dict[int, set[int]] = {}  # partition → numbers of messages with a new sensor
    seen: set[str] = set()
    late = 0
    for number, (key, value, partition) in enumerate(work.messages):
        numbers.setdefault(partition, []).append(number)
        batch = decode_batch(value)
        sizes.append(len(batch))
        if not seen.issuperset(batch.sensor_id.tolist()):
            seen.update(batch.sensor_id.tolist())
            first_seen.setdefault(partition, set()).add(number)
        state = states.setdefault(key, detector.engine.new_state())
        outcome = detector.process_batch(batch, state, int(batch.ts_ms.max()))
        late += outcome.late
        for a in outcome.anomalies:
            if a.phase == "start":
                found[(a.sensor_id, a.window_start_ms)] = (partition, number)

    assert late == 0
    assert len(work.start_markers) == len(work.end_markers) == PARTITIONS
    timed = 0
    for start, end in zip(work.start_markers, work.end_markers, strict=True):
        assert start.partition == end.partition
        own = numbers[start.partition]
        # Each is detected by the message the workload says closes its window.
        assert found[(start.sensor_id, start.ts_ms)] == (start.partition, own[start.closed_by])
        assert found[(end.sensor_id, end.ts_ms)] == (end.partition, own[end.closed_by])
        assert end.closed_by >= len(own) - 256  # among the flush messages at the end
        timed_messages = own[start.closed_by + 1:end.closed_by + 1]
        timed += sum(sizes[n] for n in timed_messages)
        if not work.first_seen_timed:  # every sensor's first reading is behind the timing
            assert max(n for n in first_seen[start.partition]) < own[start.closed_by + 1]
    # The markers are the only level breaches in the data.
    assert len([k for k in found if k in {(m.sensor_id, m.ts_ms) for m in
                                          work.start_markers + work.end_markers}]) == 16
    assert work.timed_readings == timed
    # 500 sensors with 500 readings per message: each bucket's only message holds all its
    # readings, so no partition reaches the steady state (the bench says so); otherwise all do.
    assert work.first_seen_timed == (PARTITIONS if (readings, per_message) == (20_000, 500) else 0)
    assert work.readings == sum(sizes)
    assert np.isclose(work.mean_readings_per_message, work.readings / len(work.messages))


def test_the_table_prints_every_run_and_the_median_with_the_consumer_columns(
        capsys: pytest.CaptureFixture[str]) -> None:
    run = {"readings_per_s": 500_000.0, "raw_consume_per_s": 2_000_000.0, "ratio": 0.25,
           "consumer_per_s": 900_000.0, "consumer_ratio": 0.45, "domain_per_s": 1_400_000.0}
    summary = {**run, "readings": 2_000_256, "sensors": 250_000, "partitions": 8, "workers": 1,
               "messages": 4_352, "mean_readings_per_message": 459.6,
               "first_seen_timed_partitions": 0,
               "runs": [{**run, "run": 1}, {**run, "run": 2, "consumer_per_s": 800_000.0,
                                                "consumer_ratio": 0.4}]}
    _print_table(summary)
    lines = capsys.readouterr().out.splitlines()
    assert "consumer/s" in lines[1]
    assert lines[2].split() == ["1", "500,000", "2,000,000", "0.25", "900,000", "0.45", "1,400,000"]
    assert lines[3].split()[4:6] == ["800,000", "0.40"]
    assert lines[4].split()[0] == "median"
    assert "no Faust" in lines[5]


@pytest.mark.parametrize(("argv", "says"), [
    # A ninth worker gets no partition of 8; a hundred were a hundred processes on 2 cores.
    (["--workers", "9"], "--workers: must be at most 8 (the benchmark topic's partitions"),
    (["--api", "--duration", "1e300"], "--duration: must lie between 0.1 and 3,600 seconds"),
    # 100,000 clients were an httpx.ReadError traceback.
    (["--api", "--concurrency", "1001"], "--concurrency: must be at most 1,000"),
    # The workload is built in memory first: 10^8 readings would take ~35 GB.
    (["--readings", "20000001"], "--readings: must be at most 20,000,000"),
    # A table of 10^9 sensors ran out of memory before anything was said.
    (["--sensors", "1000001"], "--sensors: must be at most 1,000,000"),
    (["--api", "--sensors", "1000001"], "--sensors: must be at most 1,000,000"),
    (["--readings", "1000", "--sensors", "1001"], "--sensors: must be at most --readings (1,000)"),
])
def test_bench_arguments_out_of_range_are_one_line_and_exit_2(argv, says, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", *argv])
    assert exc.value.code == 2
    assert says in capsys.readouterr().err


def test_the_cli_knows_the_benchmark_topics_partitions() -> None:
    assert BENCH_PARTITIONS == PARTITIONS


def test_a_run_whose_requests_all_fail_names_the_first_failure() -> None:
    """Connection errors were a traceback out of the run; now they are counted and named."""
    async def run() -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port()}") as client:
            await _one_run(client, [b"[]"], 0.2, 2, 1)

    with pytest.raises(ApiBenchError, match=r"every request of run 1 failed; the first: Connect"):
        asyncio.run(run())
