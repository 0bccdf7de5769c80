"""``python -m sensors_sim``: stream simulated readings of a sensor fleet into Kafka.

Every tick (``max(0.1, sensors / rate)`` seconds of wall time) every sensor reports one
reading stamped with the wall-clock time; breaches are injected on schedule and each one is
announced on stderr, so you know which alerts to expect. Progress goes to stderr every few
seconds, and a summary at the end. Ctrl-C flushes and exits 130; SIGTERM flushes and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence

import numpy as np

from cityagent.errors import CityAgentError
from cityagent.readings import format_ts
from cityagent.regions import default_regions
from cityagent.settings import Settings
from control.args import non_negative_float, non_negative_int, positive_float, positive_int
from sensors_sim.fleet import make_fleet
from sensors_sim.generators import FleetSignals
from sensors_sim.producer import KafkaSink

__all__ = ("main", "build_parser")

_MIN_TICK_S = 0.1
_PROGRESS_EVERY_S = 3.0
_FLUSH_TIMEOUT_S = 15.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sensors_sim",
        description="Stream simulated Shandong sensor readings into the CityAgent readings topic.",
    )
    parser.add_argument("--sensors", type=positive_int, default=1000,
                        help="number of sensors in the fleet (default 1000)")
    parser.add_argument("--rate", type=positive_float, default=2000.0,
                        help="target readings per second (default 2000); every sensor reports "
                             "once per tick of max(0.1, sensors/rate) s")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=positive_float,
                      help="stop after this many seconds (default: run until interrupted)")
    stop.add_argument("--count", type=positive_int,
                      help="stop after sending this many readings")
    parser.add_argument("--breach-every", type=non_negative_float, default=10.0,
                        help="seconds between breach injections; 0 disables them (default 10)")
    parser.add_argument("--breaches", type=non_negative_int, default=3,
                        help="sensors put in breach at each injection (default 3)")
    parser.add_argument("--breach-duration", type=positive_float, default=30.0,
                        help="seconds a sensor stays in breach (default 30)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers HOST:PORT[,...] "
                        "(default: from CITYAGENT_KAFKA / CITYAGENT_BROKER_PORT)")
    parser.add_argument("--topic", help="readings topic (default: from CITYAGENT_TOPIC_PREFIX)")
    parser.add_argument("--connect-timeout", type=positive_float, default=30.0,
                        help="seconds to keep trying to reach the brokers (default 30)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator; return the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.bootstrap is None or args.topic is None:
            settings = Settings.from_env()
            bootstrap = args.bootstrap or settings.bootstrap
            topic = args.topic or settings.readings_topic
        else:
            bootstrap, topic = args.bootstrap, args.topic
        fleet = make_fleet(args.sensors, args.seed, default_regions())
        signals = FleetSignals(
            fleet, args.seed, breach_every_s=args.breach_every, breaches=args.breaches,
            breach_duration_s=args.breach_duration,
        )
        sink = KafkaSink(bootstrap, topic, connect_timeout_s=args.connect_timeout)
    except CityAgentError as exc:
        _err(f"sensors_sim: {exc}")
        return 1
    except KeyboardInterrupt:
        _err("sensors_sim: interrupted before starting")
        return 130

    stop = threading.Event()
    previous = _install_sigterm(stop)
    tick_s = max(_MIN_TICK_S, args.sensors / args.rate)
    target = args.sensors / tick_s
    _err(
        f"sensors_sim: {args.sensors} sensors -> {topic} on {bootstrap}, a tick every "
        f"{tick_s:.2f}s (target {target:,.0f} readings/s)"
    )
    started = time.monotonic()
    code = 0
    try:
        _run(args, signals, sink, stop, tick_s, target, started)
    except KeyboardInterrupt:
        _err("sensors_sim: interrupted; flushing")
        code = 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        try:
            sink.flush(_FLUSH_TIMEOUT_S)
            sink.close(timeout_s=5.0)
        except KeyboardInterrupt:
            code = 130
        except Exception as exc:  # noqa: BLE001 - report, never a traceback on exit
            _err(f"sensors_sim: closing the producer failed: {type(exc).__name__}: {exc}")
    elapsed = time.monotonic() - started
    _err(
        f"sensors_sim: done in {elapsed:.1f}s: sent {sink.sent:,} readings, "
        f"{sink.acked:,} acknowledged ({sink.acked / max(elapsed, 1e-9):,.0f}/s, target "
        f"{target:,.0f}/s), {sink.errors} errors, {len(signals.injected)} breaches injected"
        + (f"; last error: {sink.last_error}" if sink.last_error else "")
    )
    if code == 0 and (sink.errors or sink.acked < sink.sent):
        code = 1
    return code


def _run(args, signals: FleetSignals, sink: KafkaSink, stop: threading.Event,
         tick_s: float, target: float, started: float) -> None:
    deadline = None if args.duration is None else started + args.duration
    remaining = args.count
    announced = 0
    next_tick = started
    next_progress = started + _PROGRESS_EVERY_S
    while not stop.is_set():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        batch = signals.tick(time.time_ns() // 1_000_000)
        new = signals.injected[announced:]
        announced = len(signals.injected)
        if remaining is not None and remaining < len(batch):
            batch = batch.take(np.arange(remaining))
            kept = set(batch.sensor_id.tolist())
            new = [b for b in new if b.sensor_id in kept]
        sink.send(batch)
        for breach in new:
            _err(
                f"sensors_sim: breach injected: {breach.sensor_id} ({breach.kind}) from "
                f"{format_ts(breach.start_ms)} to {format_ts(breach.end_ms)}"
            )
        if remaining is not None:
            remaining -= len(batch)
            if remaining <= 0:
                break
        now = time.monotonic()
        if now >= next_progress:
            elapsed = now - started
            _err(
                f"sensors_sim: {elapsed:6.1f}s sent {sink.sent:,} acked {sink.acked:,} "
                f"({sink.acked / elapsed:,.0f}/s of {target:,.0f}/s) errors {sink.errors}"
            )
            next_progress = now + _PROGRESS_EVERY_S
        next_tick += tick_s
        if next_tick < now:  # behind schedule: go on at once, do not burst to catch up
            next_tick = now
        else:
            wait = next_tick - now
            if deadline is not None:
                wait = min(wait, max(deadline - now, 0.0))
            stop.wait(wait)


def _install_sigterm(stop: threading.Event):
    """SIGTERM ends the run cleanly; returns the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda _signo, _frame: stop.set())


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
