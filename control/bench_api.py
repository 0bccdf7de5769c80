"""`cityagent bench --api`: readings/s one API process accepts, and its request latency.

Starts the embedded broker (unless ``CITYAGENT_KAFKA`` is set), creates fresh topics, and
runs the API with uvicorn in a child process on a free loopback port, with one integrator
key and no practical rate limit. Then ``concurrency`` clients (httpx, one event loop) post
JSON arrays of ``per_request`` readings for ``duration_s`` seconds per run, each request
waiting for its 202 (Kafka acks=all) before the client sends the next. Bodies are built
before the clock starts (a pool of distinct requests over ``sensors`` sensors in every
district), so the client's cost is HTTP only.

Reported per run: accepted readings / elapsed seconds, and p50 / p99 of request latency;
the summary is the median of the runs. A warm-up request per client before the first run
lets the API learn the sensor ids (its fast validation path) and connect to every partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from cityagent.errors import BrokerError, CityAgentError, describe_exception
from cityagent.readings import KINDS
from cityagent.regions import default_regions
from cityagent.settings import Settings
from control.broker import broker_for_bench, free_port
from control.procs import die_with_parent
from control.topics import ensure_topics, pipeline_topics
from control.up import api_argv

__all__ = ("run_api_bench", "ApiBenchError")

PARTITIONS = 8
_BODIES = 64
_START_TIMEOUT_S = 60.0
_VALUES = {"traffic": {"speed_kmh": 42.0, "flow_vph": 900.0, "occupancy_pct": 12.0},
           "water_level": {"level_m": 1.2}, "pipe_pressure": {"pressure_mpa": 0.35}}


class ApiBenchError(CityAgentError):
    """The API benchmark could not measure (the API did not start or refused the load)."""


@dataclass(frozen=True)
class RunResult:
    run: int
    readings_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    readings: int
    errors: int

    def public(self) -> dict[str, Any]:
        return {"run": self.run, "readings_per_s": round(self.readings_per_s, 1),
                "p50_ms": round(self.p50_ms, 2), "p99_ms": round(self.p99_ms, 2),
                "requests": self.requests, "readings": self.readings, "errors": self.errors}


def build_bodies(sensors: int, per_request: int, count: int = _BODIES,
                 seed: int = 7) -> list[bytes]:
    """``count`` JSON arrays of ``per_request`` valid readings of ``sensors`` sensors."""
    rng = np.random.default_rng(seed)
    regions = default_regions()
    per_district = -(-sensors // len(regions.districts))
    lons, lats = [], []
    for d in range(len(regions.districts)):
        lon, lat = regions.random_points(d, per_district, rng)
        lons.append(lon)
        lats.append(lat)
    lon, lat = np.concatenate(lons)[:sensors], np.concatenate(lats)[:sensors]
    kinds = [KINDS[i % len(KINDS)] for i in range(sensors)]
    t0 = time.time() - 3600
    bodies = []
    for b in range(count):
        pick = rng.integers(0, sensors, per_request)
        items = [{"sensor_id": f"bench-{int(s):06d}", "kind": kinds[s], "ts": round(t0 + b, 3),
                  "lon": float(lon[s]), "lat": float(lat[s]), **_VALUES[kinds[s]]}
                 for s in pick.tolist()]
        bodies.append(orjson.dumps(items))
    return bodies


def run_api_bench(settings: Settings, *, duration_s: float = 5.0, concurrency: int = 8,
                  per_request: int = 1000, sensors: int = 10_000, runs: int = 3,
                  as_json: bool = False) -> int:
    """Run the benchmark; print a table (or one JSON object); return the exit code."""
    if duration_s <= 0 or concurrency < 1 or per_request < 1 or sensors < 1 or runs < 1:
        raise ApiBenchError("duration, concurrency, per-request, sensors and runs must be above 0")
    _say(f"building {_BODIES} requests of {per_request:,} readings over {sensors:,} sensors…")
    bodies = build_bodies(sensors, per_request)
    log_dir = Path(tempfile.mkdtemp(prefix="cityagent-bench-api-"))
    keep_logs = True
    try:
        with broker_for_bench(settings.kafka, log_dir, _say) as bootstrap, _api(settings, bootstrap, log_dir) as api:
            url, key = api
            results = asyncio.run(_measure(url, key, bodies, duration_s, concurrency, runs))
        keep_logs = False
    except OSError as exc:
        raise BrokerError(f"the API benchmark failed: {describe_exception(exc)}") from exc
    finally:
        if keep_logs:
            _say(f"logs kept in {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    summary: dict[str, Any] = {
        "api_readings_per_s": round(statistics.median(r.readings_per_s for r in results), 1),
        "api_p50_ms": round(statistics.median(r.p50_ms for r in results), 2),
        "api_p99_ms": round(statistics.median(r.p99_ms for r in results), 2),
        "per_request": per_request,
        "concurrency": concurrency,
        "duration_s": duration_s,
        "sensors": sensors,
        "partitions": PARTITIONS,
        "runs": [r.public() for r in results],
    }
    if as_json:
        print(orjson.dumps(summary).decode())
    else:
        _print_table(summary)
    return 0


async def _measure(url: str, key: str, bodies: list[bytes], duration_s: float,
                   concurrency: int, runs: int) -> list[RunResult]:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=30.0) as client:
        # Warm-up: every body once, so the API has seen every sensor id.
        for body in bodies:
            answer = await client.post("/v1/readings", content=body)
            if answer.status_code != 202:
                raise ApiBenchError(f"the API refused the warm-up request: HTTP "
                                    f"{answer.status_code}: {answer.text[:300]}")
        results = []
        for run in range(1, runs + 1):
            results.append(await _one_run(client, bodies, duration_s, concurrency, run))
            _say(f"run {run}/{runs}: {results[-1].readings_per_s:,.0f} readings/s, "
                 f"p50 {results[-1].p50_ms:.1f} ms, p99 {results[-1].p99_ms:.1f} ms")
    return results


async def _one_run(client: httpx.AsyncClient, bodies: list[bytes], duration_s: float,
                   concurrency: int, run: int) -> RunResult:
    latencies: list[float] = []
    counts = {"readings": 0, "errors": 0}
    failures: dict[str, str] = {}
    started = time.perf_counter()
    deadline = started + duration_s

    async def client_loop(worker: int) -> None:
        i = worker
        while time.perf_counter() < deadline:
            body = bodies[i % len(bodies)]
            i += concurrency
            sent = time.perf_counter()
            try:
                answer = await client.post("/v1/readings", content=body)
            except httpx.HTTPError as exc:  # counted and named, not a traceback
                counts["errors"] += 1
                failures.setdefault("first", describe_exception(exc))
                continue
            latencies.append(time.perf_counter() - sent)
            if answer.status_code == 202:
                counts["readings"] += orjson.loads(answer.content)["accepted"]
            else:
                counts["errors"] += 1
                failures.setdefault("first", f"HTTP {answer.status_code}: {answer.text[:200]}")

    await asyncio.gather(*(client_loop(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    if counts["errors"] and not counts["readings"]:
        raise ApiBenchError(f"every request of run {run} failed; the first: {failures['first']}")
    if counts["errors"]:
        _say(f"run {run}: {counts['errors']:,} request{'s' if counts['errors'] != 1 else ''} failed; "
             f"the first: {failures['first']}")
    ms = np.array(latencies) * 1000
    return RunResult(run, counts["readings"] / elapsed, float(np.percentile(ms, 50)),
                     float(np.percentile(ms, 99)), len(latencies), counts["readings"],
                     counts["errors"])



@contextlib.contextmanager
def _api(settings: Settings, bootstrap: str, log_dir: Path) -> Iterator[tuple[str, str]]:
    """The API in a child process on a free port; stopped by its own PID, always."""
    tag = uuid.uuid4().hex[:10]
    bench = Settings(kafka=bootstrap, topic_prefix=f"bench-api-{tag}", app_id=f"bench-api-{tag}",
                     partitions=PARTITIONS, replication=settings.replication)
    ensure_topics(bootstrap, pipeline_topics(bench))
    port, key = free_port(), secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYAGENT_")}
    env.update(CITYAGENT_KAFKA=bootstrap, CITYAGENT_TOPIC_PREFIX=bench.topic_prefix,
               CITYAGENT_API_KEYS=f"integrator:{key}", CITYAGENT_API_RATE="1e9",
               CITYAGENT_API_BURST="1000000000", PYTHONUNBUFFERED="1")
    log_path = log_dir / "api.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [*api_argv("127.0.0.1", port), "--no-access-log"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc, log_path)
        _say(f"API up at {url} (pid {proc.pid}), topic {bench.readings_topic}")
        yield url, key
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _wait_ready(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    tail = "\n".join(log_path.read_text("utf-8", "replace").splitlines()[-20:])
    raise ApiBenchError(f"the API did not come up at {url}; its log ends:\n{tail}")



def _say(text: str) -> None:
    print(f"cityagent bench --api: {text}", file=sys.stderr, flush=True)


def _print_table(summary: dict[str, Any]) -> None:
    print(f"cityagent bench --api: {summary['concurrency']} clients posting "
          f"{summary['per_request']:,} readings per request for {summary['duration_s']:g} s, "
          f"{summary['sensors']:,} sensors, {summary['partitions']} partitions")
    print(f"{'run':>6} {'readings/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'errors':>7}")
    for r in summary["runs"]:
        print(f"{r['run']:>6} {r['readings_per_s']:>12,.0f} {r['p50_ms']:>8.1f} "
              f"{r['p99_ms']:>8.1f} {r['requests']:>9,} {r['errors']:>7}")
    print(f"{'median':>6} {summary['api_readings_per_s']:>12,.0f} {summary['api_p50_ms']:>8.1f} "
          f"{summary['api_p99_ms']:>8.1f}")
