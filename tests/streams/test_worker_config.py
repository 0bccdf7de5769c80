"""The worker and `cityagent eval` read the settings files and overrides the environment
names, and a bad one stops them with one line naming it (exit code 2), before any broker is
contacted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import streams.__main__ as streams_main
from cityagent.errors import BrokerError
from cityagent.settings import Settings
from control.cli import main as cli_main
from streams.worker import build_worker


@pytest.fixture
def broken_alerting(tmp_path: Path) -> Path:
    path = tmp_path / "alerting.toml"
    path.write_text("[lifecycle]\nresolve_after_s = -5\n", "utf-8")
    return path


def test_the_worker_reads_the_alerting_file_named_by_the_environment(broken_alerting) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYAGENT_")}
    env.update(CITYAGENT_ALERTING=str(broken_alerting), CITYAGENT_KAFKA="127.0.0.1:9")
    done = subprocess.run([sys.executable, "-m", "streams"], env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("cityagent worker: ") and "resolve_after_s" in done.stderr
    assert "Traceback" not in done.stderr


def test_eval_reads_the_alerting_file_named_by_the_environment(
        broken_alerting, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CITYAGENT_ALERTING", str(broken_alerting))
    assert cli_main(["eval", "--sensors", "10", "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cityagent: ") and "resolve_after_s" in err


def test_the_worker_forgets_sensors_after_the_time_the_environment_sets() -> None:
    """CITYAGENT_FORGET_AFTER_S reaches the worker's detector (building the worker contacts no
    broker); unset, the settings file's 30 days do."""
    env = {"CITYAGENT_KAFKA": "127.0.0.1:9", "CITYAGENT_FORGET_AFTER_S": "172800"}
    worker = build_worker(Settings.from_env(env))
    assert worker.detector.engine.config.forget_after_ms == 172_800_000
    worker = build_worker(Settings.from_env({"CITYAGENT_KAFKA": "127.0.0.1:9"}))
    assert worker.detector.engine.config.forget_after_ms == 30 * 86_400_000


def test_a_bad_forget_after_stops_the_worker_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYAGENT_")}
    env.update(CITYAGENT_FORGET_AFTER_S="3600", CITYAGENT_KAFKA="127.0.0.1:9")
    done = subprocess.run([sys.executable, "-m", "streams"], env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr == ("cityagent worker: CITYAGENT_FORGET_AFTER_S must be 0 (never forget a "
                           "sensor) or between 86400 (one day) and 315360000 (ten years); got "
                           "'3600'\n")


def test_the_faust_data_directory_is_in_a_folder_of_this_user_only() -> None:
    """One /tmp/cityagent-faust for every user: the first user's worker made it, and a second
    user's worker could not make its data directory there (PermissionError)."""
    worker = build_worker(Settings.from_env({"CITYAGENT_KAFKA": "127.0.0.1:9"}))
    root = Path(worker.app.conf.datadir).parent
    assert root.name == f"cityagent-faust-{os.getuid()}"
    assert root.stat().st_uid == os.getuid()


def test_the_worker_says_once_at_start_which_file_values_the_window_caps(
        tmp_path: Path, monkeypatch, capsys) -> None:
    """CITYAGENT_WINDOW_S caps the file's idle_s (and its grace) at one window: an idle_s of
    600 under a 60 s window ran as 60 without a word."""
    from cityagent.detectors.config import DetectionConfig

    text = Path(__file__).parents[2].joinpath("cityagent/data/detection.toml").read_text("utf-8")
    assert "idle_s = 5 " in text
    detection = tmp_path / "detection.toml"
    detection.write_text(text.replace("idle_s = 5 ", "idle_s = 600 "), "utf-8")
    assert DetectionConfig.load(detection).windows.idle_ms == 600_000  # the file's own
    for key in [k for k in os.environ if k.startswith("CITYAGENT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CITYAGENT_DETECTION", str(detection))
    monkeypatch.setenv("CITYAGENT_WINDOW_S", "60")
    monkeypatch.setenv("CITYAGENT_KAFKA", "127.0.0.1:9")

    def no_broker(bootstrap: str, timeout_s: float) -> None:
        raise BrokerError("no broker answered (test)")

    monkeypatch.setattr(streams_main, "wait_for_kafka", no_broker)
    with pytest.raises(SystemExit):
        streams_main.main()
    err = capsys.readouterr().err
    assert err.count("idle_s") == 1, err
    assert (f"cityagent worker: [windows] idle_s = 600 of {detection} is taken as 60 s, the "
            "detection window CITYAGENT_WINDOW_S sets") in err
    assert "grace_s" not in err  # the file's 15 s fits in the window


def test_a_worker_that_compiles_the_kernels_says_so_as_it_starts_and_when_done(
        monkeypatch) -> None:
    """A first run compiles the detection kernels (~60 s measured on a cold cache, 2 cores):
    the worker logged one line, before Faust had set up logging, so nobody saw it and the
    worker sat silent. It says, through the function `python -m streams` prints with, that it
    is compiling once that takes longer than a second, and the time when done. The compile is
    a stand-in that waits for the first line (a real cold one would cost CI a minute)."""
    import threading

    import control.kernels
    from cityagent.detection import DetectionEngine

    told: list[str] = []
    compiling = threading.Event()

    def say(line: str) -> None:
        told.append(line)
        compiling.set()

    def cold_warm_up(_engine) -> float:
        assert compiling.wait(30), "no line while the kernels compiled"
        return 31.0

    monkeypatch.setattr(control.kernels, "NOTICE_AFTER_S", 0.05)
    monkeypatch.setattr(DetectionEngine, "warm_up", cold_warm_up)
    build_worker(Settings.from_env({"CITYAGENT_KAFKA": "127.0.0.1:9"}), say)
    assert told == [control.kernels.COMPILING,
                    "compiled the detection kernels in 31 s (cached for later runs)"]
    assert "30-70 s" in told[0]


def test_a_worker_that_loads_the_kernels_from_the_cache_says_nothing_of_them() -> None:
    told: list[str] = []
    build_worker(Settings.from_env({"CITYAGENT_KAFKA": "127.0.0.1:9"}), told.append)
    assert told == []  # the session's kernels are cached (tests/conftest.py)


def test_python_m_streams_prints_what_the_worker_says_at_start(monkeypatch, capsys) -> None:
    """The lines reach the operator: on standard error, as `cityagent up` shows them."""
    def says(settings, say):
        say("compiling (test)")
        raise SystemExit(9)

    monkeypatch.setattr(streams_main, "build_worker", says)
    monkeypatch.setenv("CITYAGENT_KAFKA", "127.0.0.1:9")
    with pytest.raises(SystemExit):
        streams_main.main()
    assert capsys.readouterr().err == "cityagent worker: compiling (test)\n"
