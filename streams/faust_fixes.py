"""A fix for a race in Faust's recovery that loses the first messages after a rebalance.

faust-streaming 0.15.3 ends recovery in this order (``Recovery.on_recovery_completed`` and
``Recovery._resume_streams``): resume the stream partitions, seek them to the committed
offsets, and only then resume flow control. Between the first and the last step the fetcher
already delivers messages from the resumed partitions; the stream drops every message that
arrives while flow control is suspended, and the seek has already been done, so those messages
are never fetched again. We saw it here: a worker restarted after SIGKILL skipped the message
at its committed offset in about one start in six (faust-streaming issues #216 and #221, and
robinhood/faust#115, describe the same family of races).

The fix keeps Faust's steps and moves one: flow control resumes *before* the stream partitions
do, so no message can reach a stream while flow control is off. Messages fetched between the
resume and the seek are processed and then fetched again after the seek: duplicates, which
the detection state absorbs, instead of losses. (Seeking while the partitions were still
paused, the other obvious order, left a worker fetching nothing at all in one start in ten.) The replacement is applied only to the Faust
version it was written against; any other version logs a warning and is left alone, and
``tests/integration/test_worker_restart.py`` is the test that shows whether it is needed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from faust.tables.recovery import Recovery

__all__ = ("apply_faust_fixes",)

log = logging.getLogger("cityagent.streams")
_FIXED_VERSIONS = ("0.15.3",)
_applied = False


def apply_faust_fixes() -> None:
    """Install the reordered recovery ending (idempotent)."""
    global _applied
    if _applied:
        return
    if faust.__version__ not in _FIXED_VERSIONS:
        log.warning(
            "faust %s is not one the recovery fix was written for (%s); not applied",
            faust.__version__, ", ".join(_FIXED_VERSIONS),
        )
        return
    Recovery.on_recovery_completed = _on_recovery_completed  # type: ignore[method-assign]
    Recovery._resume_streams = _resume_streams  # type: ignore[method-assign]
    _applied = True


async def _resume_then_seek(self: Any, assignment: set) -> None:
    """Let messages flow, resume the stream partitions, then seek them to the committed offsets.

    Flow control is on before any stream message can be fetched, so none is dropped. A
    message fetched before the seek is processed, and fetched again after it: a duplicate,
    which the detection state absorbs (closed-episode markers), never a loss.
    """
    app, consumer = self.app, self.app.consumer
    app.flow_control.resume()
    consumer.resume_flow()
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
    self.completed.set()
    await app._fetcher.maybe_start()


async def _on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """Faust's ``Recovery.on_recovery_completed``, flow control resumed first."""
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(
            table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table])
        )
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id {self.app.consumer_generation_id} "
            f"param {generation_id}"
        )
        return
    await _resume_then_seek(self, assignment)
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


async def _resume_streams(self: Any, generation_id: int = 0) -> None:
    """Faust's ``Recovery._resume_streams``, flow control resumed first."""
    app = self.app
    await app.on_rebalance_complete.send()
    assignment = app.consumer.assignment()
    if app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again")
        return
    if not assignment:
        self.log.info("Resuming streams with empty assignment")
    await _resume_then_seek(self, assignment)
    self.tables.on_actives_ready()
    self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")
