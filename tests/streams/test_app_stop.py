"""A stopping worker's wait for the messages its agents took is bounded, and says so when it
ends it (``streams/app.py``). The wait itself, and the agents held before the stop hooks,
are shown on a real broker by ``tests/integration/test_worker_restart.py``
(``test_a_stopping_worker_takes_no_message_after_its_final_checkpoint``); here a consumer
whose messages are never acknowledged, as an agent stuck in an await would leave them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cityagent.settings import Settings
from streams.app import STOP_WAIT_S, create_app


class NeverAcknowledged:
    """Faust's consumer as a stuck agent leaves it: three messages taken, none acknowledged."""

    def __init__(self) -> None:
        self.unacked = {object(), object(), object()}
        self.commits = 0

    async def wait_empty(self) -> None:
        await asyncio.Event().wait()  # Faust's loop, which ends only when they are acknowledged

    async def commit(self) -> bool:
        self.commits += 1
        return True


def test_a_stopping_worker_gives_up_waiting_for_unacknowledged_messages_and_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(Settings(app_id="stop-wait-test"))
    app.stop_wait_s = 0.1
    app._stopping = True  # as on_stop sets it
    consumer = NeverAcknowledged()

    async def stop() -> None:
        # 10 s: a limit for the test run only; before, this wait never ended.
        await asyncio.wait_for(app._consumer_wait_empty(consumer, app.log), 10)

    with caplog.at_level(logging.WARNING, logger="cityagent.streams"):
        asyncio.run(stop())
    assert consumer.commits == 1  # what was acknowledged is committed all the same
    assert ("stopping: 3 messages the agents took are still not acknowledged after 0.1 s; "
            "exiting without them: their offsets are not committed, so the next worker is "
            "handed them again") in caplog.text


def test_the_stop_wait_leaves_time_to_flush_before_the_supervisors_kill() -> None:
    """Docker stops a container with SIGKILL 10 s after SIGTERM, `cityagent up` 15 s after."""
    assert 0 < STOP_WAIT_S <= 5
