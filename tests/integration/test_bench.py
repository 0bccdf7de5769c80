"""`cityagent bench` end to end on a small load: broker → worker → anomalies, JSON out."""

from __future__ import annotations

import json

import pytest

from cityagent.settings import Settings
from control.bench import BenchError, run_bench
from streams.app import faust_data_root

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_small_load_prints_rates_as_json(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    faust_dirs = faust_data_root()
    before = set(faust_dirs.glob("bench-*-data"))
    # Two workers sharing the partitions (the one-worker path is the same code with N=1;
    # one run of the bench costs a worker start, so the suite pays it once).
    code = run_bench(Settings(kafka=kafka_bootstrap), readings=20_000, sensors=500, runs=1,
                     as_json=True, workers=2)

    assert code == 0
    # The workers' Faust data directories went with the bench's logs (each run left one).
    assert set(faust_dirs.glob("bench-*-data")) - before == set()
    out = capsys.readouterr().out
    doc = json.loads(out)
    for key in ("readings_per_s", "raw_consume_per_s", "ratio", "domain_per_s", "consumer_per_s",
                "consumer_ratio", "readings",
                "sensors", "partitions", "mean_readings_per_message", "runs"):
        assert key in doc, key
    # The readings asked for, plus one flush reading per bucket.
    assert 20_000 < doc["readings"] <= 20_000 + 256
    # 500 sensors in 256 buckets: a bucket's one message holds all its readings, so no
    # partition reaches the steady state before the end, and the output says so.
    assert doc["first_seen_timed_partitions"] == 8
    assert doc["sensors"] == 500
    assert doc["partitions"] == 8
    assert doc["workers"] == 2  # every partition's markers detected by one of the two
    assert doc["readings_per_s"] > 0
    assert doc["raw_consume_per_s"] > 0
    assert doc["domain_per_s"] > 0
    assert doc["ratio"] == pytest.approx(doc["readings_per_s"] / doc["raw_consume_per_s"], rel=1e-3,
                                         abs=1e-4)  # printed with 4 decimals
    assert doc["consumer_ratio"] == pytest.approx(doc["consumer_per_s"] / doc["raw_consume_per_s"],
                                                  rel=1e-3, abs=1e-4)
    assert len(doc["runs"]) == 1
    run = doc["runs"][0]
    assert run["ratio"] > 0
    assert run["consumer_per_s"] > 0
    # The consumer phase ran every message through the same detection as the domain phase
    # (the same data, so the same anomalies: the two markers per partition at least).
    assert run["consumer_anomalies"] == run["domain_anomalies"] >= 16


def test_bench_refuses_zero_workers(kafka_bootstrap: str) -> None:
    with pytest.raises(BenchError, match="workers"):
        run_bench(Settings(kafka=kafka_bootstrap), readings=100, sensors=10, runs=1, workers=0)


def test_bench_refuses_fewer_readings_than_two_rounds_of_sensors(kafka_bootstrap: str) -> None:
    """It said "partition 3: no bucket ends on a water or pipe reading" after building."""
    with pytest.raises(BenchError, match=r"--readings \(10\) must be at least twice --sensors"):
        run_bench(Settings(kafka=kafka_bootstrap), readings=10, sensors=100_000, runs=1)
