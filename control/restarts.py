"""When `cityagent up` starts a worker or the API that exited on its own again: after a wait
that doubles with each exit, or, after too many exits, never (everything stops).

Why wait at all: on the embedded broker (Tansu) a worker that joins the consumer group sooner
than about half a session timeout after a member died is placed in a generation that still
counts the dead member, and waits ~8 s longer for its partitions than one that joins later
(`tests/integration/test_worker_restart.py` measured it with plain consumers). Apache Kafka
rebalances either way, so the waits are kept short: they only spare a crash loop some restarts.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ("Restarts", "MAX_RESTARTS", "RESTART_WINDOW_S", "MAX_RESTART_DELAY_S",
           "API_RESTART_DELAY_S", "JOIN_AFTER_START_S", "first_restart_delay_s")

#: A process that exits more than ``MAX_RESTARTS`` times within ``RESTART_WINDOW_S`` of
#: running cannot start: everything stops. The waits before its restarts are not counted, so
#: the waits change when a process is started again, not when `up` gives up on it.
MAX_RESTARTS = 3
RESTART_WINDOW_S = 60.0
#: The longest wait before a restart, however often the process exited.
MAX_RESTART_DELAY_S = 30.0
#: The API's first wait, and the least of a worker's. The API is in no consumer group (it
#: reads by assignment), so nothing on the broker waits for it; a second is enough not to
#: spend its restarts in one instant on something passing, such as a broker that is briefly
#: unreachable.
API_RESTART_DELAY_S = 1.0
#: A worker sends its first JoinGroup at least this long after its process starts: Faust's
#: TableManager sleeps 1 s before the consumer subscribes (and the imports take more; the
#: same bound as tests/integration/test_worker_restart.py's).
JOIN_AFTER_START_S = 1.0


def first_restart_delay_s(name: str, session_timeout_s: float) -> float:
    """The wait before a process's first restart. For a worker: so that it joins the group
    at least half the session timeout after the death, when the dead member no longer
    counts; it joins ``JOIN_AFTER_START_S`` after its start at the soonest, so that much less
    (4 s with the default 10 s sessions). For the API: ``API_RESTART_DELAY_S``."""
    if not name.startswith("worker-"):
        return API_RESTART_DELAY_S
    return max(session_timeout_s / 2 - JOIN_AFTER_START_S, API_RESTART_DELAY_S)


class Restarts:
    """The exits of each process `up` started and the wait before each restart.

    ``first_delay_s(name)`` is the wait after an exit with no other in the window; each
    further exit in the window doubles it, up to ``MAX_RESTART_DELAY_S``. Times are
    ``time.monotonic()`` seconds, passed in.
    """

    def __init__(self, first_delay_s: Callable[[str], float]) -> None:
        self._first_delay_s = first_delay_s
        self._exits: dict[str, list[float]] = {}  # on the clock of the process's running time
        self._waited: dict[str, float] = {}

    def after_exit(self, name: str, now: float) -> float | None:
        """The seconds to wait before starting ``name`` again after it exited at ``now``;
        None when it exited too often to be started again."""
        running = now - self._waited.get(name, 0.0)
        recent = [t for t in self._exits.get(name, []) if running - t < RESTART_WINDOW_S]
        self._exits[name] = recent = [*recent, running]
        if len(recent) > MAX_RESTARTS:
            return None
        delay = min(self._first_delay_s(name) * 2 ** (len(recent) - 1), MAX_RESTART_DELAY_S)
        self._waited[name] = self._waited.get(name, 0.0) + delay
        return delay

    def exits(self, name: str) -> int:
        """How many times ``name`` exited within the window, as of its last exit."""
        return len(self._exits.get(name, []))
