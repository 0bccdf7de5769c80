"""When Kafka stops acknowledging, ingest answers 503 with Retry-After and accepts nothing;
the readiness probe follows the broker down and back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
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
from tests.helpers import AUTH, child_tmpdir, free_port, start_api

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


def test_an_api_or_worker_that_cannot_reach_kafka_at_start_says_so_in_one_line() -> None:
    """Both gave up after 30 s, the API in a traceback from uvicorn's lifespan (exit code 3),
    the worker in one from Faust; now one line each, exit code 1 (not 2: a broker can come
    back, and `cityagent up` starts them again)."""
    bootstrap = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYAGENT_")}
    env.update(CITYAGENT_KAFKA=bootstrap, CITYAGENT_API_KEYS="admin:k1", PYTHONUNBUFFERED="1",
               TMPDIR=str(child_tmpdir()))
    procs = {"api": subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory",
                                      "api.main:create_app_from_env", "--port", str(free_port())],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE),
             "worker": subprocess.Popen([sys.executable, "-m", "streams"], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)}
    try:
        said = {name: proc.communicate(timeout=120) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, (out, err) in said.items():
        assert procs[name].returncode == 1, (name, out[-2000:], err[-2000:])
        assert err.decode().splitlines()[-1:] == [
            f"cityagent {name}: the Kafka brokers at {bootstrap} did not answer a metadata "
            f"request within 30s: KafkaTimeoutError: Unable to bootstrap from {bootstrap}"], (
            name, err[-2000:])
        assert b"Traceback" not in out + err, (name, out[-2000:], err[-2000:])
