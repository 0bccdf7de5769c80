"""`cityagent up` as a user runs it: everything comes up, alerts appear, Ctrl-C leaves nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

from cityagent.readings import format_ts
from tests.helpers import child_tmpdir, free_port, pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def children_of(pid: int) -> set[int]:
    """Every descendant of ``pid``, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def up_env(api_port: int, broker_port: int) -> dict[str, str]:
    """The environment of an `up` under test: its own ports, 5 s windows, and the tests' 6 s
    session timeout (tests/conftest.py), with which each worker joins in ~3 s, not ~5."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYAGENT_")}
    env.update(CITYAGENT_API_PORT=str(api_port), CITYAGENT_BROKER_PORT=str(broker_port),
               PYTHONUNBUFFERED="1", CITYAGENT_WINDOW_S="5", CITYAGENT_GRACE_S="2",
               CITYAGENT_SESSION_TIMEOUT_S="6", TMPDIR=str(child_tmpdir()))
    return env


@dataclass
class Up:
    """A `cityagent up` under test and the file its output goes to."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        """What it printed so far ("" before the file exists: `tee` makes it once it runs)."""
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""


@contextmanager
def running_up(tmp_path: Path, args: list[str], env: dict[str, str]) -> Iterator[Up]:
    """`cityagent up ARGS` in its own process group (as in a terminal, so that ``os.killpg``
    is Ctrl-C), its output in ``tmp_path/up.log``; killed on leaving if it still runs (a
    failed assertion), and its log closed."""
    log: IO[bytes] = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "control.cli", "up", *args], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield Up(proc, tmp_path / "up.log")
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def remove_logs(output: str) -> None:
    """Delete the folder of logs `up` said it keeps ("the logs stay in DIR"), if it said so."""
    kept = re.search(r"the logs stay in (\S+) ", output)
    if kept:
        shutil.rmtree(kept.group(1), ignore_errors=True)


def assert_nothing_left(output: str, spawned: set[int]) -> None:
    """`up` said it left no process running, and none of those it had started runs."""
    assert "no process left running" in output, output[-3000:]
    assert [p for p in spawned if pid_alive(p)] == []


def test_up_simulate_serves_alerts_and_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    api_port, broker_port = free_port(), free_port()
    with running_up(tmp_path, ["--simulate", "--rate", "2000"],
                    up_env(api_port, broker_port)) as up:
        deadline, alerts, key = time.monotonic() + 60, [], None
        while time.monotonic() < deadline and not alerts:
            time.sleep(1)
            if key is None:  # `up` without CITYAGENT_API_KEYS prints a dev admin key
                found = re.search(r"dev admin key: (\S+)", up.output())
                key = found and found.group(1)
                continue
            try:
                alerts = httpx.get(f"http://127.0.0.1:{api_port}/v1/alerts", timeout=2,
                                   headers={"authorization": f"Bearer {key}"}).json()["alerts"]
            except (httpx.HTTPError, ValueError, KeyError):
                pass
        assert alerts, f"no alert within 60 s:\n{up.output()[-3000:]}"
        assert alerts[0]["city_code"].startswith("37") and alerts[0]["district_name"]
        spawned = children_of(up.proc.pid)
        assert len(spawned) >= 4, spawned  # broker, worker, API, simulator
        os.killpg(up.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert up.proc.wait(60) == 0
    output = up.output()
    kept = re.search(r"the logs stay in (\S+) ", output)  # said, so nobody wonders what it is
    assert kept and (Path(kept.group(1)) / "broker.log").exists()
    remove_logs(output)
    assert_nothing_left(output, spawned)
    # The embedded broker keeps everything: the workers checkpoint less often on it, and its
    # memory is reported when everything stops (and every ten minutes while it runs).
    assert "workers checkpoint detection state every 60 s" in output
    held = re.search(r"embedded broker: ([\d,]+) MB in memory; it frees nothing", output)
    assert held and int(held.group(1).replace(",", "")) > 5, output[-2000:]


def test_a_taken_api_port_is_named_and_exits_non_zero(tmp_path: Path) -> None:
    api_port, broker_port = free_port(), free_port()
    before = set(child_tmpdir().glob("cityagent-*"))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", api_port))
        holder.listen()
        done = subprocess.run([sys.executable, "-m", "control.cli", "up"],
                              env=up_env(api_port, broker_port), capture_output=True, timeout=60)
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 2
    assert f"port {api_port}" in out and "already in use" in out
    assert "Traceback" not in out
    # Nothing was logged, so no empty log directory is left behind, nor named.
    assert "logs stay" not in out and set(child_tmpdir().glob("cityagent-*")) == before


def test_an_api_that_finds_a_setting_wrong_stops_up_at_once_with_exit_code_2(tmp_path: Path) -> None:
    """A wrong key setting stops the API at start (exit code 2): `up` started it again three
    times, each saying the same line, then stopped everything with exit code 1."""
    api_port, broker_port = free_port(), free_port()
    done = subprocess.run([sys.executable, "-m", "control.cli", "up"],
                          env=dict(up_env(api_port, broker_port),
                                   CITYAGENT_API_KEYS="superuser:k1"),
                          capture_output=True, timeout=120)
    out = done.stdout.decode() + done.stderr.decode()
    remove_logs(out)
    assert done.returncode == 2, out[-3000:]
    assert out.count("role must be one of integrator, viewer, operator, admin; got 'superuser'") == 1
    assert re.search(r"api \(pid \d+\) exited with code 2, a configuration error \(its line "
                     r"above names the setting\): starting it again cannot mend it; stopping "
                     "everything", out), out[-3000:]
    assert "started again" not in out and "no process left running" in out


def test_an_embedded_broker_that_dies_stops_up_and_says_so(tmp_path: Path) -> None:
    """SIGKILL the embedded broker (as the OOM killer would: it frees nothing while it runs):
    `up` went on running and said nothing, while the worker and the API printed connection
    errors by the hundred each second. It says the broker and what it held are gone, and stops."""
    api_port, broker_port = free_port(), free_port()
    with running_up(tmp_path, [], up_env(api_port, broker_port)) as up:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "press Ctrl-C" not in up.output():
            assert up.proc.poll() is None, up.output()[-3000:]
            time.sleep(0.5)
        spawned = children_of(up.proc.pid)
        broker = int(re.search(r"broker ready at \S+ \(pid (\d+)\)", up.output()).group(1))
        os.kill(broker, signal.SIGKILL)
        assert up.proc.wait(60) == 1, up.output()[-3000:]
    text = up.output()
    remove_logs(text)
    assert (f"the embedded broker (pid {broker}) exited with code -9; every topic, reading, "
            "state and alert it held is lost (memory only); stopping everything") in text
    assert_nothing_left(text, spawned)


def worker_pids(output: str, name: str) -> list[int]:
    """The PIDs a worker's Faust log lines name (``worker-1 | [time] [PID] [INFO] ...``), in
    the order they first appear."""
    pids: list[int] = []
    for pid in re.findall(rf"^\s*{name} \| \[[^\]]+\] \[(\d+)\]", output, re.M):
        if int(pid) not in pids:
            pids.append(int(pid))
    return pids


def test_a_worker_that_dies_is_started_again_and_nothing_accepted_is_lost(tmp_path: Path) -> None:
    """With two workers, SIGKILL one: `up` must not stop everything (the embedded broker keeps
    every topic in memory, so stopping it loses every reading and alert accepted so far); it
    starts the worker again and the API goes on serving the alerts it had."""
    api_port, broker_port = free_port(), free_port()
    url = f"http://127.0.0.1:{api_port}/v1/alerts"

    def alert_ids(key: str) -> set[str]:
        try:
            answer = httpx.get(url, timeout=2, headers={"authorization": f"Bearer {key}"})
            return {a["alert_id"] for a in answer.json()["alerts"]}
        except (httpx.HTTPError, ValueError, KeyError):
            return set()

    args = ["--workers", "2", "--simulate", "--sensors", "500", "--rate", "500"]
    with running_up(tmp_path, args, up_env(api_port, broker_port)) as up:
        output = up.output
        deadline, before, key = time.monotonic() + 90, set(), None
        while time.monotonic() < deadline and not (before and worker_pids(output(), "worker-1")):
            time.sleep(1)
            found = re.search(r"dev admin key: (\S+)", output())
            key = found and found.group(1)
            before = alert_ids(key) if key else set()
        assert before, f"no alert within 90 s:\n{output()[-3000:]}"
        [doomed] = worker_pids(output(), "worker-1")
        os.kill(doomed, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(worker_pids(output(), "worker-1")) < 2:
            assert up.proc.poll() is None, output()[-3000:]
            time.sleep(1)
        assert len(worker_pids(output(), "worker-1")) == 2, output()[-3000:]
        assert up.proc.poll() is None, output()[-3000:]
        # So that it joins half the 6 s session timeout after the kill (control/restarts.py):
        # 2 s later, as it joins 1 s after its start or later; and it says when.
        assert re.search(rf"worker-1 \(pid {doomed}\) exited with code -9; starting it again "
                         r"in 2 s, at \d\d:\d\d:\d\d \(the group shares its partitions out again", output())
        # The new worker-1 joins the group and is given partitions again. (Waited for, too,
        # because Ctrl-C while it was still joining took ~12 s to stop it.)
        restarted = worker_pids(output(), "worker-1")[1]
        assert f"worker-1 started again (pid {restarted})" in output()
        reads = re.compile(rf"^\s*worker-1 \| \[[^\]]+\] \[{restarted}\] \[INFO\] this worker now "
                           r"reads partitions \[\d", re.M)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not reads.search(output()):
            assert up.proc.poll() is None, output()[-3000:]
            time.sleep(0.5)
        assert reads.search(output()), output()[-3000:]
        # The broker was not restarted: every alert from before is still served.
        deadline, after = time.monotonic() + 30, set()
        while time.monotonic() < deadline and not before <= after:
            after = alert_ids(key)
            time.sleep(1)
        assert before <= after, (before - after, output()[-3000:])
        os.killpg(up.proc.pid, signal.SIGINT)
        assert up.proc.wait(60) == 0
    remove_logs(output())


def test_ctrl_c_while_a_worker_waits_to_be_started_again_stops_everything(tmp_path: Path) -> None:
    """SIGKILL the worker, then Ctrl-C during the wait before its restart (14 s, with 30 s
    sessions): `up` stops everything at once and does not start the worker again."""
    api_port, broker_port = free_port(), free_port()
    env = dict(up_env(api_port, broker_port), CITYAGENT_SESSION_TIMEOUT_S="30")
    with running_up(tmp_path, [], env) as up:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not worker_pids(up.output(), "worker-1"):
            assert up.proc.poll() is None, up.output()[-3000:]
            time.sleep(0.5)
        [doomed] = worker_pids(up.output(), "worker-1")
        spawned = children_of(up.proc.pid)
        os.kill(doomed, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "starting it again in" not in up.output():
            time.sleep(0.2)
        assert f"worker-1 (pid {doomed}) exited with code -9; starting it again in 14 s, at " in (
            up.output()), up.output()[-3000:]
        os.killpg(up.proc.pid, signal.SIGINT)
        assert up.proc.wait(60) == 0, up.output()[-3000:]
    text = up.output()
    remove_logs(text)
    assert "SIGINT: stopping" in text, text[-3000:]
    assert "started again" not in text and worker_pids(text, "worker-1") == [doomed], text[-3000:]
    assert_nothing_left(text, spawned)


def test_up_simulate_runs_the_scenario_given_and_shows_what_sim_warns_of(tmp_path: Path) -> None:
    """`up --simulate` with the simulator's options of a load test: the simulator it starts
    runs that scenario (no demo breaches) after the warm-up, with that acceleration, start and
    seed; the registry is of that seed's fleet; and the warnings `cityagent sim` prints of
    faults a fresh pipeline cannot find yet show in up's output (they had to be found by
    running `cityagent sim` next to a plain `up`)."""
    api_port, broker_port = free_port(), free_port()
    start = format_ts(time.time_ns() // 1_000_000 - 3_600_000)  # event time x10 stays behind the clock
    # The warnings follow the workers' detection settings: the packaged 1 min windows here
    # (with up_env's 5 s ones, 10 windows of flatline warm-up end before the first fault).
    env = {k: v for k, v in up_env(api_port, broker_port).items()
           if k not in ("CITYAGENT_WINDOW_S", "CITYAGENT_GRACE_S")}
    args = ["--simulate", "--sensors", "300", "--rate", "3000", "--scenario", "sensor-faults",
            "--warm-up", "5m", "--accelerate", "10", "--start", start, "--seed", "3"]
    with running_up(tmp_path, args, env) as up:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "simulator | sensors_sim:    " not in up.output():
            assert up.proc.poll() is None, up.output()[-3000:]  # a progress line: it is sending
            time.sleep(0.5)
        os.killpg(up.proc.pid, signal.SIGINT)
        assert up.proc.wait(60) == 0, up.output()[-3000:]
    text = up.output()
    registry = re.search(r"sensor registry of the simulated fleet: (\S+)", text)
    try:
        assert registry, text[-3000:]
        doc = json.loads(Path(registry.group(1)).read_text("utf-8"))
        assert (doc["seed"], doc["count"]) == (3, 300)
        # Which settings it was written by: 300 sensors at 3,000/s, a 0.1 s tick, x10.
        assert (f"{registry.group(1)} (pipe pressure limits 0.14-0.8 MPa from "
                "cityagent/data/detection.toml (packaged), report interval 1 s") in text
    finally:
        remove_logs(text)  # the registry is among them
    assert ("simulator | sensors_sim: 300 sensors -> Kafka" in text
            and "event time x10, scenario sensor-faults after a 5 min warm-up" in text), text[-3000:]
    warnings = re.findall(r"^simulator \| sensors_sim: warning: (.*)$", text, re.M)
    assert len(warnings) == 4, [line for line in text.splitlines() if "simulator |" in line]
    # An hour behind at x10, event time passes the clock by the 5 min tolerance after
    # (3600 + 300) / 9 = 433 s of a run that up gives no end: said before it starts.
    assert re.match(r"event time x10 from --start \S+ passes the clock by 5 min after 43\d s",
                    warnings[0]), warnings[0]
    assert warnings[1].startswith("stuck (sensor-faults#0) starts 6 min into the run")
    assert warnings[2].startswith("spike (sensor-faults#2) starts 8 min into the run")
    assert warnings[3].startswith("give --warm-up 17m or more")
    assert "breach injected" not in text and " 0 breaches injected" in text


def descendant(up_pid: int, *words: str) -> int:
    """The PID of the process `up` started whose command line has ``words`` in a row (the
    simulator: ``-m sensors_sim``, a worker: ``-m streams``), but no ``--registry`` (the run
    that writes the simulated fleet's registry first)."""
    for pid in sorted(children_of(up_pid)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        runs = [argv[i:i + len(words)] for i in range(len(argv))]
        if list(words) in runs and "--registry" not in argv:
            return pid
    raise AssertionError(f"no process {' '.join(words)!r} under up (pid {up_pid})")


def wait_for(up: Up, what: str, done, timeout_s: float = 60.0, output=None) -> None:
    """Wait until ``done()``, failing at once, with the end of the output, if `up` exits."""
    output = output or up.output
    deadline = time.monotonic() + timeout_s
    while not done():
        assert up.proc.poll() is None, f"up exited ({up.proc.returncode}):\n{output()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:g} s:\n{output()[-3000:]}"
        time.sleep(0.2)


def api_answers(url: str, key: str) -> bool:
    """The API serves the alerts it holds (200), with the dev admin key `up` printed."""
    try:
        return httpx.get(f"{url}/v1/alerts", timeout=2,
                         headers={"authorization": f"Bearer {key}"}).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_finished_simulator_leaves_the_pipeline_serving_and_up_piped_to_tee_exits_0(
        tmp_path: Path) -> None:
    """`up --simulate | tee log`, the simulator's run ending on its own (its event time reaches
    2100, where no reading may be dated, within a second). `up` used to stop everything then,
    the embedded broker and all it held with it; it says the simulator finished and the API
    goes on answering. Ctrl-C in the terminal stops tee too: `up` then exits 0, not 141 with
    BrokenPipeError tracebacks, and leaves no process running."""
    api_port, broker_port = free_port(), free_port()
    log, errors = tmp_path / "tee.log", tmp_path / "up.stderr"
    args = ["--simulate", "--sensors", "50", "--rate", "500", "--start", "2099-12-31T23:59:59Z"]
    tee = subprocess.Popen(["tee", str(log)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           process_group=0)
    with open(errors, "wb") as stderr:
        # In tee's process group, as a shell runs a pipeline: Ctrl-C reaches both.
        proc = subprocess.Popen([sys.executable, "-m", "control.cli", "up", *args],
                                env=up_env(api_port, broker_port), stdout=tee.stdin,
                                stderr=stderr, process_group=tee.pid)
    assert tee.stdin is not None
    tee.stdin.close()  # up is its only writer
    up = Up(proc, log)
    try:
        finished = re.compile(r"simulator \(pid (\d+)\) finished \(exit code 0\): no more "
                              r"simulated readings; the broker, workers, API and dashboard keep "
                              r"running \(http://127\.0\.0\.1:\d+\) with what they hold")
        wait_for(up, "simulator finished", lambda: finished.search(up.output()))
        simulator = int(finished.search(up.output()).group(1))
        assert not pid_alive(simulator)
        key = re.search(r"dev admin key: (\S+)", up.output()).group(1)
        url = f"http://127.0.0.1:{api_port}"
        wait_for(up, "answer of the API after the simulator finished",
                 lambda: api_answers(url, key))
        spawned = children_of(up.proc.pid)
        assert len(spawned) >= 3, spawned  # broker, worker, API: still running
        os.killpg(tee.pid, signal.SIGINT)  # Ctrl-C in the terminal: up and tee
        assert up.proc.wait(60) == 0, up.output()[-3000:]
        assert tee.wait(10) == -signal.SIGINT
    finally:
        for process in (proc, tee):
            if process.poll() is None:
                process.kill()
    # Its logs' folder: where they stay was said after tee had gone, but the registry in it
    # was named before.
    registry = re.search(r"sensor registry of the simulated fleet: (\S+)", up.output())
    assert registry, up.output()[-3000:]
    shutil.rmtree(Path(registry.group(1)).parent, ignore_errors=True)
    assert "Traceback" not in errors.read_text("utf-8", "replace"), errors.read_text()
    assert [p for p in spawned if pid_alive(p)] == []


def test_a_failed_simulator_is_said_ctrl_c_then_exits_1_and_a_second_kills_what_is_left(
        tmp_path: Path) -> None:
    """SIGKILL the simulator `up --simulate` started: `up` says it failed and how, the API goes
    on answering, and Ctrl-C then exits 1 (a script running a load test sees it was not
    whole). The worker is stopped (SIGSTOP) so that it cannot stop: a second Ctrl-C while `up`
    waits for it kills, by PID, what is still running, and names them; before, it was
    ignored and `up` waited out its 15 s for the worker."""
    api_port, broker_port = free_port(), free_port()
    args = ["--simulate", "--sensors", "50", "--rate", "500"]
    with running_up(tmp_path, args, up_env(api_port, broker_port)) as up:
        wait_for(up, "simulator", lambda: "simulator | sensors_sim: 50 sensors" in up.output())
        simulator = descendant(up.proc.pid, "-m", "sensors_sim")
        worker = descendant(up.proc.pid, "-m", "streams")
        broker = int(re.search(r"broker ready at \S+ \(pid (\d+)\)", up.output()).group(1))
        api = descendant(up.proc.pid, "-m", "uvicorn")
        spawned = children_of(up.proc.pid)
        os.kill(simulator, signal.SIGKILL)
        failed = (f"simulator (pid {simulator}) failed (killed by SIGKILL): no more simulated "
                  "readings; the broker, workers, API and dashboard keep running")
        wait_for(up, "simulator failed", lambda: failed in up.output())
        assert "(`up` then exits with code 1)" in up.output()
        key = re.search(r"dev admin key: (\S+)", up.output()).group(1)
        wait_for(up, "answer of the API after the simulator failed",
                 lambda: api_answers(f"http://127.0.0.1:{api_port}", key))
        os.kill(worker, signal.SIGSTOP)  # SIGTERM cannot stop it now; SIGKILL still can
        os.killpg(up.proc.pid, signal.SIGINT)
        # The API stops first (the last started, the simulator gone): `up` then waits for
        # the worker.
        wait_for(up, "API stopped", lambda: not pid_alive(api))
        assert pid_alive(worker) and pid_alive(broker)
        os.killpg(up.proc.pid, signal.SIGINT)
        assert up.proc.wait(60) == 1, up.output()[-3000:]
    text = up.output()
    remove_logs(text)
    assert ("exit code 1: the simulator failed earlier (killed by SIGKILL)") in text, text[-3000:]
    assert (f"SIGINT again: killing what is still running: worker-1 (pid {worker}), the "
            f"embedded broker (pid {broker})") in text, text[-3000:]
    assert "did not stop; killing it" not in text, text[-3000:]
    assert_nothing_left(text, spawned)
