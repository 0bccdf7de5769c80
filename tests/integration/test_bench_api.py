"""`cityagent bench --api` on a tiny load: the API in a child process, JSON out, nothing left."""

from __future__ import annotations

import json

import pytest

from cityagent.settings import Settings
from control.bench_api import run_api_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_api_bench_prints_rate_and_latency_as_json(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_api_bench(Settings(kafka=kafka_bootstrap), duration_s=1.0, concurrency=2,
                         per_request=100, sensors=300, runs=2, as_json=True)

    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("api_readings_per_s", "api_p50_ms", "api_p99_ms", "per_request", "concurrency",
                "duration_s", "sensors", "runs"):
        assert key in doc, key
    assert doc["api_readings_per_s"] > 0
    assert 0 < doc["api_p50_ms"] <= doc["api_p99_ms"]
    assert (doc["per_request"], doc["concurrency"], doc["sensors"]) == (100, 2, 300)
    assert len(doc["runs"]) == 2
    assert all(r["errors"] == 0 and r["readings"] > 0 for r in doc["runs"])
