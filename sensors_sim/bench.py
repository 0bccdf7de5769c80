"""``cityagent sim --bench``: the simulator's own rate into Kafka, next to a raw producer.

Uses the broker named by ``CITYAGENT_KAFKA`` or ``--bootstrap``, or else starts the embedded
broker on a free port (stopped at the end). In the same run it measures

* the simulator: a fleet of ``--sensors`` (default here 100,000), ticking as fast as it can,
  through :class:`~sensors_sim.producer.KafkaSink` (generate, bucket, encode, send, ack);
* a raw kafka-python producer sending pre-built messages of the same size and key spread,
  so ``ratio`` says how much of the client's ceiling the simulator reaches.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import uuid

import numpy as np

from cityagent.batch import NUM_BUCKETS, bucket_key, encode_batch
from cityagent.errors import CityAgentError
from cityagent.regions import default_regions
from cityagent.settings import Settings
from sensors_sim.fleet import make_fleet
from sensors_sim.generators import FleetSignals
from sensors_sim.producer import KafkaSink, _connect

__all__ = ("run_bench",)

_SECONDS = 8.0
_T0 = 1_767_225_600_000


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_bench(args) -> int:
    sensors = args.sensors
    compression = None if args.compression == "none" else args.compression
    seconds = args.duration or _SECONDS
    broker = None
    settings = Settings.from_env()
    bootstrap = args.bootstrap or settings.kafka
    try:
        if not bootstrap:
            from control.broker import EmbeddedBroker

            broker = EmbeddedBroker(_free_port())
            bootstrap = broker.start(timeout_s=30.0)
        from control.topics import ensure_topics, pipeline_topics

        bench = Settings(kafka=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:8]}",
                         partitions=settings.partitions)
        # An external broker that does not answer is given up after --connect-timeout, as
        # the Kafka sink is (it was always 30 s here, saying nothing meanwhile).
        connect_s = args.connect_timeout
        ensure_topics(bootstrap, pipeline_topics(bench), timeout_s=connect_s)
        sim = _simulator(bootstrap, bench.readings_topic, sensors, args.seed, seconds, compression,
                         connect_s)
        raw = _raw(bootstrap, bench.readings_topic, sim["rows_per_message"], seconds, compression,
                   connect_s)
    except CityAgentError as exc:
        print(f"sensors_sim: bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if broker is not None:
            broker.stop()
    result = {
        "sensors": sensors,
        "seconds": seconds,
        "broker": "embedded" if broker is not None else bootstrap,
        "compression": args.compression,
        "readings_per_s": round(sim["readings_per_s"]),
        "messages_per_s": round(sim["messages_per_s"]),
        "rows_per_message": round(sim["rows_per_message"], 1),
        "raw_producer_per_s": round(raw["readings_per_s"]),
        "raw_messages_per_s": round(raw["messages_per_s"]),
        "ratio": round(sim["readings_per_s"] / max(raw["readings_per_s"], 1e-9), 3),
        "errors": sim["errors"] + raw["errors"],
        "fleet_build_s": round(sim["fleet_s"], 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"simulator: {result['readings_per_s']:,} readings/s "
            f"({result['messages_per_s']:,} messages/s of {result['rows_per_message']} rows) "
            f"from {sensors:,} sensors (fleet built in {result['fleet_build_s']:.2f} s)\n"
            f"raw kafka-python producer, pre-built messages: {result['raw_producer_per_s']:,} "
            f"readings/s ({result['raw_messages_per_s']:,} messages/s)\n"
            f"ratio {result['ratio']}, errors {result['errors']}"
        )
    return 0 if result["errors"] == 0 else 1


def _simulator(bootstrap: str, topic: str, sensors: int, seed: int, seconds: float,
               compression: str | None, connect_s: float) -> dict:
    began = time.perf_counter()
    fleet = make_fleet(sensors, seed, default_regions())
    fleet_s = time.perf_counter() - began
    signals = FleetSignals(fleet, seed, breach_every_s=0)
    sink = KafkaSink(bootstrap, topic, compression=compression, connect_timeout_s=connect_s)
    rows = np.arange(sensors)
    buckets = signals.bucket[rows]
    signals.tick(_T0)  # warm up
    started = time.perf_counter()
    k = 1
    while time.perf_counter() - started < seconds:
        sink.send(signals.tick(_T0 + k * 1000), buckets)
        k += 1
    sink.flush(60.0)
    elapsed = time.perf_counter() - started
    sink.close()
    return {"readings_per_s": sink.acked / elapsed, "messages_per_s": sink.messages / elapsed,
            "rows_per_message": sink.sent / max(sink.messages, 1), "errors": sink.errors,
            "fleet_s": fleet_s}


def _settle(future) -> None:
    """Wait for one send's outcome; a failure is counted from the futures at the end."""
    from kafka.errors import KafkaError

    try:
        future.get(timeout=60.0)
    except KafkaError:
        pass


def _raw(bootstrap: str, topic: str, rows_per_message: float, seconds: float,
         compression: str | None, connect_s: float) -> dict:
    """kafka-python alone: the same producer settings, messages built before the clock starts."""
    rows = max(1, round(rows_per_message))
    fleet = make_fleet(rows, 1, default_regions())
    batch = FleetSignals(fleet, 1, breach_every_s=0).tick(_T0)
    value = encode_batch(batch)
    keys = [bucket_key(b).encode() for b in range(NUM_BUCKETS)]
    producer = _connect(bootstrap, connect_s, compression)
    sent = acked = 0
    errors = []
    # At most two rounds of the 256 keys in flight: enough to keep the client's batches full,
    # and the phase ends about ``seconds`` after it starts. Unbounded, the loop queued 20x
    # what the client sends in that time (``--duration 2`` took ~45 s to flush).
    window = 2 * len(keys)
    started = time.perf_counter()
    futures = []
    while time.perf_counter() - started < seconds:
        for key in keys:
            futures.append(producer.send(topic, key=key, value=value))
        sent += len(keys)
        if len(futures) > window:
            _settle(futures[-window - 1])
    producer.flush(60.0)
    elapsed = time.perf_counter() - started
    for future in futures:
        if future.succeeded():
            acked += 1
        else:
            errors.append(future.exception)
    producer.close(5.0)
    return {"readings_per_s": acked * rows / elapsed, "messages_per_s": acked / elapsed,
            "errors": len(errors)}
