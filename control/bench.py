"""`cityagent bench`: readings/s through broker → detection agent → anomaly topic.

Each run, on its own topics (uuid prefix, 8 partitions) and consumer group:

1. **Produce** every reading before any timing: ``readings`` readings in rounds of one
   reading per sensor, ts advancing 1 s per round, all values inside the thresholds, in
   chunks of ``per_message`` × 256 readings, each split by sensor bucket into messages of
   ~``per_message`` readings (at most twice that).
2. **Raw baseline**: an aiokafka consumer (no group, all partitions assigned, from the
   beginning) ``getmany``s every message, ``orjson.loads`` it and counts its readings: the
   best a Python consumer does on this topic, measured on the same data in the same run.
3. **Domain rate** (extra): ``decode_batch`` + ``Detector.process_batch`` over every
   message in this process, no Kafka.
4. **Consumer** (extra): the same ``decode_batch`` + ``process_batch`` on a plain aiokafka
   consumer (no Faust, no checkpoints, no acks), timed like the agent between the markers
   below: what decoding and detection cost on top of consuming, without the stream
   framework, so ``consumer_ratio`` is the ceiling of a one-process worker with this
   decoding and detection, and the gap to ``ratio`` is what Faust and its plumbing cost.
5. **Agent**: ``python -m streams`` is started on the topic (its configured checkpoint
   interval, every detector on, one-second windows without grace so that a window closes
   with the next round of its bucket) and timed by markers planted in the data. In every
   partition a *start marker* (a level breach) sits in the earliest water or pipe reading of
   its first message after the last one that brought a sensor it had not seen, and an *end
   marker* in the last round of the bucket whose final message ends the partition; these are
   the only breaches, so each raises exactly one ``start`` anomaly stamped with the worker's
   clock (``detected_at_ms``) when it processed the message that *closes* the marker's
   window (the bucket's first message with a reading of a later window), a message the
   workload knows. Agent time = max(end detections) − min(start detections); the readings
   timed are those of the messages after each partition's start closing message up to its
   end closing message. Start-up, every sensor's first reading (its state row created, once
   in a worker's life), the message after and the idle timer are outside the interval: the
   rate is the steady state's, and errs low, never high (a partition whose start closes
   later than the first one's has readings processed in the interval that are not counted).
   A workload too small for that (a bucket's only message holds all its readings) is timed
   from each partition's first message instead, and the output says so.

The median of ``runs`` runs is reported; ``ratio`` = agent readings/s ÷ raw readings/s.
``workers`` > 1 starts that many workers in one consumer group, splitting the partitions
(the raw baseline stays one consumer): a machine's capacity, not a per-process ratio.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from cityagent.batch import decode_batch
from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig
from cityagent.errors import BrokerError, CityAgentError, describe_exception
from cityagent.pipeline import Detector
from cityagent.regions import default_regions
from cityagent.settings import Settings
from control.bench_workload import (
    BENCH_WINDOW_S,
    PARTITIONS,
    PER_MESSAGE,
    BenchError,
    Workload,
    build_workload,
)
from control.broker import broker_for_bench
from control.procs import die_with_parent
from control.topics import ensure_topics, pipeline_topics

__all__ = ("run_bench", "build_workload", "bench_logs", "BenchError")

WORKER_TIMEOUT_S = 300.0
_LOG_TAIL_LINES = 30


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


# -- Kafka phases ----------------------------------------------------------------------------


async def _produce(bootstrap: str, topic: str, work: Workload) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=50,
        max_batch_size=1 << 20, max_request_size=4 << 20, client_id="cityagent-bench",
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v, _p in work.messages]
        results = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    for (_k, _v, p), meta in zip(work.messages, results, strict=True):
        if meta.partition != p:
            raise BenchError(f"a message landed on partition {meta.partition}, expected {p}")


async def _consumer_from_start(bootstrap: str, topic: str, partitions: int, client_id: str):
    """A started aiokafka consumer (no group) on every partition of ``topic``, at its start."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", client_id=client_id,
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


def _readings_in(doc: Any) -> int:
    return len(doc["sensor_id"])


async def _raw_consume(bootstrap: str, topic: str, partitions: int, messages: int,
                       timeout_s: float, items: Callable[[Any], int] = _readings_in,
                       ) -> tuple[int, float]:
    """Consume + orjson-decode every message from the beginning; (items, seconds), where
    ``items`` counts what a decoded message holds (readings of a batch, by default)."""

    consumer = await _consumer_from_start(bootstrap, topic, partitions, "cityagent-bench-raw")
    try:
        seen = readings = 0
        started = time.perf_counter()
        deadline = started + timeout_s
        while seen < messages:
            if time.perf_counter() > deadline:
                raise BenchError(
                    f"raw consume saw {seen} of {messages} messages within {timeout_s:g}s"
                )
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                for record in records:
                    readings += items(orjson.loads(record.value))
                seen += len(records)
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
    return readings, elapsed


class _DetectionLoop:
    """decode_batch + process_batch per message, one state per bucket: the domain's work,
    run in this process by the domain and consumer phases (kernels loaded before timing)."""

    def __init__(self, config: DetectionConfig, sample: bytes) -> None:
        self.detector = Detector(DetectionEngine(config), default_regions())
        self.detector.tag(decode_batch(sample))  # warm the cached district table
        self.detector.engine.warm_up()  # load (or compile) the kernels outside the timing
        self.states: dict[bytes, Any] = {}
        self.anomalies = 0

    def __call__(self, key: bytes, value: bytes) -> None:
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = self.detector.engine.new_state()
        outcome = self.detector.process_batch(decode_batch(value), state,
                                              time.time_ns() // 1_000_000)
        self.anomalies += len(outcome.anomalies)


def _domain_rate(work: Workload, config: DetectionConfig) -> tuple[float, int]:
    """decode_batch + process_batch over every message in this process: (readings/s, anomalies)."""
    detect = _DetectionLoop(config, work.messages[0][1])
    started = time.perf_counter()
    for key, value, _p in work.messages:
        detect(key, value)
    return work.readings / (time.perf_counter() - started), detect.anomalies


async def _consumer_rate(bootstrap: str, topic: str, work: Workload, config: DetectionConfig,
                         timeout_s: float) -> tuple[float, int]:
    """The domain's work on a plain aiokafka consumer (no Faust, no checkpoints, no acks),
    timed like the agent: from the first partition's start-closing message to the last
    partition's end-closing message, over ``work.timed_readings``. What the detection costs
    on top of consuming, without the stream framework: the ceiling of any worker design that
    keeps this decoding and detection in one process. Returns (readings/s, anomalies)."""
    detect = _DetectionLoop(config, work.messages[0][1])
    start_at = {m.partition: m.closed_by for m in work.start_markers}
    end_at = {m.partition: m.closed_by for m in work.end_markers}
    consumer = await _consumer_from_start(bootstrap, topic, PARTITIONS, "cityagent-bench-consumer")
    first = last = None
    ended: set[int] = set()
    try:
        deadline = time.perf_counter() + timeout_s
        while len(ended) < len(end_at):
            if time.perf_counter() > deadline:
                raise BenchError(f"the consumer phase did not reach every end marker within "
                                 f"{timeout_s:g}s ({len(ended)}/{len(end_at)})")
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, records in batches.items():
                for record in records:
                    detect(record.key, record.value)
                    # A fresh topic produced in order: a message's offset is its position.
                    if record.offset == start_at.get(tp.partition) and first is None:
                        first = time.perf_counter()
                    elif record.offset == end_at.get(tp.partition):
                        ended.add(tp.partition)
                        last = time.perf_counter()
    finally:
        await consumer.stop()
    if first is None or last is None or last <= first:
        raise BenchError("the consumer phase saw no start marker before its end markers")
    return work.timed_readings / (last - first), detect.anomalies


class _Worker:
    """One `python -m streams` child; stopped by its own PID, always."""

    def __init__(self, settings: Settings, log_path: Path):
        self.log_path = log_path
        env = dict(os.environ)
        env.update({
            "CITYAGENT_KAFKA": settings.bootstrap,
            "CITYAGENT_TOPIC_PREFIX": settings.topic_prefix,
            "CITYAGENT_APP_ID": settings.app_id,
            "CITYAGENT_PARTITIONS": str(settings.partitions),
            "CITYAGENT_REPLICATION": str(settings.replication),
            "CITYAGENT_SESSION_TIMEOUT_S": str(settings.session_timeout_s),
            "CITYAGENT_LOG_LEVEL": settings.log_level,
        })
        if settings.detection_path is not None:
            env["CITYAGENT_DETECTION"] = str(settings.detection_path)
        # One-second windows without grace: a marker's window closes with the next round of
        # its bucket, in the same message, so detection time is processing time.
        env["CITYAGENT_WINDOW_S"] = str(BENCH_WINDOW_S)
        env["CITYAGENT_GRACE_S"] = "0"
        # The worker's Faust data directory (under the temp directory) goes with the logs,
        # removed with them: every run used to leave one in /tmp/cityagent-faust-<uid>.
        env["TMPDIR"] = str(log_path.parent)
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams"], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent,
            )

    def exited(self) -> int | None:
        return self.proc.poll()

    def tail(self) -> str:
        try:
            lines = self.log_path.read_text("utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        body = "\n".join("    " + line for line in lines[-_LOG_TAIL_LINES:])
        return f"\n  last lines of the worker log {self.log_path}:\n{body}" if body else ""

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout=10)


async def _await_markers(bootstrap: str, topic: str, partitions: int, work: Workload,
                         workers: list[_Worker], timeout_s: float) -> tuple[int, int]:
    """Read anomalies from the beginning until every marker's start anomaly is seen.

    Returns (min detected_at_ms of start markers, max detected_at_ms of end markers).
    """

    wanted = {(m.sensor_id, m.ts_ms): "start" for m in work.start_markers}
    wanted.update({(m.sensor_id, m.ts_ms): "end" for m in work.end_markers})
    detected: dict[tuple[str, int], int] = {}
    consumer = await _consumer_from_start(bootstrap, topic, partitions, "cityagent-bench-anomalies")
    try:
        started = time.monotonic()
        next_note = started + 10.0
        while len(detected) < len(wanted):
            now = time.monotonic()
            for worker in workers:
                code = worker.exited()
                if code is not None:
                    raise BenchError(f"a worker exited with code {code} before the end ({len(detected)}"
                                     f"/{len(wanted)} markers seen){worker.tail()}")
            if now - started > timeout_s:
                raise BenchError(f"the workers did not detect every marker within {timeout_s:g}s "
                                 f"({len(detected)}/{len(wanted)} seen)"
                                 + "".join(worker.tail() for worker in workers))
            if now >= next_note:
                _say(f"  worker running… {len(detected)}/{len(wanted)} markers seen after "
                     f"{now - started:.0f}s")
                next_note = now + 10.0
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            for records in batches.values():
                for record in records:
                    doc = orjson.loads(record.value)
                    # The marker's window raised (or escalated) a level episode.
                    ident = (doc.get("sensor_id"), doc.get("window_start_ms"))
                    if doc.get("phase") in ("start", "escalate") and ident in wanted:
                        detected[ident] = int(doc["detected_at_ms"])
    finally:
        await consumer.stop()
    first = min(detected[k] for k, v in wanted.items() if v == "start")
    last = max(detected[k] for k, v in wanted.items() if v == "end")
    return first, last


# -- one run ---------------------------------------------------------------------------------


def _one_run(base: Settings, bootstrap: str, work: Workload, config: DetectionConfig,
             index: int, runs: int, log_dir: Path, workers: int = 1) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:12]
    settings = dataclasses.replace(
        base, kafka=bootstrap, topic_prefix=f"bench-{tag}", app_id=f"bench-{tag}",
        partitions=PARTITIONS,
    )
    ensure_topics(bootstrap, pipeline_topics(settings))
    _say(f"run {index}/{runs}: producing {len(work.messages)} messages "
         f"({work.readings} readings) to {settings.readings_topic}…")
    t = time.perf_counter()
    asyncio.run(_produce(bootstrap, settings.readings_topic, work))
    _say(f"  produced in {time.perf_counter() - t:.1f}s")

    _say("  raw consume (aiokafka getmany + orjson)…")
    raw_readings, raw_s = asyncio.run(_raw_consume(
        bootstrap, settings.readings_topic, PARTITIONS, len(work.messages), WORKER_TIMEOUT_S))
    if raw_readings != work.readings:
        raise BenchError(f"raw consume counted {raw_readings} readings; produced {work.readings}")
    raw_rate = raw_readings / raw_s

    _say("  domain (decode_batch + process_batch, no Kafka)…")
    domain_rate, domain_anomalies = _domain_rate(work, config)

    _say("  consumer (aiokafka getmany + decode_batch + process_batch, no Faust)…")
    consumer_rate, consumer_anomalies = asyncio.run(_consumer_rate(
        bootstrap, settings.readings_topic, work, config, WORKER_TIMEOUT_S))

    _say(f"  {'worker' if workers == 1 else f'{workers} workers'} running (python -m streams)…")
    started = [_Worker(settings, log_dir / f"worker-{index}-{w}.log") for w in range(1, workers + 1)]
    try:
        first_ms, last_ms = asyncio.run(_await_markers(
            bootstrap, settings.anomalies_topic, PARTITIONS, work, started, WORKER_TIMEOUT_S))
    finally:
        for worker in started:
            worker.stop()
    agent_s = max(last_ms - first_ms, 1) / 1000.0
    agent_rate = work.timed_readings / agent_s
    result = {
        "run": index,
        "readings_per_s": round(agent_rate, 1),
        "raw_consume_per_s": round(raw_rate, 1),
        "ratio": round(agent_rate / raw_rate, 4),
        "domain_per_s": round(domain_rate, 1),
        "consumer_per_s": round(consumer_rate, 1),
        "consumer_ratio": round(consumer_rate / raw_rate, 4),
        "agent_seconds": round(agent_s, 3),
        "raw_seconds": round(raw_s, 3),
        "domain_anomalies": domain_anomalies,
        "consumer_anomalies": consumer_anomalies,
        "topic_prefix": settings.topic_prefix,
    }
    _say(f"  agent {agent_rate:,.0f} readings/s, raw {raw_rate:,.0f}/s, "
         f"ratio {agent_rate / raw_rate:.2f}, consumer {consumer_rate:,.0f}/s "
         f"({consumer_rate / raw_rate:.2f}), domain {domain_rate:,.0f}/s")
    return result




def _print_table(summary: dict[str, Any]) -> None:
    print(f"cityagent bench: {summary['readings']:,} readings, {summary['sensors']:,} sensors, "
          f"{summary['partitions']} partitions, "
          f"{'' if summary['workers'] == 1 else str(summary['workers']) + ' workers, '}"
          f"{summary['messages']:,} messages "
          f"({summary['mean_readings_per_message']:.0f} readings/message"
          f"{'' if not summary['first_seen_timed_partitions'] else ', first readings timed'})")
    print(f"{'run':>6} {'agent readings/s':>17} {'raw consume/s':>14} {'ratio':>6} "
          f"{'consumer/s':>11} {'ratio':>6} {'domain/s':>12}")
    for r in [*summary["runs"], {**summary, "run": "median"}]:
        print(f"{r['run']:>6} {r['readings_per_s']:>17,.0f} {r['raw_consume_per_s']:>14,.0f} "
              f"{r['ratio']:>6.2f} {r['consumer_per_s']:>11,.0f} {r['consumer_ratio']:>6.2f} "
              f"{r['domain_per_s']:>12,.0f}")
    print("consumer: the same decoding and detection on a plain aiokafka consumer, no Faust "
          "(timed like the agent)")


@contextlib.contextmanager
def bench_logs(prefix: str, say: Callable[[str], None]) -> Iterator[Path]:
    """A log directory for a benchmark's broker and workers: removed when the benchmark
    succeeds, kept (and named) when it fails. A Kafka client or OS error becomes one
    ``BrokerError`` line instead of a traceback."""
    log_dir = Path(tempfile.mkdtemp(prefix=prefix))
    keep_logs = True
    try:
        yield log_dir
        keep_logs = False
    except CityAgentError:
        raise
    except Exception as exc:  # Kafka client errors, OS errors: one line, no traceback
        from kafka.errors import KafkaError as SyncKafkaError

        try:
            from aiokafka.errors import KafkaError as AsyncKafkaError
        except ImportError:  # pragma: no cover
            AsyncKafkaError = SyncKafkaError  # noqa: N806
        if isinstance(exc, SyncKafkaError | AsyncKafkaError | OSError):
            raise BrokerError(f"Kafka failed during the benchmark: {describe_exception(exc)}") from exc
        raise
    finally:
        if keep_logs:
            say(f"logs kept in {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


def run_bench(settings: Settings, *, readings: int = 2_000_000, sensors: int = 250_000,
              runs: int = 3, as_json: bool = False, per_message: int = PER_MESSAGE,
              workers: int = 1) -> int:
    """Run the benchmark; print the result table (or one JSON object); return the exit code."""
    if readings < 1 or sensors < 1 or runs < 1 or workers < 1:
        raise BenchError("readings, sensors, runs and workers must all be above 0")
    if readings < 2 * sensors:
        raise BenchError(f"--readings ({readings:,}) must be at least twice --sensors "
                         f"({sensors:,}): a sensor's first reading is not timed (it creates its "
                         "state), and the timed part needs at least one more round of them")
    with bench_logs("cityagent-bench-", _say) as log_dir:
        config = DetectionConfig.load(settings.detection_path, window_s=BENCH_WINDOW_S,
                                      grace_s=0.0)
        _say(f"building {readings:,} readings of {sensors:,} sensors…")
        t = time.perf_counter()
        work = build_workload(readings, sensors, per_message=per_message)
        _say(f"  {work.readings:,} readings (whole rounds of the sensors, plus the planted "
             f"markers) in {len(work.messages):,} messages, "
             f"{work.mean_readings_per_message:.0f} readings/message, built in "
             f"{time.perf_counter() - t:.1f}s")
        if work.first_seen_timed:
            _say(f"  note: in {work.first_seen_timed} of {PARTITIONS} partitions every message "
                 f"brings a new sensor, so their timing includes first readings (not the "
                 f"steady state); use more readings per sensor")
        results = []
        with broker_for_bench(settings.kafka, log_dir, _say) as bootstrap:
            for i in range(1, runs + 1):
                results.append(_one_run(settings, bootstrap, work, config, i, runs, log_dir,
                                        workers))

    def median(name: str) -> float:
        return float(statistics.median(r[name] for r in results))

    summary: dict[str, Any] = {
        "readings_per_s": median("readings_per_s"),
        "raw_consume_per_s": median("raw_consume_per_s"),
        "ratio": 0.0,
        "consumer_per_s": median("consumer_per_s"),
        "consumer_ratio": 0.0,
        "domain_per_s": median("domain_per_s"),
        "readings": work.readings,
        "sensors": work.sensors,
        "partitions": PARTITIONS,
        "workers": workers,
        "messages": len(work.messages),
        "mean_readings_per_message": round(work.mean_readings_per_message, 1),
        # 0: the steady state, every sensor's first reading outside the timing.
        "first_seen_timed_partitions": work.first_seen_timed,
        "runs": results,
    }
    # The ratio of the medians, so that ratio == readings_per_s / raw_consume_per_s.
    summary["ratio"] = round(summary["readings_per_s"] / summary["raw_consume_per_s"], 4)
    if not math.isfinite(summary["ratio"]):
        raise BenchError("the raw consume rate came out as zero")
    summary["consumer_ratio"] = round(summary["consumer_per_s"] / summary["raw_consume_per_s"], 4)
    if as_json:
        print(orjson.dumps(summary).decode())
    else:
        _print_table(summary)
    return 0

