"""When Kafka stops acknowledging, ingest answers 503 with Retry-After and accepts nothing;
the readiness probe follows the broker down and back."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from api.broker_probe import BrokerProbe
from cityagent.settings import Settings
from control.broker import EmbeddedBroker
from control.topics import ensure_topics, pipeline_topics
from tests.helpers import AUTH, free_port, start_api

pytestmark = [pytest.mark.integration, pytest.mark.slow]

READING = {"sensor_id": "jn-wl-down-1", "kind": "water_level", "lon": 117.0197, "lat": 36.6614,
           "level_m": 2.0}


def test_broker_down_is_503_with_retry_after(tmp_path: Path) -> None:
    broker = EmbeddedBroker(free_port(), log_path=tmp_path / "broker.log")
    bootstrap = broker.start()
    tag = uuid.uuid4().hex[:8]
    settings = Settings(kafka=bootstrap, topic_prefix=f"down{tag}", app_id=f"down-{tag}",
                        partitions=2, api_port=free_port())
    api = None
    try:
        ensure_topics(bootstrap, pipeline_topics(settings))
        api = start_api(settings, tmp_path / "api.log")
        url = f"http://127.0.0.1:{settings.api_port}/v1/readings"
        ok = httpx.post(url, json=[READING | {"ts": time.time()}], headers=AUTH, timeout=15)
        assert ok.status_code == 202, ok.text

        broker.stop()
        down = httpx.post(url, json=[READING | {"ts": time.time()}], headers=AUTH, timeout=30)
        assert down.status_code == 503, down.text
        assert down.headers["retry-after"].isdigit()
        assert "did not acknowledge" in down.json()["detail"] or "cannot reach" in down.json()["detail"]
        assert "accepted" not in down.json()
        # The API itself stays up and says so.
        assert httpx.get(f"http://127.0.0.1:{settings.api_port}/healthz").status_code == 200
    finally:
        if api is not None:
            api.stop()
        broker.stop()


def test_the_readiness_probe_follows_the_broker_down_and_back(tmp_path: Path) -> None:
    """Its own connection: dropped when the broker goes, made again when it is back."""
    port = free_port()

    async def scenario() -> list[bool]:
        probe = BrokerProbe(f"127.0.0.1:{port}")
        seen = []
        first = EmbeddedBroker(port, log_path=tmp_path / "first.log")
        second = EmbeddedBroker(port, log_path=tmp_path / "second.log")
        try:
            first.start()
            seen.append(await probe.answers(timeout_s=10))
            first.stop()
            seen.append(await probe.answers())
            second.start()
            seen.append(await probe.answers(timeout_s=10))
            # Asking made no topic (the embedded broker creates one it is asked about).
            admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
            await admin.start()
            try:
                assert await admin.list_topics() == []
            finally:
                await admin.close()
        finally:
            await probe.close()
            first.stop()
            second.stop()
        return seen

    assert asyncio.run(scenario()) == [True, False, True]
