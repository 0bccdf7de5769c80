"""``python -m sensors_sim`` / ``cityagent sim``: stream simulated readings of a sensor fleet.

Every tick (``max(0.1, sensors / rate)`` seconds of wall time) every sensor reports one
reading. Event time starts at ``--start`` (default: now) and advances ``tick × --accelerate``
per tick. Anomalies come from the legacy breach schedule (``--breach-every``; announced on
stderr, so you know which alerts to expect) and from a ``--scenario``; ground-truth labels go
to ``--labels``; ``--warm-up`` runs normal readings before the scenario, and a scenario
fault that a pipeline new to the fleet cannot find yet (``sensors_sim.warmup``) is warned of.
Readings go to Kafka (default), the HTTP API or a file (``--sink``).
Progress goes to stderr every few seconds, and a summary at the end. Ctrl-C flushes and
exits 130; SIGTERM flushes and exits 0 (1 if readings went unacknowledged). ``--registry``
writes the fleet registry and exits; ``--bench`` measures the simulator's rate into a broker.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

from cityagent.detectors.config import DetectionConfig
from cityagent.errors import CityAgentError, describe_exception
from cityagent.readings import FUTURE_TOLERANCE_MS, format_ts, parse_ts
from cityagent.regions import default_regions
from cityagent.settings import Settings, bootstrap_servers
from control.args import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    positive_int_at_most,
)
from sensors_sim.fleet import make_fleet
from sensors_sim.generators import FleetSignals
from sensors_sim.scenario import ScenarioError, builtin_names, load_scenario, parse_duration_s
from sensors_sim.timing import EventClock, LateBuffer
from sensors_sim.warmup import early_faults

__all__ = ("main", "build_parser", "add_run_arguments", "RUN_OPTIONS", "fleet_signals",
           "check_run", "fleet_size", "MAX_SENSORS")

_MIN_TICK_S = 0.1
_DEFAULT_SENSORS = 1000
_DEFAULT_RATE = 2000.0
_PROGRESS_EVERY_S = 3.0
#: Seconds ``close`` may take after the flush: kafka-python waits again for what is unsent.
_CLOSE_TIMEOUT_S = 5.0
#: Progress warns once nothing was acknowledged for this long while readings wait.
_STALL_S = 10.0
#: A fleet this large takes seconds to lay out: said before, so the run is not silent.
_LARGE_FLEET = 250_000
#: The largest ``--sensors``. A sensor costs the simulator ~1.6 KB (its models' state and its
#: share of a tick's readings): 1,000,000 peaked at 1.6 GB resident (2026-11-24). There was no
#: bound, and a mistyped count (1e8) ran the machine out of memory laying out the fleet.
MAX_SENSORS = 1_000_000
_TOPIC = re.compile(r"^[A-Za-z0-9._-]+$")
#: 2100-01-01: no reading may be dated from here on (``cityagent.readings``), so a run whose
#: event time gets here stops. ``--accelerate 1e300`` ended in an OverflowError traceback,
#: and ``1e9`` wrote readings dated 2100 and after, which replay and the API refuse.
_END_OF_EVENT_TIME_MS = 4_102_444_800_000


#: ``--sensors``: 1 to :data:`MAX_SENSORS` (``cityagent up`` takes it too).
fleet_size = positive_int_at_most(
    MAX_SENSORS, lambda n: f"~1.6 KB of memory each: {MAX_SENSORS:,} take ~1.6 GB, {n:,} "
                           f"would take ~{n * 1.6e3 / 1e9:,.0f} GB", "sensors")


def _fraction(text: str) -> float:
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1; got {text}")
    return value


def _event_time(text: str) -> int:
    """``--start``: RFC 3339 or epoch seconds/ms, as a reading's ``ts``; epoch ms."""
    try:
        return parse_ts(text if not _is_number(text) else float(text))
    except CityAgentError as exc:
        reason = getattr(exc, "reason", str(exc)).replace("'ts' ", "")
        raise argparse.ArgumentTypeError(reason if "got" in reason else f"{reason}; got {text!r}") from None


def _warm_up(text: str) -> float:
    """``--warm-up``: event time as a scenario's durations are written (``90s``, ``20m``)."""
    try:
        return parse_duration_s(text, "--warm-up")
    except ScenarioError:
        raise argparse.ArgumentTypeError(f"expected a duration like 600, '20m' or '1h'; "
                                         f"got {text!r}") from None


def _api_url(text: str) -> str:
    """``--api``: an http(s) URL. Without a scheme (``127.0.0.1:8000``) every request
    failed, and was retried for --give-up seconds (30) before the run said why."""
    if not text.lower().startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected a URL like http://127.0.0.1:8000; got {text!r}")
    return text


def _breach_duration(text: str) -> float:
    """``--breach-duration``: positive, and at most 100 years, as a scenario's durations (event
    time lies between 2000 and 2100): 1e300 overflowed the breach's 64-bit end time, a
    traceback at the first breach."""
    value = positive_float(text)
    if value > 36_525 * 86_400:
        raise argparse.ArgumentTypeError(f"must be at most 3,155,760,000 seconds (100 years); "
                                         f"got {text}")
    return value


def _breach_every(text: str) -> float:
    """``--breach-every``: 0 (off), or at least the clock's millisecond: 0.0004 s rounded to a
    schedule of 0 ms, which turned the breaches off without a word."""
    value = non_negative_float(text)
    if 0 < value < 0.001:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or at least 0.001 seconds; got {text}")
    return value


def _flush_timeout(text: str) -> float:
    """``--flush-timeout``: positive, at most a day. kafka-python's flush took 1e300 as a
    deadline past the platform's time_t: an OverflowError, and the readings it was to wait
    for counted as never acknowledged."""
    value = positive_float(text)
    if value > 86_400:
        raise argparse.ArgumentTypeError(f"must be at most 86,400 seconds (a day); got {text}")
    return value


def _bootstrap(text: str) -> str:
    """--bootstrap as CITYAGENT_KAFKA is checked: '127.0.0.1:abc' was an error only at the
    first connection, exit code 1 ('invalid literal for int()')."""
    try:
        return bootstrap_servers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _topic(text: str) -> str:
    """``--topic``: a name Kafka takes. kafka-python checks it only at the first send, and a
    bad one ended the run in a ValueError traceback."""
    if not (0 < len(text) <= 249 and _TOPIC.match(text)) or text in (".", ".."):
        raise argparse.ArgumentTypeError(
            f"a Kafka topic name is 1-249 ASCII letters, digits, '.', '_' or '-'; got {text!r}")
    return text


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


#: The options of :func:`add_run_arguments`, by ``dest``: ``cityagent up --simulate`` takes
#: them too and passes them on to the simulator it starts.
RUN_OPTIONS: tuple[str, ...] = ("seed", "scenario", "warm_up", "accelerate", "start",
                                "late_fraction")


def add_run_arguments(parser, *, defaults: bool = True) -> None:
    """Add the options that choose the fleet's seed, the scenario and its warm-up, event time
    and late delivery (:data:`RUN_OPTIONS`) to ``parser`` (a parser or an argument group).

    ``cityagent sim`` and ``cityagent up --simulate`` share them, so both check a value the
    same way and say the same of a bad one. With ``defaults=False`` every one defaults to None:
    ``up`` passes on only what it was given, and the simulator applies its own defaults."""
    def default(value):
        return value if defaults else None

    parser.add_argument("--seed", type=non_negative_int, default=default(7),
                        help="random seed, 0 or more (default 7)")
    parser.add_argument("--scenario", help="anomalies to inject: a scenario JSON file or a "
                        f"built-in ({', '.join(builtin_names())})")
    parser.add_argument("--warm-up", type=_warm_up, default=default(0.0), metavar="DURATION",
                        help="with --scenario: event time of normal readings before it "
                             "starts, e.g. 20m (default 0); its times count from the end. A "
                             "pipeline new to the fleet learns each sensor first: with the "
                             "packaged settings it finds a stuck sensor from 10 min, a spike "
                             "from 20 min")
    parser.add_argument("--accelerate", type=positive_float, default=default(1.0),
                        help="event time runs this many times faster than wall time (default 1)")
    parser.add_argument("--start", type=_event_time, help="event time of the first tick, RFC 3339 or epoch "
                        "(default: now; with --accelerate and --duration into Kafka or the "
                        "API, so long ago that event time ends near now)")
    parser.add_argument("--late-fraction", type=_fraction, default=default(0.0),
                        help="fraction of readings delivered 1-5 ticks late, out of order "
                             "(default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cityagent sim",
        description="Stream simulated Shandong sensor readings into the CityAgent pipeline.",
    )
    parser.add_argument("--sensors", type=fleet_size, default=None,
                        help=f"number of sensors in the fleet, at most {MAX_SENSORS:,} (default "
                             "1000; 100,000 for --bench)")
    parser.add_argument("--rate", type=positive_float, default=None,
                        help="target readings per second (default 2000); every sensor reports "
                             "once per tick of max(0.1, sensors/rate) s")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=positive_float,
                      help="stop after this many seconds (default: run until interrupted)")
    stop.add_argument("--count", type=positive_int,
                      help="stop after sending this many readings")
    parser.add_argument("--breach-every", type=_breach_every, default=None,
                        help="seconds between breach injections; 0 disables them (default 10, "
                             "or 0 with --scenario)")
    parser.add_argument("--breaches", type=non_negative_int, default=3,
                        help="sensors put in breach at each injection (default 3)")
    parser.add_argument("--breach-duration", type=_breach_duration, default=30.0,
                        help="seconds a sensor stays in breach (default 30)")
    add_run_arguments(parser)
    parser.add_argument("--labels", type=Path,
                        help="write ground-truth labels (JSON lines) of what was injected here")
    parser.add_argument("--registry", type=Path,
                        help="write the fleet registry here (.json or .csv) and exit")
    parser.add_argument("--sink", choices=("kafka", "http", "file"), default="kafka",
                        help="where readings go (default kafka)")
    parser.add_argument("--out", type=Path, help="file sink: output path (.jsonl or .csv)")
    parser.add_argument("--api", type=_api_url, help="http sink: API base URL (default: from "
                        "CITYAGENT_API_HOST / CITYAGENT_API_PORT)")
    parser.add_argument("--api-key", help="http sink: integrator key, sent as Authorization: Bearer KEY")
    parser.add_argument("--give-up", type=positive_float, default=30.0,
                        help="http sink: seconds of failed retries before exiting (default 30)")
    parser.add_argument("--bootstrap", type=_bootstrap, help="Kafka bootstrap servers HOST:PORT[,...] "
                        "(default: from CITYAGENT_KAFKA / CITYAGENT_BROKER_PORT)")
    parser.add_argument("--topic", type=_topic, help="readings topic (default: from "
                        "CITYAGENT_TOPIC_PREFIX)")
    parser.add_argument("--compression", choices=("gzip", "none"), default="gzip",
                        help="kafka sink: message compression (default gzip: kafka-python's "
                             "pure-Python CRC is the bottleneck, and gzip shrinks what it "
                             "checksums)")
    parser.add_argument("--connect-timeout", type=positive_float, default=30.0,
                        help="seconds to keep trying to reach the brokers (default 30)")
    parser.add_argument("--flush-timeout", type=_flush_timeout, default=15.0,
                        help="kafka sink: seconds to wait at the end for what was sent to "
                             "be acknowledged (default 15); the rest counts as never "
                             "acknowledged. http sink: after Ctrl-C or SIGTERM, seconds "
                             "of retries at most")
    parser.add_argument("--bench", action="store_true",
                        help="measure the simulator's rate into Kafka next to a raw producer")
    parser.add_argument("--json", action="store_true", help="--bench: print the result as JSON")
    return parser


def _start_ms(args: argparse.Namespace, now_ms: int,
              tolerance_ms: int = FUTURE_TOLERANCE_MS) -> tuple[int, str | None]:
    """Event time of the first tick, and a note to print about it (or None).

    The pipeline refuses (API) or drops (worker, dashboard) readings dated more than
    ``CITYAGENT_FUTURE_TOLERANCE_S`` (5 min) past its clock, so an accelerated run into Kafka or the API that
    starts now would be ignored after its first seconds. With ``--duration`` and no
    ``--start`` it starts in the past instead, so that its event time ends near the clock."""
    if args.start is not None:
        return args.start, (None if args.sink == "file"
                            else _ahead_note(args, args.start, now_ms, tolerance_ms))
    if args.accelerate <= 1 or args.sink == "file":
        return now_ms, None
    if args.duration:
        span_ms = int(args.duration * (args.accelerate - 1) * 1000)
        start_ms = now_ms - span_ms
        return start_ms, (f"event time starts at {format_ts(start_ms)}, {span_ms / 3_600_000:.2f} h "
                          "ago, so that it reaches the clock as the run ends (--start to choose)")
    ahead_s = tolerance_ms / 1000 / (args.accelerate - 1)
    return now_ms, (f"event time x{args.accelerate:g} from now passes the clock by "
                    f"{tolerance_ms / 60_000:g} min after "
                    f"{ahead_s:,.0f} s; the API refuses, and the worker drops, readings dated "
                    "further ahead. Give --duration (event time then ends near the clock) or a "
                    "--start in the past")


def _ahead_note(args: argparse.Namespace, start_ms: int, now_ms: int,
                tolerance_ms: int) -> str | None:
    """A warning if event time from ``--start`` is, or within the run gets, more than the
    tolerance past the clock: the worker drops such readings after Kafka acknowledged them,
    and the run said nothing (a --start an hour ahead sent a whole run to be dropped)."""
    lead_ms = start_ms - now_ms
    if lead_ms > tolerance_ms:
        return (f"warning: --start {format_ts(start_ms)} is {lead_ms / 60_000:,.1f} min past "
                f"the clock; the API refuses, and the worker drops, readings dated more than "
                f"{tolerance_ms / 60_000:g} min ahead: give a --start in the past")
    if args.accelerate <= 1:
        return None
    after_s = (tolerance_ms - lead_ms) / 1000 / (args.accelerate - 1)
    if args.duration is not None and after_s >= args.duration:
        return None
    return (f"warning: event time x{args.accelerate:g} from --start {format_ts(start_ms)} "
            f"passes the clock by {tolerance_ms / 60_000:g} min after {int(after_s):,} s; the "
            "API refuses, and the worker drops, readings dated further ahead: give an earlier "
            f"--start, or a --duration of {int(after_s):,} s or less")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sink == "file" and args.out is None and not (args.registry or args.bench):
        parser.error("--sink file needs --out PATH")
    if (args.sink == "file" and args.out is not None and args.labels is not None
            and not (args.registry or args.bench) and _same_file(args.out, args.labels)):
        # Both were opened for writing, each from its own offset: the labels overwrote the
        # first readings, and the run said every reading was written.
        parser.error(f"--out and --labels name the same file ({args.out}): give two")
    if args.bench:
        from sensors_sim.bench import run_bench

        args.sensors = args.sensors or 100_000
        return run_bench(args)
    args.sensors = args.sensors or _DEFAULT_SENSORS
    rate_asked, args.rate = args.rate, args.rate or _DEFAULT_RATE
    tick_s = max(_MIN_TICK_S, args.sensors / args.rate)
    if rate_asked and args.sensors / tick_s < args.rate and not args.registry:
        _err(f"sensors_sim: note: {args.sensors:,} sensors reporting at most every "
             f"{_MIN_TICK_S:g} s make {args.sensors / tick_s:,.0f} readings/s, not "
             f"{args.rate:,.0f}; give --sensors {int(args.rate * _MIN_TICK_S):,} or more for "
             "that rate")
    if args.sensors >= _LARGE_FLEET:
        # Seconds of silence otherwise (a million: ~5 s and ~1.7 GB before the first line).
        _err(f"sensors_sim: laying out {args.sensors:,} sensors and their models…")
    try:
        signals = fleet_signals(args)
        scenario = signals.scenario
        if args.registry is not None:
            from sensors_sim.registry import (
                detection_config_from_env,
                settings_note,
                write_registry,
            )

            try:  # the workers' detection settings, checked as they check them
                config, where = detection_config_from_env()
            except CityAgentError as exc:
                _err(f"sensors_sim: {exc}")
                return 2
            # A sensor's readings are a tick of wall time apart, --accelerate times that of
            # event time, which the detectors judge by: the registry said the wall tick, so
            # at x10 a sensor one tick late was quiet 6x its interval.
            interval_s = tick_s * args.accelerate
            try:
                count = write_registry(args.registry, signals, interval_s, default_regions(),
                                       args.seed, config)
            except OSError as exc:  # said "[Errno 5] Input/output error", of no file or option
                _err(f"sensors_sim: cannot write the registry to {args.registry}: "
                     f"{exc.strerror or exc}")
                return 1
            _err(f"sensors_sim: wrote the registry of {count:,} sensors to {args.registry}: "
                 f"{settings_note(config, where, interval_s)}")
            return 0
        tolerance_ms = (FUTURE_TOLERANCE_MS if args.sink == "file"
                        else Settings.from_env().future_tolerance_ms)
        start_ms, note = _start_ms(args, time.time_ns() // 1_000_000, tolerance_ms)
        if note:
            _err(f"sensors_sim: {note}")
        if scenario is not None:
            for line in _early_fault_warnings(scenario, args.warm_up):
                _err(f"sensors_sim: warning: {line}")
        # The labels first: a --labels path that cannot be written must not find out only
        # after the file sink has emptied --out.
        labels = None if args.labels is None else _open_labels(args.labels)
        try:
            sink = _make_sink(args)
        except BaseException:
            if labels is not None:
                labels.close()
            raise
    except CityAgentError as exc:
        _err(f"sensors_sim: {exc}")
        return 1
    except OSError as exc:
        _err(f"sensors_sim: {exc}")
        return 1
    except KeyboardInterrupt:
        _err("sensors_sim: interrupted before starting")
        return 130

    stop = threading.Event()

    def stopping() -> None:
        stop.set()
        if hasattr(sink, "stopping"):  # the HTTP sink: retries end within --flush-timeout
            sink.stopping(args.flush_timeout)

    previous = _install_sigterm(stopping)
    target = args.sensors / tick_s
    _err(
        f"sensors_sim: {args.sensors} sensors -> {sink.target}, a tick every "
        f"{tick_s:.2f}s (target {target:,.0f} readings/s)"
        + (f", event time x{args.accelerate:g}" if args.accelerate != 1 else "")
        + (f", scenario {scenario.name}" if scenario is not None else "")
        + (f" after a {_span(args.warm_up)} warm-up" if scenario is not None and args.warm_up
           else "")
    )
    started = time.monotonic()
    code = 0
    run = _Run(args, signals, sink, stop, labels)
    try:
        run.loop(EventClock(start_ms, tick_s, args.accelerate), tick_s, target, started)
    except KeyboardInterrupt:
        _err("sensors_sim: interrupted; flushing (Ctrl-C again to stop now)")
        stopping()
        code = 130
    except CityAgentError as exc:  # an unreachable API, after retrying
        _err(f"sensors_sim: {exc}")
        code = 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        try:
            if code != 1:  # the late readings still held (not when the sink is unreachable)
                run.drain()
            sink.flush(args.flush_timeout)
            sink.close(timeout_s=min(_CLOSE_TIMEOUT_S, args.flush_timeout))
        except KeyboardInterrupt:
            code = 130
        except Exception as exc:  # noqa: BLE001 - report, never a traceback on exit
            _err(f"sensors_sim: closing the sink failed: {describe_exception(exc)}")
            code = code or 1
        try:
            run.close_labels()
        except (CityAgentError, OSError) as exc:
            _err(f"sensors_sim: {exc}")
            code = code or 1
    elapsed = time.monotonic() - started
    never_sent = run.never_sent()
    _err(
        f"sensors_sim: done in {elapsed:.1f}s: sent {sink.sent:,} readings, "
        f"{sink.acked:,} acknowledged ({sink.acked / max(elapsed, 1e-9):,.0f}/s, target "
        f"{target:,.0f}/s), {sink.errors} errors"
        + (f", {sink.sent - sink.acked:,} never acknowledged" if sink.acked < sink.sent else "")
        + f", {len(signals.injected)} breaches injected, "
        f"{len(signals.labels) - run.labels_cut} labels"
        # Readings held back count as sent late once sent: a run stopped at an
        # unreachable API said "461 delivered late" of readings it never sent.
        + (f", {run.late.delayed - never_sent:,} sent late"
           if run.late.delayed > never_sent else "")
        + (f", {never_sent:,} held back late and never sent" if never_sent else "")
        + (f"; last error: {sink.last_error}" if sink.last_error else "")
    )
    if code == 0 and (sink.errors or sink.acked < sink.sent):
        code = 1
    return code


def _open_labels(path: Path):
    try:
        return open(path, "wb")  # noqa: SIM115 - closed by _Run.close_labels
    except OSError as exc:  # said "[Errno 2] No such file or directory", of no option
        raise CityAgentError(f"cannot write labels to {path}: {exc.strerror or exc}") from None


def fleet_signals(args: argparse.Namespace) -> FleetSignals:
    """The fleet's signals as parsed ``args`` choose them: the fleet (``--sensors``, ``--seed``),
    the breach schedule and the scenario with its warm-up. Raises ScenarioError for a scenario
    that cannot be read or does not fit the fleet, before anything is sent."""
    if args.warm_up and args.scenario is None:
        # It delays only a scenario: without one it did nothing, and the breach schedule
        # injected from the first tick of what was meant as normal readings.
        raise ScenarioError("--warm-up delays a --scenario: give one, or leave --warm-up out")
    scenario = None if args.scenario is None else load_scenario(args.scenario)
    breach_every = args.breach_every
    if breach_every is None:
        breach_every = 0.0 if scenario is not None else 10.0
    fleet = make_fleet(args.sensors, args.seed, default_regions())
    signals = FleetSignals(
        fleet, args.seed, breach_every_s=breach_every, breaches=args.breaches,
        breach_duration_s=args.breach_duration, scenario=scenario,
        warm_up_s=args.warm_up,
    )
    signals.check_scenario()
    return signals


def check_run(argv: Sequence[str]) -> None:
    """Check a simulator command line as ``cityagent sim`` does before it sends anything: the
    scenario can be read and fits the fleet. Raises CityAgentError (ScenarioError) if not.
    ``cityagent up --simulate`` calls it before it starts anything, so that a bad scenario is
    one line and exit code 2 there, not a simulator that exits after the pipeline came up."""
    args = build_parser().parse_args(argv)
    args.sensors = args.sensors or _DEFAULT_SENSORS
    fleet_signals(args)


def _early_fault_warnings(scenario, warm_up_s: float) -> list[str]:
    """Lines about the scenario's faults that a pipeline new to the fleet cannot find yet
    (``sensors_sim.warmup``), judged by the detection settings the workers read."""
    try:
        settings = Settings.from_env()
        config = DetectionConfig.load(settings.detection_path, window_s=settings.window_s,
                                      grace_s=settings.grace_s)
    except CityAgentError:  # a bad setting is reported where the run needs it, if it does
        config = DetectionConfig.load()
    early = early_faults(scenario, config, warm_up_s)
    if not early:
        return []
    lines = []
    for fault in early:
        learnt = (", and learns a sensor stuck before then as one that is always flat"
                  if fault.anomaly == "stuck" else "")
        lines.append(
            f"{fault.anomaly} ({fault.source}) starts {_span(fault.start_s)} into the run, but "
            f"a pipeline new to this fleet (a fresh `cityagent up`, `cityagent replay`) lets "
            f"the {fault.detector} detector judge a sensor only after {fault.windows} windows "
            f"of its readings ({_span(fault.needed_s)} of event time){learnt}: not found")
    need_min = int(np.ceil(max(f.warm_up_s for f in early) / 60.0))
    lines.append(f"give --warm-up {need_min}m or more (normal readings first; the scenario's "
                 "times then count from its end) unless the pipeline has seen this fleet "
                 "that long already")
    return lines


def _span(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _make_sink(args):
    if args.sink == "file":
        from sensors_sim.sinks import FileSink

        return FileSink(args.out)
    settings = Settings.from_env()
    if args.sink == "http":
        from sensors_sim.sinks import HttpSink

        api = args.api or f"http://{settings.api_host}:{settings.api_port}"
        said = [float("-inf")]

        def retrying(line: str) -> None:  # at most once per progress period
            if time.monotonic() - said[0] >= _PROGRESS_EVERY_S:
                said[0] = time.monotonic()
                _err(f"sensors_sim: warning: {line}")

        return HttpSink(api, give_up_s=args.give_up, api_key=args.api_key, on_retry=retrying)
    from sensors_sim.producer import KafkaSink

    bootstrap = args.bootstrap or settings.bootstrap
    topic = args.topic or settings.readings_topic
    return KafkaSink(bootstrap, topic, connect_timeout_s=args.connect_timeout,
                     compression=None if args.compression == "none" else args.compression)


class _Run:
    def __init__(self, args, signals: FleetSignals, sink, stop: threading.Event, labels) -> None:
        self.args, self.signals, self.sink, self.stop, self.labels_file = (
            args, signals, sink, stop, labels)
        self.late = LateBuffer(args.late_fraction, args.seed)
        self.labels_written = 0
        self.labels_cut = 0  # labels of sensors --count cut from the last tick: not written
        self.labels_failed = False
        self.draining = 0  # late readings of the final drain not yet sent
        self.announced = 0
        self.announced_labels = 0

    def send(self, items) -> None:
        for batch, rows in items:
            self.sink.send(batch, self.signals.bucket[rows])

    def drain(self) -> None:
        items = self.late.drain()
        self.draining = sum(len(batch) for batch, _ in items)
        for batch, rows in items:
            before = self.sink.sent
            try:
                self.sink.send(batch, self.signals.bucket[rows])
            except BaseException:
                self.draining -= self.sink.sent - before  # what it took counts as sent
                raise
            self.draining -= len(batch)

    def never_sent(self) -> int:
        """Late readings held back and never given to the sink: the run stopped at a sink
        that failed (not drained then), or the drain itself failed."""
        return self.late.held + self.draining

    def write_labels(self, kept: set[str] | None = None) -> None:
        """Write the labels of the injections started since; a file that cannot take them
        (a full disk) stops the run, as labels are what a run is scored by. Raises
        CityAgentError naming the file, once: a traceback before. ``kept``: the sensors the
        last tick sent, when ``--count`` cut it short; a sensor cut from it got no reading of
        an injection starting there, so its label would score a miss of nothing."""
        new = self.signals.labels[self.labels_written:]
        if kept is not None:
            cut = [lab for lab in new if lab.sensor_id not in kept]
            self.labels_cut += len(cut)
            new = [lab for lab in new if lab.sensor_id in kept]
        if self.labels_file is not None and new and not self.labels_failed:
            try:
                self.labels_file.write(
                    b"".join(orjson.dumps(lab.to_dict()) + b"\n" for lab in new))
                self.labels_file.flush()
            except OSError as exc:
                self.labels_failed = True
                raise CityAgentError(
                    f"cannot write labels to {self.labels_file.name}: {exc}") from None
        self.labels_written = len(self.signals.labels)

    def close_labels(self) -> None:
        """Write the last labels and close the file (quietly if writing failed before)."""
        if self.labels_file is None:
            return
        try:
            self.write_labels()
        finally:
            try:
                self.labels_file.close()
            except OSError:
                if not self.labels_failed:
                    raise

    def announce(self, kept: set[str] | None) -> None:
        signals = self.signals
        new = signals.injected[self.announced:]
        self.announced = len(signals.injected)
        for breach in new:
            if kept is None or breach.sensor_id in kept:
                _err(f"sensors_sim: breach injected: {breach.sensor_id} ({breach.kind}) from "
                     f"{format_ts(breach.start_ms)} to {format_ts(breach.end_ms)}")
        groups: dict[tuple[str, str, int, int], int] = {}
        for lab in signals.labels[self.announced_labels:]:
            if lab.source != "breach-schedule" and (kept is None or lab.sensor_id in kept):
                key = (lab.source, lab.anomaly, lab.start_ms, lab.end_ms)
                groups[key] = groups.get(key, 0) + 1
        self.announced_labels = len(signals.labels)
        for (source, anomaly, start, end), count in groups.items():
            _err(f"sensors_sim: {anomaly} injected ({source}) on {count} sensors from "
                 f"{format_ts(start)} to {format_ts(end)}")

    def loop(self, clock: EventClock, tick_s: float, target: float, started: float) -> None:
        args, signals, sink, stop = self.args, self.signals, self.sink, self.stop
        deadline = None if args.duration is None else started + args.duration
        remaining = args.count
        next_tick = started
        progress = _Progress(sink, target, started)
        k = 0
        n = len(signals)
        while not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            ts_ms = clock.at(k)
            if ts_ms >= _END_OF_EVENT_TIME_MS:
                _err(f"sensors_sim: event time reached {format_ts(_END_OF_EVENT_TIME_MS)}, from "
                     f"which no reading may be dated: stopping after {k:,} ticks (--start, "
                     f"--accelerate {args.accelerate:g})")
                break
            batch = signals.tick(ts_ms)
            k += 1
            rows = signals.last_rows if signals.last_rows is not None else np.arange(n)
            kept = None
            if remaining is not None and remaining < len(batch):
                batch, rows = batch.take(np.arange(remaining)), rows[:remaining]
                kept = set(batch.sensor_id.tolist())
            self.send(self.late.push(batch, rows))
            sink.poll()
            self.announce(kept)
            self.write_labels(kept)
            if remaining is not None:
                remaining -= len(batch)
                if remaining <= 0:
                    break
            now = time.monotonic()
            progress.report(now)
            next_tick += tick_s
            if next_tick < now:  # behind schedule: go on at once, do not burst to catch up
                next_tick = now
            else:
                until = next_tick if deadline is None else min(next_tick, max(deadline, now))
                # Ticks minutes apart (a large fleet at a low --rate) still show progress and
                # a stalled sink between them: the wait wakes for each progress line.
                while not stop.is_set() and now < until:
                    stop.wait(min(until, progress.next_at) - now)
                    now = time.monotonic()
                    progress.report(now)


class _Progress:
    """The progress line every few seconds, with what it warns of: the errors it counts, said
    once each, and a sink that stopped acknowledging."""

    def __init__(self, sink, target: float, started: float) -> None:
        self.sink, self.target, self.started = sink, target, started
        self.next_at = started + _PROGRESS_EVERY_S
        self.acked, self.acked_at, self.stall_said = sink.acked, started, False
        self.errors_seen, self.error_said = sink.errors, None

    def report(self, now: float) -> None:
        """Print the line if it is due."""
        if now < self.next_at:
            return
        sink = self.sink
        elapsed = now - self.started
        latency = getattr(sink, "ack_latency_ms", None)
        _err(
            f"sensors_sim: {elapsed:6.1f}s sent {sink.sent:,} acked {sink.acked:,} "
            f"({sink.acked / elapsed:,.0f}/s of {self.target:,.0f}/s) errors {sink.errors}"
            + (f" ack {latency:.0f} ms" if latency is not None else "")
        )
        self.next_at = now + _PROGRESS_EVERY_S
        # Progress counted errors but never said which: a wrong --api-key ran a whole
        # --duration at "errors N", the 401 and its reason only in the summary.
        if sink.errors > self.errors_seen and sink.last_error != self.error_said:
            _err(f"sensors_sim: warning: {sink.last_error}")
            self.error_said = sink.last_error
        self.errors_seen = sink.errors
        # A broker that died mid-run fails no send for a while (the producer buffers and
        # retries): progress said "errors 0" with "acked" frozen. Say so.
        if sink.acked != self.acked or sink.sent == sink.acked:
            self.acked, self.acked_at, self.stall_said = sink.acked, now, False
        elif now - self.acked_at >= _STALL_S and not self.stall_said:
            _err(f"sensors_sim: warning: nothing acknowledged for {now - self.acked_at:.0f} s, "
                 f"{sink.sent - sink.acked:,} readings waiting: is {sink.target} up?")
            self.stall_said = True


def _install_sigterm(stopping):
    """SIGTERM ends the run cleanly (calls ``stopping``); returns the previous handler (None
    off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda _signo, _frame: stopping())


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
