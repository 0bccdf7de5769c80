"""The Kafka client's repeated log lines, said once per interval with a count.

Why: while the brokers do not answer, aiokafka logs each failed connection, metadata update
and fetch as it retries, every 100 ms per consumer: a worker and the API of `cityagent up`
printed ~400 lines a second between them (a ten-minute Kafka restart: ~240,000 lines), which
buried everything else in the output and filled container logs. The first line of each kind
still shows at once; the same kind again within the interval is counted, and the next one
after it says how many were held back.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

__all__ = ("RepeatFilter", "quiet_kafka_client_repeats", "REPEAT_INTERVAL_S")

#: At most one line of each kind per this many seconds.
REPEAT_INTERVAL_S = 10.0
#: Lines of one kind differ only in numbers (node ids, ports, addresses, error codes).
_NUMBERS = re.compile(r"\d+")
#: Kinds remembered at most: a bound on memory whatever the client logs.
_MAX_KINDS = 1000


class RepeatFilter(logging.Filter):
    """Lets the first warning or error of each kind through, then one per ``interval_s`` that
    says how many of its kind were held back since the last. A kind is the logger, the level
    and the message with its numbers left out. Info and debug records all pass."""

    def __init__(self, interval_s: float = REPEAT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._clock = clock
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}  # -> (said at, held)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # joins, assignments, generations: rare, and each one tells something
        message = record.getMessage()
        kind = (record.name, record.levelno, _NUMBERS.sub("N", message))
        now = self._clock()
        said = self._kinds.get(kind)
        if said is not None and now - said[0] < self._interval_s:
            self._kinds[kind] = (said[0], said[1] + 1)
            return False
        if said is not None and said[1]:
            record.msg = (f"{message} (and {said[1]:,} more like it in the last "
                          f"{now - said[0]:.0f} s)")
            record.args = ()
        if len(self._kinds) >= _MAX_KINDS and kind not in self._kinds:
            self._kinds.clear()
        self._kinds[kind] = (now, 0)
        return True


def quiet_kafka_client_repeats(interval_s: float = REPEAT_INTERVAL_S) -> RepeatFilter:
    """Put one RepeatFilter on every aiokafka logger (a logger's filter sees only the records
    logged on it, not its children's), at a process's start; a logger that has one keeps it."""
    import aiokafka  # noqa: F401  (creates the loggers it logs on)

    repeats = RepeatFilter(interval_s)
    for name in list(logging.root.manager.loggerDict):
        if name != "aiokafka" and not name.startswith("aiokafka."):
            continue
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(repeats)
    return repeats
