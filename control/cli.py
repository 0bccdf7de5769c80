"""The `cityagent` command: up, sim, eval, bench, replay, audit."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from cityagent.errors import CityAgentError
from cityagent.settings import Settings
from control.args import (
    port_number,
    positive_float,
    positive_int,
    positive_int_at_most,
    seconds_between,
)

if TYPE_CHECKING:
    from control.up import UpOptions

__all__ = ("main", "build_parser", "up_options")


#: The benchmark topic's partitions (``control.bench_workload.PARTITIONS``, not imported: the command
#: line is parsed before numpy and Kafka are): a worker beyond them would get none.
BENCH_PARTITIONS = 8
#: Clients of ``bench --api``: each holds a connection, and a few thousand ran the bench's
#: process out of file descriptors (100,000 was an httpx.ReadError traceback).
MAX_API_CLIENTS = 1000
#: ``eval --sensors`` at most: ~4 ms and ~4 KB per sensor for each scenario and seed (8,000
#: sensors: 34 s and 245 MB for quiet-day), so 100,000 take ~7 min for each, over an hour
#: for the default three seeds of every scenario; the figures per type need far fewer.
MAX_EVAL_SENSORS = 100_000
#: ``bench --readings`` at most: the workload is built in memory before any timing, ~350
#: bytes a reading at its peak (1M readings: 353 MB), so 20M take ~7 GB.
MAX_BENCH_READINGS = 20_000_000


_bench_workers = positive_int_at_most(
    BENCH_PARTITIONS, lambda _: "the benchmark topic's partitions: a worker beyond them would "
                                "get none", "workers")
_bench_clients = positive_int_at_most(MAX_API_CLIENTS, name="clients")
eval_fleet_size = positive_int_at_most(
    MAX_EVAL_SENSORS, lambda n: f"each takes ~4 ms for every scenario and seed: {n:,} would "
                                f"take ~{n * 4e-3 / 60:,.0f} min each", "sensors")
_bench_readings = positive_int_at_most(
    MAX_BENCH_READINGS, lambda n: f"built in memory before the timing, ~350 bytes each: {n:,} "
                                  f"would take ~{n * 350 / 1e9:,.0f} GB", "readings")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cityagent", description="CityAgent 城市智能体: the stream brain of a city command platform."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start broker, topics, workers and API (Ctrl-C stops all)")
    up.add_argument("--workers", type=positive_int, default=1,
                    help="Faust workers (default 1), at most the topics' partitions "
                         "(CITYAGENT_PARTITIONS, default 8)")
    up.add_argument("--port", type=port_number, default=None, help="API port (default 8000)")
    up.add_argument("--simulate", action="store_true", help="also run the sensor simulator")
    from sensors_sim.cli import MAX_SENSORS, add_run_arguments, fleet_size

    up.add_argument("--sensors", type=fleet_size, default=2000,
                    help=f"simulated sensors, at most {MAX_SENSORS:,} (default 2000)")
    up.add_argument("--rate", type=positive_float, default=1000.0, help="simulated readings/s (default 1000)")

    add_run_arguments(up.add_argument_group(
        "with --simulate", "options of the simulator it starts, checked and passed on as "
        "`cityagent sim` takes them (see `cityagent sim --help`; default: the simulator's)"),
        defaults=False)
    up.set_defaults(up_error=up.error)

    sub.add_parser("sim", help="run the sensor simulator (see `cityagent sim --help`)", add_help=False)

    ev = sub.add_parser("eval", help="score detection on the simulator's built-in scenarios")
    ev.add_argument("--sensors", type=eval_fleet_size, default=1000,
                    help=f"fleet size, at most {MAX_EVAL_SENSORS:,} (default 1000)")
    ev.add_argument("--seeds", type=positive_int, default=3, help="seeds per scenario (default 3)")
    # Under a millisecond it was a tick of 0 ms, a loop that never ended; 1e300 a traceback.
    # Below a second the day of warm-up alone is 86,400 x 1,000 sensors' readings and more.
    ev.add_argument("--tick", type=seconds_between(1, 3600), default=10.0,
                    help="seconds between a sensor's readings, 1 to 3,600 (default 10)")
    ev.add_argument("--scenario", action="append", default=[],
                    help="only this scenario: a built-in's name or a scenario file "
                         "(repeatable; default: every built-in)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")

    bench = sub.add_parser("bench", help="measure readings/s through the detection agent")
    bench.set_defaults(bench_error=bench.error)
    bench.add_argument("--readings", type=_bench_readings, default=2_000_000,
                       help="readings produced (default 2M, at most "
                            f"{MAX_BENCH_READINGS // 1_000_000}M; the first of each sensor is "
                            "not timed)")
    bench.add_argument("--sensors", type=fleet_size, default=250_000,
                       help=f"sensors, at most {MAX_SENSORS:,} and at most --readings (default "
                            "250,000: a bucket's message then holds about one round of them)")
    bench.add_argument("--runs", type=positive_int, default=3, help="runs; the median is reported (default 3)")
    bench.add_argument("--per-message", type=positive_int, default=500,
                       help="readings per Kafka message (default 500)")
    bench.add_argument("--workers", type=_bench_workers, default=1,
                       help="detection workers sharing the partitions (default 1, at most "
                            f"{BENCH_PARTITIONS}; the raw baseline is always one consumer)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--api", action="store_true",
                       help="measure the ingest API instead: readings/s one API process accepts "
                            "and p50/p99 request latency (uses --sensors, --runs, --json)")
    bench.add_argument("--duration", type=seconds_between(0.1, 3600), default=5.0,
                       help="--api: seconds of load per run, 0.1 to 3,600 (default 5)")
    bench.add_argument("--concurrency", type=_bench_clients, default=8,
                       help=f"--api: concurrent clients, at most {MAX_API_CLIENTS:,} (default 8)")
    bench.add_argument("--per-request", type=positive_int, default=1000,
                       help="--api: readings per request (default 1000)")
    bench.add_argument("--alerting", action="store_true",
                       help="measure the alerting agents instead: anomalies/s one worker turns "
                            "into incidents and alert events (uses --runs, --json)")
    bench.add_argument("--anomalies", type=positive_int, default=5000,
                       help="--alerting: anomaly starts per run (default 5000)")
    bench.add_argument("--situation", action="store_true",
                       help="measure the API's situation model instead, in process: readings/s "
                            "folded and the time of a situation answer (uses --sensors, --runs, "
                            "--json)")

    from control.replay import add_arguments as add_replay_arguments

    add_replay_arguments(sub.add_parser(
        "replay", help="run the detectors offline over a CSV/JSONL file: scores and anomalies",
        description="Run the anomaly detectors offline over a CSV or JSON-lines file "
                    "(docs/replay.md).",
    ))

    from control.audit import add_arguments as add_audit_arguments

    add_audit_arguments(sub.add_parser(
        "audit", help="export the alert events of a time range from the alerts topic (JSON lines)",
        description="Export the alert events of a time range (opened, escalated, acknowledged, "
                    "assigned, commented, resolved, restated ...) from the alerts topic as JSON "
                    "lines; reads only (docs/alerting.md#audit-trail).",
    ))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sim"]:
        from sensors_sim.cli import main as sim_main

        return sim_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "up":
        _check_up_arguments(args)
    if args.command == "bench" and not (args.api or args.alerting or args.situation) \
            and args.sensors > args.readings:
        # A table of the sensors is built before the readings: 10^9 of them ran out of memory.
        args.bench_error(f"argument --sensors: must be at most --readings ({args.readings:,}): "
                         f"every sensor needs readings; got {args.sensors:,}")
    try:
        return _run(args)
    except KeyboardInterrupt:
        # What it started is stopped by then (context managers, finally blocks); a traceback
        # here only hides that line.
        print(f"cityagent {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`cityagent replay big.csv | head`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool cut off this way


def _check_up_arguments(args: argparse.Namespace) -> None:
    """The simulator's options of `up` mean nothing without --simulate: an error, not ignored."""
    from sensors_sim.cli import RUN_OPTIONS

    given = [f"--{dest.replace('_', '-')}" for dest in RUN_OPTIONS if getattr(args, dest) is not None]
    if given and not args.simulate:
        args.up_error(f"{', '.join(given)} {'is an option' if len(given) == 1 else 'are options'} "
                      "of the simulator: give --simulate too")


def up_options(args: argparse.Namespace) -> UpOptions:
    """The parsed arguments of `cityagent up` as :class:`control.up.UpOptions`."""
    from control.up import UpOptions

    return UpOptions(
        workers=args.workers, port=args.port, simulate=args.simulate,
        sensors=args.sensors, rate=args.rate, seed=args.seed, scenario=args.scenario,
        warm_up_s=args.warm_up, accelerate=args.accelerate, start_ms=args.start,
        late_fraction=args.late_fraction,
    )


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "replay":
            from control.replay import run_replay

            return run_replay(args)
        settings = Settings.from_env()
        if args.command == "audit":
            from control.audit import run_audit

            return run_audit(settings, args)
        if args.command == "up":
            from control.up import run_up

            return run_up(settings, up_options(args))
        if args.command == "eval":
            from cityagent.detectors.config import DetectionConfig
            from cityagent.incidents import AlertingConfig
            from control.eval import EvalOptions, run_eval

            config = DetectionConfig.load(settings.detection_path, window_s=settings.window_s,
                                          grace_s=settings.grace_s,
                                          forget_after_s=settings.forget_after_s)
            return run_eval(EvalOptions(
                sensors=args.sensors, seeds=tuple(range(1, args.seeds + 1)), tick_s=args.tick,
                scenarios=tuple(args.scenario)), as_json=args.json, config=config,
                alerting=AlertingConfig.load(settings.alerting_path))
        if args.command == "bench" and args.api:
            from control.bench_api import run_api_bench

            return run_api_bench(settings, duration_s=args.duration, concurrency=args.concurrency,
                                 per_request=args.per_request, sensors=args.sensors,
                                 runs=args.runs, as_json=args.json)
        if args.command == "bench" and args.alerting:
            from control.bench_alerting import run_alerting_bench

            return run_alerting_bench(settings, anomalies=args.anomalies, runs=args.runs,
                                      as_json=args.json)
        if args.command == "bench" and args.situation:
            from control.bench_situation import run_situation_bench

            return run_situation_bench(sensors=args.sensors, runs=args.runs, as_json=args.json)
        if args.command == "bench":
            from control.bench import run_bench

            return run_bench(settings, readings=args.readings, sensors=args.sensors,
                             runs=args.runs, as_json=args.json, per_message=args.per_message,
                             workers=args.workers)
    except CityAgentError as exc:
        print(f"cityagent: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
