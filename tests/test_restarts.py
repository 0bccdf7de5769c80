"""`cityagent up`'s waits before starting again a process that exited (control/restarts.py):
for a worker, so that it joins half the session timeout after the death; a second for the
API; doubling, bounded, and the same give-up rule as before the waits (more than 3 exits
within 60 s of running)."""

from __future__ import annotations

import pytest

from control.restarts import (
    API_RESTART_DELAY_S,
    JOIN_AFTER_START_S,
    MAX_RESTART_DELAY_S,
    MAX_RESTARTS,
    RESTART_WINDOW_S,
    Restarts,
    first_restart_delay_s,
)


def worker_restarts(session_timeout_s: float = 10.0) -> Restarts:
    return Restarts(lambda name: first_restart_delay_s(name, session_timeout_s))


@pytest.mark.parametrize(("name", "session_timeout_s", "delay_s"), [
    ("worker-1", 10, 5.0 - JOIN_AFTER_START_S),  # it joins a second after its start or later
    ("worker-12", 6, 3.0 - JOIN_AFTER_START_S),
    ("worker-1", 30, 15.0 - JOIN_AFTER_START_S),
    ("worker-1", 3, API_RESTART_DELAY_S),  # never less than the API's
    ("api", 10, API_RESTART_DELAY_S),
    ("api", 60, API_RESTART_DELAY_S),
])
def test_a_worker_joins_half_the_session_timeout_after_the_death(name, session_timeout_s,
                                                                  delay_s):
    assert first_restart_delay_s(name, session_timeout_s) == delay_s
    assert worker_restarts(session_timeout_s).after_exit(name, 100.0) == delay_s


def test_each_exit_within_the_window_doubles_the_wait_until_too_many_stop_it():
    restarts, now, waits = worker_restarts(10), 0.0, []
    for _ in range(MAX_RESTARTS):
        waits.append(restarts.after_exit("worker-1", now))
        now += waits[-1] + 2.0  # it crashes 2 s after each start
    assert waits == [4.0, 8.0, 16.0]
    assert restarts.after_exit("worker-1", now) is None
    assert restarts.exits("worker-1") == MAX_RESTARTS + 1


def test_the_wait_is_bounded():
    restarts = Restarts(lambda name: 25.0)
    assert [restarts.after_exit("worker-1", t) for t in (0.0, 30.0, 60.0)] == [
        25.0, MAX_RESTART_DELAY_S, MAX_RESTART_DELAY_S]


def test_the_waits_do_not_count_as_running_time():
    """A worker that crashes 10 s after each start, with 22 s sessions (waits of 10, 20 and
    30 s): 4 exits within 30 s of running, so `up` gives up as it did when restarts were
    immediate, though the exits span 90 s of the clock."""
    restarts, now = worker_restarts(22), 0.0
    for expected in (10.0, 20.0, 30.0):
        assert restarts.after_exit("worker-1", now) == expected
        now += expected + 10.0
    assert now > RESTART_WINDOW_S
    assert restarts.after_exit("worker-1", now) is None


def test_exits_longer_ago_than_the_window_are_forgotten():
    restarts = worker_restarts(12)
    assert restarts.after_exit("worker-1", 0.0) == 5.0
    assert restarts.after_exit("worker-1", 5.0 + 30.0) == 10.0  # 30 s of running: counted
    # 61 s of running since the first exit, 31 since the second: the first is forgotten.
    assert restarts.after_exit("worker-1", 5.0 + 10.0 + 61.0) == 10.0
    assert restarts.exits("worker-1") == 2


def test_each_process_has_its_own_count():
    restarts = worker_restarts(12)
    assert restarts.after_exit("worker-1", 0.0) == 5.0
    assert restarts.after_exit("worker-2", 1.0) == 5.0
    assert restarts.after_exit("api", 1.0) == API_RESTART_DELAY_S
    assert restarts.after_exit("api", 3.0) == 2 * API_RESTART_DELAY_S
    assert (restarts.exits("worker-1"), restarts.exits("api"), restarts.exits("worker-3")) == (
        1, 2, 0)
