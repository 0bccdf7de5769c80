"""Create the pipeline's topics on the configured Kafka and exit: ``python -m control.create_topics``.

For deployments where workers and the API start separately (docker-compose, Kubernetes), this
runs once before them, so every topic exists with its partition count before anyone uses it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cityagent.errors import CityAgentError
from cityagent.settings import Settings
from control.broker import wait_for_kafka
from control.topics import ensure_topics, pipeline_topics, short_retention


def build_parser() -> argparse.ArgumentParser:
    """No options: every setting comes from the ``CITYAGENT_*`` variables. ``--help`` says so,
    and an argument it does not know is an error, before anything is created."""
    return argparse.ArgumentParser(
        prog="python -m control.create_topics",
        description="Create the pipeline's topics on the Kafka named by CITYAGENT_KAFKA (with "
                    "CITYAGENT_PARTITIONS partitions, CITYAGENT_REPLICATION replicas and the "
                    "topic names of CITYAGENT_TOPIC_PREFIX) and exit; topics that exist are left "
                    "as they are (a warning when the alerts topic keeps less than "
                    "CITYAGENT_ALERTS_RETENTION_DAYS). Waits up to 120 s for the brokers. Exit "
                    "code 0 when every topic exists, 1 for a bad setting or a Kafka error, 2 "
                    "without CITYAGENT_KAFKA.")


def main(argv: Sequence[str] | None = None) -> int:
    build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if settings.embedded:
            print("create_topics: set CITYAGENT_KAFKA to the brokers to create topics on", file=sys.stderr)
            return 2
        wait_for_kafka(settings.bootstrap, timeout_s=120.0)
        specs = pipeline_topics(settings)
        ensure_topics(settings.bootstrap, specs)
    except CityAgentError as exc:
        print(f"create_topics: {exc}", file=sys.stderr)
        return 1
    print("topics ready: " + ", ".join(f"{s.name} ({s.partitions})" for s in specs))
    short = short_retention(settings.bootstrap, settings.alerts_topic, settings.alerts_retention_ms)
    if short:
        print(f"create_topics: warning: {short}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
