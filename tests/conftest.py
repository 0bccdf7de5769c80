"""Shared fixtures: one Kafka broker per test session, and per-test isolated settings.

The broker is the external one named by ``CITYAGENT_KAFKA`` when that is set, otherwise the
embedded Tansu broker started on a free port. If it cannot be started the tests FAIL: a
skipped integration suite would hide a broken broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from cityagent import rowscore
from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig
from cityagent.errors import BrokerError
from cityagent.settings import Settings
from control.broker import EmbeddedBroker, wait_for_kafka
from tests import helpers


@pytest.fixture(scope="session", autouse=True)
def child_tmpdir() -> Iterator[None]:
    """Remove the child processes' temp directory (helpers.child_tmpdir) after the session."""
    yield
    helpers.remove_child_tmpdir()


@pytest.fixture(scope="session", autouse=True)
def detection_kernels() -> None:
    """Compile the detection kernels once, before any test or worker process needs them: a
    worker started by a test on a fresh machine would otherwise spend its first seconds
    compiling while the test waits."""
    engine = DetectionEngine(DetectionConfig.load())
    engine.warm_up()
    rowscore.warm_up(engine)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of the session's Kafka: ``CITYAGENT_KAFKA``, or an embedded broker."""
    external = Settings.from_env().kafka
    if external:
        try:
            wait_for_kafka(external, timeout_s=30.0)
        except BrokerError as exc:
            pytest.fail(f"CITYAGENT_KAFKA is set but unusable: {exc}", pytrace=False)
        yield external
        return
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    broker = EmbeddedBroker(helpers.free_port(), log_path=log_path)
    try:
        bootstrap = broker.start(timeout_s=30.0)
    except BrokerError as exc:
        pytest.fail(f"the embedded broker did not start: {exc}", pytrace=False)
    try:
        yield bootstrap
    finally:
        broker.stop()


@pytest.fixture
def settings_factory(kafka_bootstrap: str) -> Callable[..., Settings]:
    """Make Settings with their own topics and consumer group; keyword arguments override."""

    def make(**overrides: object) -> Settings:
        tag = uuid.uuid4().hex[:12]
        values: dict[str, object] = {
            "kafka": kafka_bootstrap,
            "topic_prefix": f"t{tag}",
            "app_id": f"app-{tag}",
            "partitions": 4,
            # Short windows, so a test's readings are judged within seconds.
            "window_s": 2.0,
            "grace_s": 1.0,
            "checkpoint_s": 0.5,
            # The least session timeout Apache Kafka accepts by default
            # (group.min.session.timeout.ms), not the workers' 10 s: the embedded broker holds
            # every group join for about half of it, so each worker a test starts joins in ~3 s
            # rather than ~5 s (tests/integration/test_worker_restart.py has always used 6).
            "session_timeout_s": 6,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def isolated_settings(settings_factory: Callable[..., Settings]) -> Settings:
    """Settings of this test alone: unique topic prefix and app id, 4 partitions."""
    return settings_factory()


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    return helpers.free_port()
