"""Two admins editing one zone, or the routing rules, at once: the later If-Match write is a
412, not a silent lost update.

Against a real broker and API processes (no worker: the check is the API's). Before, every
write below was a 202 and the last one written stood."""

from __future__ import annotations

import asyncio
import copy
import time
import tomllib
from importlib import resources

import httpx
import orjson
import pytest

from control.topics import ensure_topics, pipeline_topics
from tests.helpers import AUTH, free_port, start_api
from tests.integration.test_zones_live import SCHOOL

pytestmark = [pytest.mark.integration]


def _school(name_en: str) -> dict:
    feature = copy.deepcopy(SCHOOL)
    feature["properties"]["name_en"] = name_en
    return feature


def _read_back(url: str, version: int) -> httpx.Response:
    """GET ``url`` once this API shows ``version`` (it reads its own writes back in ~0.25 s)."""
    deadline = time.monotonic() + 20
    while True:
        answer = httpx.get(url, headers=AUTH)
        if answer.headers.get("etag") == f'"{version}"' or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


async def _at_once(url: str, bodies: list[dict], if_match: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*(
            client.put(url, json=body, headers={**AUTH, "If-Match": if_match})
            for body in bodies))


def test_the_later_of_two_edits_from_one_version_is_412(settings_factory, tmp_path) -> None:
    settings = settings_factory(api_port=free_port())
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    api = start_api(settings, tmp_path / "api.log")
    zone = f"http://127.0.0.1:{settings.api_port}/v1/zones/qd-test-school"
    try:
        created = httpx.put(zone, json=_school("created"),
                            headers={**AUTH, "If-None-Match": "*"})
        assert created.status_code == 202, created.text
        # At once, before this API has read its own record back (~0.25 s): the check counts it.
        again = httpx.put(zone, json=_school("again"), headers={**AUTH, "If-None-Match": "*"})
        assert again.status_code == 412, again.text

        read = _read_back(zone, created.json()["version"])
        assert read.json()["properties"]["name_en"] == "created"
        # Two admins read the same version; the first write stands, the second is told.
        seen = read.headers["etag"]
        first = httpx.put(zone, json=_school("first"), headers={**AUTH, "If-Match": seen})
        assert first.status_code == 202, first.text
        now = first.json()["version"]
        second = httpx.put(zone, json=_school("second"), headers={**AUTH, "If-Match": seen})
        assert second.status_code == 412, second.text
        assert second.headers["etag"] == f'"{now}"'
        assert f"is at version {now}, not {seen}" in second.json()["detail"]
        assert _read_back(zone, now).json()["properties"]["name_en"] == "first"

        # Eight at once from one version, to one API process: one is written.
        answers = asyncio.run(_at_once(zone, [_school(f"racer {i}") for i in range(8)],
                                       f'"{now}"'))
        codes = sorted(a.status_code for a in answers)
        assert codes == [202] + [412] * 7, [a.text for a in answers]
        [winner] = [a for a in answers if a.status_code == 202]
        shown = _read_back(zone, winner.json()["version"])
        assert shown.headers["etag"] == f'"{winner.json()["version"]}"'
        assert shown.json()["properties"]["name_en"] == \
            orjson.loads(winner.request.content)["properties"]["name_en"]

        # A delete from a stale version is refused too; from the current one it goes.
        stale = httpx.delete(zone, headers={**AUTH, "If-Match": f'"{now}"'})
        assert stale.status_code == 412, stale.text
        gone = httpx.delete(zone, headers={**AUTH, "If-Match": shown.headers["etag"]})
        assert gone.status_code == 202, gone.text
        late = httpx.put(zone, json=_school("late"),
                         headers={**AUTH, "If-Match": shown.headers["etag"]})
        assert late.status_code == 412 and "does not exist now" in late.text, late.text
        assert httpx.delete(zone, headers=AUTH).status_code == 404
    finally:
        api.stop()


def test_routing_edits_and_a_second_replica(settings_factory, tmp_path) -> None:
    """The rules likewise; a second API process checks against what it has read, so once it
    has read a write (within about a second) a write from the older version is a 412 there."""
    settings = settings_factory(api_port=free_port())
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    replica = settings_factory(api_port=free_port(), topic_prefix=settings.topic_prefix)
    api = start_api(settings, tmp_path / "api.log")
    other = start_api(replica, tmp_path / "api2.log")
    url = f"http://127.0.0.1:{settings.api_port}/v1/routing"
    url2 = f"http://127.0.0.1:{replica.api_port}/v1/routing"
    doc = tomllib.loads(resources.files("cityagent.data").joinpath("routing.toml")
                        .read_text("utf-8"))
    try:
        assert httpx.get(url, headers=AUTH).headers["etag"] == '"0"'
        answers = asyncio.run(_at_once(url, [doc, doc], '"0"'))
        assert sorted(a.status_code for a in answers) == [202, 412], [a.text for a in answers]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and httpx.get(url2, headers=AUTH).headers["etag"] != '"1"':
            time.sleep(0.1)
        stale = httpx.put(url2, json={**doc, "version": 0}, headers=AUTH)
        assert stale.status_code == 412, stale.text
        assert stale.json()["detail"].startswith(
            "the routing document is at version 1, not 0 (the body's 'version')")
        fresh = httpx.put(url2, json=doc, headers={**AUTH, "If-Match": '"1"'})
        assert fresh.status_code == 202 and fresh.json()["version"] == 2, fresh.text
    finally:
        other.stop()
        api.stop()


def _window_version(url: str, window_id: str, version: int) -> dict:
    """The window as GET /v1/maintenance lists it once this API shows ``version``."""
    deadline = time.monotonic() + 20
    while True:
        window = httpx.get(url, headers=AUTH).json()["windows"].get(window_id, {})
        if window.get("version") == version or time.monotonic() > deadline:
            return window
        time.sleep(0.05)


def test_maintenance_window_edits_from_one_version(settings_factory, tmp_path) -> None:
    """Maintenance windows had no version: both of two admins extending one window got 202
    and the later silently replaced the earlier. A window's version is its record's offset."""
    settings = settings_factory(api_port=free_port())
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    api = start_api(settings, tmp_path / "api.log")
    url = f"http://127.0.0.1:{settings.api_port}/v1/maintenance"
    now = int(time.time() * 1000)

    def window(note: str) -> dict:
        return {"sensor": "qd-wl-*", "start_ms": now, "end_ms": now + 3_600_000, "note": note}

    try:
        created = httpx.put(f"{url}/w1", json=window("created"),
                            headers={**AUTH, "If-None-Match": "*"})
        assert created.status_code == 202, created.text
        again = httpx.put(f"{url}/w1", json=window("again"),
                          headers={**AUTH, "If-None-Match": "*"})
        assert again.status_code == 412, again.text
        seen = created.json()["version"]
        assert _window_version(url, "w1", seen)["note"] == "created"

        first = httpx.put(f"{url}/w1", json=window("first"), headers={**AUTH, "If-Match": f'"{seen}"'})
        assert first.status_code == 202 and first.json()["version"] > seen, first.text
        now_at = first.json()["version"]
        second = httpx.put(f"{url}/w1", json={**window("second"), "version": seen}, headers=AUTH)
        assert second.status_code == 412 and second.headers["etag"] == f'"{now_at}"', second.text
        assert _window_version(url, "w1", now_at)["note"] == "first"

        answers = asyncio.run(_at_once(f"{url}/w1", [window(f"racer {i}") for i in range(8)],
                                       f'"{now_at}"'))
        assert sorted(a.status_code for a in answers) == [202] + [412] * 7, \
            [a.text for a in answers]
        [winner] = [a for a in answers if a.status_code == 202]
        listed = _window_version(url, "w1", winner.json()["version"])
        assert listed["note"] == orjson.loads(winner.request.content)["note"]

        stale = httpx.delete(f"{url}/w1", headers={**AUTH, "If-Match": f'"{now_at}"'})
        assert stale.status_code == 412, stale.text
        gone = httpx.delete(f"{url}/w1",
                            headers={**AUTH, "If-Match": f'"{winner.json()["version"]}"'})
        assert gone.status_code == 202, gone.text
        assert httpx.delete(f"{url}/w1", headers=AUTH).status_code == 404
    finally:
        api.stop()
