"""The topics CityAgent needs, and creating them explicitly before anything uses them.

Why explicit: Tansu (the embedded broker) auto-creates a topic used before it exists with 4
partitions, and Faust then refuses a table whose changelog has another partition count than
its source (``PartitionsMismatch``). So every topic is created here, with its partition count,
before any worker or producer starts; and an existing topic with the wrong count is an error
an operator must see, not something to paper over.

We use kafka-python's sync ``KafkaAdminClient``: against Tansu 0.6 its DescribeTopics does not
auto-create the topics it asks about, whereas aiokafka's admin ``describe_topics`` does (it
creates them with 4 partitions), which would defeat the whole point.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cityagent.errors import BrokerError, describe_exception
from cityagent.settings import RETENTION_H, Settings

__all__ = ("TopicSpec", "pipeline_topics", "ensure_topics", "check_topics", "changelog_topic",
           "TABLE_NAME", "short_retention")

#: Name of the Faust table holding detector state; its changelog topic is created here.
TABLE_NAME = "detector_state"
#: Name of the Faust table holding the incidents of each correlation scope.
INCIDENT_TABLE = "incidents"

#: Retention of plain (delete-policy) topics: 7 days. Set explicitly because Tansu's
#: DescribeConfigs returns only configs given at creation, and some clients read it.
_RETENTION_MS = str(RETENTION_H * 3600 * 1000)

#: Retention of the idempotency topic: an hour, six times the 10 minutes an API keeps a record
#: (``api/idempotency.py``); what a starting API reads of it.
IDEMPOTENCY_RETENTION_MS = 3600 * 1000

_UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PARTITION
_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class TopicSpec:
    """One topic as CityAgent wants it: name, partition count, replication, cleanup policy.

    ``config`` holds extra topic configs; it overrides the defaults :func:`ensure_topics`
    sets (``retention.ms``, and ``cleanup.policy=compact`` when ``compacted``).
    """

    name: str
    partitions: int
    replication: int = 1
    compacted: bool = False
    config: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a topic needs a name")
        if self.partitions < 1:
            raise ValueError(f"topic {self.name!r}: partitions must be >= 1; got {self.partitions}")
        if self.replication < 1:
            raise ValueError(
                f"topic {self.name!r}: replication must be >= 1; got {self.replication}"
            )

    def topic_config(self) -> dict[str, str]:
        """Configs sent at creation: explicit retention, compaction if asked, then ``config``.

        With three or more replicas a write must reach a majority of them
        (``min.insync.replicas``): the producers send with ``acks=all``, and with the broker
        default of 1 an acknowledged write could live on the leader alone and die with it.
        """
        cfg = {"retention.ms": "-1" if self.compacted else _RETENTION_MS}
        if self.compacted:
            cfg["cleanup.policy"] = "compact"
        if self.replication >= 3:
            cfg["min.insync.replicas"] = str(self.replication // 2 + 1)
        cfg.update({str(k): str(v) for k, v in self.config.items()})
        return cfg


def changelog_topic(settings: Settings) -> str:
    """Faust names a table's changelog ``{app_id}-{table_name}-changelog``."""
    return f"{settings.app_id}-{TABLE_NAME}-changelog"


def pipeline_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the pipeline uses, all with ``settings.partitions`` partitions.

    The changelog has the same count as the readings topic because Faust co-partitions a
    table with the stream that updates it. Plain topics keep 7 days but two: the idempotency
    records an hour, the alerts ``CITYAGENT_ALERTS_RETENTION_DAYS`` (180 days by default).
    """
    n, r = settings.partitions, settings.replication
    return [
        TopicSpec(settings.readings_topic, n, r),
        TopicSpec(settings.anomalies_topic, n, r),
        # The audit trail of every alert: months, not 7 days (the API reads only 7 of them).
        TopicSpec(settings.alerts_topic, n, r,
                  config={"retention.ms": str(settings.alerts_retention_ms)}),
        TopicSpec(settings.scopes_topic, n, r),
        TopicSpec(settings.commands_topic, n, r),
        TopicSpec(settings.zones_topic, 1, r, compacted=True),  # one partition: total order
        TopicSpec(settings.maintenance_topic, 1, r, compacted=True),
        TopicSpec(settings.routing_topic, 1, r, compacted=True),
        TopicSpec(settings.idempotency_topic, n, r,
                  config={"retention.ms": str(IDEMPOTENCY_RETENTION_MS)}),
        TopicSpec(changelog_topic(settings), n, r, compacted=True),
        TopicSpec(f"{settings.app_id}-{INCIDENT_TABLE}-changelog", n, r, compacted=True),
    ]


def ensure_topics(bootstrap: str, specs: Sequence[TopicSpec], timeout_s: float = 30.0) -> None:
    """Create missing topics with explicit partition counts; existing ones are checked: a topic with a different partition count raises BrokerError saying which topic, expected and got (Faust refuses mismatched changelogs).

    Safe to call repeatedly and concurrently (a TopicAlreadyExists race is resolved by checking
    the topic the other caller made). Returns once every topic is visible in metadata with its
    partitions; raises BrokerError if the brokers cannot be reached or refuse a creation.
    """
    if not specs:
        return
    by_name: dict[str, TopicSpec] = {}
    for spec in specs:
        if spec.name in by_name and by_name[spec.name] != spec:
            raise ValueError(f"topic {spec.name!r} is specified twice, differently")
        by_name[spec.name] = spec

    from kafka import KafkaAdminClient  # local import: kafka-python is slow to import
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    ms = int(max(min(timeout_s, 30.0), 1.0) * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="cityagent-topics",
            request_timeout_ms=ms,
            bootstrap_timeout_ms=ms,
        )
    except (KafkaError, OSError) as exc:
        raise BrokerError(
            f"cannot reach the Kafka brokers at {bootstrap} to create topics: "
            f"{describe_exception(exc)}"
        ) from exc
    try:
        existing = _partition_counts(admin, list(by_name))
        _check_counts(by_name, existing)
        missing = [by_name[name] for name in by_name if name not in existing]
        if missing:
            response = admin.create_topics(
                [
                    NewTopic(
                        s.name,
                        num_partitions=s.partitions,
                        replication_factor=s.replication,
                        topic_configs=s.topic_config(),
                    )
                    for s in missing
                ],
                timeout_ms=ms,
                raise_errors=False,
            )
            for result in _topic_results(response):
                code = result.get("error_code", 0)
                if code in (0, _TOPIC_ALREADY_EXISTS):  # lost a race: checked below
                    continue
                raise BrokerError(
                    f"the brokers at {bootstrap} refused to create topic "
                    f"{result.get('name')!r} (error {code}: {result.get('error_message')})"
                )
        # Wait until every topic shows up with its partitions (immediate on Tansu; on a real
        # cluster metadata propagates asynchronously), checking counts again after races.
        while True:
            existing = _partition_counts(admin, list(by_name))
            _check_counts(by_name, existing)
            absent = sorted(set(by_name) - set(existing))
            if not absent:
                return
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"topics {absent} did not appear on the brokers at {bootstrap} "
                    f"within {timeout_s:g}s"
                )
            time.sleep(0.1)
    except KafkaError as exc:
        raise BrokerError(
            f"topic administration on the brokers at {bootstrap} failed: "
            f"{describe_exception(exc)}"
        ) from exc
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def check_topics(bootstrap: str, specs: Sequence[TopicSpec], timeout_s: float = 30.0, *,
                 counts: bool = True) -> None:
    """Raise BrokerError when a topic is missing or (``counts``) has another partition count;
    create none.

    For a worker or an API started on its own (``python -m streams``, uvicorn), before it
    uses a topic: Tansu, and Apache Kafka with its default ``auto.create.topics.enable``,
    create a topic on first use with their own partition count (4 on Tansu, 1 on Kafka), so a
    worker started before ``python -m control.create_topics`` made every topic with the wrong
    count, the one-partition zones, maintenance and routing topics included, and the topic
    creation then failed on them. kafka-python's DescribeTopics creates nothing.
    """
    from kafka import KafkaAdminClient  # local import: kafka-python is slow to import
    from kafka.errors import KafkaError

    wanted = {spec.name: spec for spec in specs}
    ms = int(max(min(timeout_s, 30.0), 1.0) * 1000)
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="cityagent-topics",
                                 request_timeout_ms=ms, bootstrap_timeout_ms=ms)
        try:
            existing = _partition_counts(admin, list(wanted))
        finally:
            with contextlib.suppress(Exception):
                admin.close()
    except (KafkaError, OSError) as exc:
        raise BrokerError(f"cannot check the topics on the brokers at {bootstrap}: "
                          f"{describe_exception(exc)}") from exc
    if counts:
        _check_counts(wanted, existing)
    missing = [name for name in wanted if name not in existing]
    if missing:
        raise BrokerError(
            f"{len(missing)} of the {len(wanted)} topics are missing on the brokers at "
            f"{bootstrap} ({', '.join(missing)}): create them first with `python -m "
            "control.create_topics` (`cityagent up` creates them itself)")


def short_retention(bootstrap: str, topic: str, want_ms: int) -> str | None:
    """A warning when ``topic`` keeps less than ``want_ms`` on the brokers, else None.

    Topics are only ever created, never altered, so an alerts topic made before
    ``CITYAGENT_ALERTS_RETENTION_DAYS`` (or with a smaller value) keeps its shorter retention:
    the warning says so and how to raise it. None too when the brokers cannot say: Tansu's
    DescribeConfigs returns only the configs set at creation, and a failed lookup must not
    stop a start. aiokafka's admin reads the answer (kafka-python 3.0 returns Tansu's empty)
    and DescribeConfigs creates no topic.
    """
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    async def describe() -> dict[str, str | None]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            (response,) = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)])
        finally:
            await admin.close()
        (resource,) = response.resources
        return {entry[0]: entry[1] for entry in resource[4]}

    try:
        have = int(asyncio.run(asyncio.wait_for(describe(), 15))["retention.ms"] or "")
    except Exception:  # noqa: BLE001 (unknown is no warning, whatever the reason)
        return None
    if have < 0 or have >= want_ms:  # -1: forever
        return None
    return (f"topic {topic!r} keeps its events {have / 86_400_000:g} days (retention.ms={have}), "
            f"less than the {want_ms / 86_400_000:g} asked (CITYAGENT_ALERTS_RETENTION_DAYS); "
            "topics are never altered: raise it with kafka-configs.sh --bootstrap-server "
            f"{bootstrap.split(',')[0]} --alter --entity-type topics --entity-name {topic} "
            f"--add-config retention.ms={want_ms}")


def _partition_counts(admin: object, names: list[str]) -> dict[str, int]:
    """Partition count of each named topic that exists (and has all partitions assigned)."""
    counts: dict[str, int] = {}
    for topic in admin.describe_topics(names):  # type: ignore[attr-defined]
        name = topic.get("name", topic.get("topic"))
        code = topic.get("error_code", 0)
        if code == _UNKNOWN_TOPIC:
            continue
        if code != 0:
            # e.g. LEADER_NOT_AVAILABLE right after creation on a real cluster: not ready yet.
            continue
        partitions = topic.get("partitions") or []
        if partitions:
            counts[name] = len(partitions)
    return counts


def _check_counts(wanted: Mapping[str, TopicSpec], existing: Mapping[str, int]) -> None:
    for name, got in existing.items():
        spec = wanted.get(name)
        if spec is not None and got != spec.partitions:
            raise BrokerError(
                f"topic {name!r} exists with {got} partitions; expected {spec.partitions}. "
                "Faust refuses tables whose changelog is partitioned differently from their "
                "source: delete the topic, or set CITYAGENT_PARTITIONS to match"
            )


def _topic_results(response: object) -> list[dict]:
    """Per-topic results of create_topics, whatever shape this kafka-python returns."""
    if isinstance(response, dict):
        return list(response.get("topics", []))
    topics = getattr(response, "topics", None) or getattr(response, "topic_errors", None) or []
    out = []
    for t in topics:
        if isinstance(t, dict):
            out.append(t)
        elif isinstance(t, tuple):  # (name, error_code, error_message, ...)
            out.append(
                {"name": t[0], "error_code": t[1], "error_message": t[2] if len(t) > 2 else None}
            )
        else:
            out.append(
                {
                    "name": getattr(t, "name", None),
                    "error_code": getattr(t, "error_code", 0),
                    "error_message": getattr(t, "error_message", None),
                }
            )
    return out
