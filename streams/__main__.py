"""Run one Faust worker: ``python -m streams`` (what `cityagent up` starts N times).

Faust's web server is turned off (``--without-web``): it would bind 0.0.0.0:6066 otherwise,
and several workers on one machine would fight over the port.
"""

from __future__ import annotations

import sys

from cityagent.errors import BrokerError, ConfigError
from cityagent.settings import Settings
from control.broker import wait_for_kafka
from control.topics import check_topics, pipeline_topics
from streams.log_repeats import quiet_kafka_client_repeats
from streams.worker import build_worker

#: How long a starting worker waits for the brokers to answer before it gives up (exit code 1).
KAFKA_WAIT_S = 30.0


def say(line: str) -> None:
    """A line for the operator on standard error (`cityagent up` shows it as ``worker-N |``)."""
    print(f"cityagent worker: {line}", file=sys.stderr, flush=True)


def main() -> None:
    try:
        settings = Settings.from_env()
        # Printed, not logged: Faust sets up logging only as the app starts, below.
        worker = build_worker(settings, say)
    except ConfigError as exc:
        say(str(exc))
        sys.exit(2)
    try:
        # Faust would wait as long for the zones, maintenance and routing topics, then crash
        # with a page of traceback ending in KafkaConnectionError.
        wait_for_kafka(settings.bootstrap, timeout_s=KAFKA_WAIT_S)
        # Before Faust uses one: a broker that creates topics on first use would make them
        # with its own partition count.
        check_topics(settings.bootstrap, pipeline_topics(settings))
    except BrokerError as exc:
        say(str(exc))
        sys.exit(1)
    quiet_kafka_client_repeats()  # a broker that does not answer: not ~200 lines a second
    level = {"warning": "warn", "critical": "error"}.get(settings.log_level, settings.log_level)
    # Faust's command line sets the datadir again (default: in the working directory).
    sys.argv = [sys.argv[0], "--datadir", str(worker.app.conf.datadir),
                "worker", "--without-web", "-l", level]
    worker.app.main()


if __name__ == "__main__":
    main()
