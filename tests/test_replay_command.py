"""`cityagent replay` as a command: its output files, Ctrl-C, a closed pipe, bad durations."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from control.cli import main as cli_main
from tests.cityagent.test_replay import LEVEL_CSV, write_series

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_worker_settings(monkeypatch) -> None:
    """Replay reads the workers' detection variables: none of the caller's."""
    from cityagent.settings import DETECTION_VARS

    for var in DETECTION_VARS:
        monkeypatch.delenv(var, raising=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


@pytest.mark.parametrize("flag", ["--scores", "--anomalies"])
def test_an_output_that_is_the_input_is_refused_and_the_input_kept(tmp_path: Path, capsys,
                                                                    flag: str) -> None:
    mine = tmp_path / "mine.csv"
    mine.write_bytes(LEVEL_CSV.read_bytes())
    assert cli_main(["replay", str(mine), flag, str(mine)]) == 2
    assert f"{flag} {mine} is the input file" in capsys.readouterr().err
    assert mine.read_bytes() == LEVEL_CSV.read_bytes()
    assert _leftovers(tmp_path) == []


def test_two_outputs_on_one_file_are_refused(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.txt"
    assert cli_main(["replay", str(LEVEL_CSV), "--scores", str(out),
                     "--anomalies", str(tmp_path / "." / "out.txt")]) == 2
    assert "--scores and --anomalies name the same file" in capsys.readouterr().err
    assert not out.exists()


def test_an_output_that_cannot_be_written_fails_before_reading(tmp_path: Path, capsys,
                                                               monkeypatch) -> None:
    import cityagent.replay

    def must_not_read(*_args, **_kwargs):
        raise AssertionError("read the input although the output cannot be written")

    monkeypatch.setattr(cityagent.replay, "read_replay_file", must_not_read)
    target = tmp_path / "no" / "s.csv"
    assert cli_main(["replay", str(LEVEL_CSV), "--scores", str(target)]) == 2
    err = capsys.readouterr().err
    # The folder that is missing, not the temporary's name (.s.csv.2k3j.part).
    assert err == (f"cityagent replay: cannot write --scores {target}: {tmp_path / 'no'}: "
                   "No such file or directory\n")


def test_outputs_appear_whole_with_the_usual_permissions(tmp_path: Path, capsys) -> None:
    scores = tmp_path / "s.csv"
    assert cli_main(["replay", str(LEVEL_CSV), "--scores", str(scores)]) == 0
    assert len(scores.read_text().splitlines()) == 301
    mask = os.umask(0)
    os.umask(mask)
    assert scores.stat().st_mode & 0o777 == 0o666 & ~mask
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(("args", "words"), [
    (["--window", "1e16"], "--window: must lie between 0.001 and 31,622,400 seconds"),
    (["--window", "0.0004"], "--window: must lie between"),
    (["--grace", "inf"], "--grace: must be a finite number"),
])
def test_durations_out_of_range_are_refused_by_name(args: list[str], words: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli_main(["replay", str(LEVEL_CSV), *args])
    assert info.value.code == 2 and words in capsys.readouterr().err


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "control.cli", *args]


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    proc = subprocess.Popen(_command("replay", str(LEVEL_CSV)), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader went away, as `| head` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err


def test_ctrl_c_stops_with_one_line_and_leaves_no_output_file(tmp_path: Path) -> None:
    n = 1_500_000
    big = write_series(tmp_path / "big.csv", np.round(np.random.default_rng(1).normal(10, 1, n), 3),
                       step_s=1.0)
    scores = tmp_path / "scores.csv"
    # SIGINT as a terminal sends it: a child of a background job inherits it ignored.
    proc = subprocess.Popen(_command("replay", str(big), "--scores", str(scores)), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # interrupt once it is working through the file
        line = proc.stderr.readline()
        lines.append(line)
        if "read 1,000,000 rows" in line or not line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    err = "".join(lines) + err
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "cityagent replay: interrupted"
    assert "Traceback" not in err
    assert not scores.exists() and _leftovers(tmp_path) == []


def test_loading_the_kernels_says_so_only_when_it_takes_long() -> None:
    from cityagent.detectors.config import DetectionConfig
    from control.kernels import load_kernels

    config = DetectionConfig.load()
    quiet: list[str] = []
    assert load_kernels(config, quiet.append, notice_after_s=60.0) < 60.0
    assert quiet == []  # loaded from the session's cache
    told: list[str] = []
    load_kernels(config, told.append, notice_after_s=0.0)
    assert told[-1].startswith("compiled the detection kernels in")


def test_a_txt_file_is_judged_by_its_first_character_as_documented(tmp_path: Path) -> None:
    """docs/replay.md: any name but .csv/.jsonl/.ndjson/.json is judged by its first
    character; .txt was always read as CSV, and JSON lines in it failed as a bad header."""
    from cityagent.replay import read_replay_file

    lines = tmp_path / "data.txt"
    lines.write_text("".join(
        f'{{"sensor_id": "s0", "timestamp": {1_780_272_000 + 60 * i}, "value": {i % 5}}}\n'
        for i in range(10)))
    assert read_replay_file(lines).format == "jsonl"
    table = tmp_path / "table.txt"
    table.write_text("timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,2\n")
    assert read_replay_file(table).format.endswith("csv")


def test_events_of_sensors_without_a_position_have_none(tmp_path: Path) -> None:
    """They said lon 0.0, lat 0.0: a real place (in the Gulf of Guinea)."""
    import json

    events = tmp_path / "a.jsonl"
    assert cli_main(["replay", str(LEVEL_CSV), "--anomalies", str(events)]) == 0
    docs = [json.loads(line) for line in events.read_text().splitlines()]
    assert docs and all(d["lon"] is None and d["lat"] is None for d in docs)


def test_generic_json_rows_have_their_coordinates_checked(tmp_path: Path) -> None:
    from cityagent.replay import InvalidReplayFile, read_replay_file

    path = tmp_path / "g.jsonl"
    path.write_text('{"sensor_id": "s", "timestamp": 1780272000, "value": 1, "lon": 200, '
                    '"lat": 36}\n')
    with pytest.raises(InvalidReplayFile, match=r"lon must lie in \[-180, 180\]; got 200"):
        read_replay_file(path)


def test_the_summary_says_one_row_not_one_rows(tmp_path: Path, capsys) -> None:
    path = tmp_path / "one.csv"
    path.write_text("timestamp,value\n2014-04-01 00:00:00,1.0\n", "utf-8")
    assert cli_main(["replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 row, 1 sensor (generic 1)" in out and "0 episodes, 0 events" in out
    assert "1 row before their sensor's baseline was learned" in out


def _gap_csv(path: Path) -> Path:
    """Two gauges every 10 min for 4 days; the second silent for 2 days from hour 6."""
    from cityagent.readings import format_ts

    t0, step = 1_790_000_000_000, 600_000
    lines = ["sensor_id,kind,timestamp,level_m"]
    for k in range(4 * 144):
        ts = t0 + k * step
        lines.append(f"jn-wl-000001,water_level,{format_ts(ts)},{1.5 + 0.01 * (k % 7):.2f}")
        if not 6 * 3_600_000 <= ts - t0 < 6 * 3_600_000 + 2 * 86_400_000:
            lines.append(f"jn-wl-000002,water_level,{format_ts(ts)},{1.2 + 0.01 * (k % 5):.2f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_replay_forgets_a_silent_sensor_after_cityagent_forget_after_s_as_the_workers_do(
        tmp_path: Path, capsys, monkeypatch) -> None:
    """The workers take CITYAGENT_FORGET_AFTER_S over the settings file's [state]
    forget_after_s; replay read only the file, so a history replayed with it set kept a
    sensor the workers had forgotten (and learned afresh when it came back)."""
    import json

    source = _gap_csv(tmp_path / "gap.csv")
    monkeypatch.delenv("CITYAGENT_FORGET_AFTER_S", raising=False)
    assert cli_main(["replay", str(source), "--json"]) == 0
    kept = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("CITYAGENT_FORGET_AFTER_S", "86400")
    assert cli_main(["replay", str(source), "--json"]) == 0
    forgot = json.loads(capsys.readouterr().out)
    assert (kept["forget_after_s"], forgot["forget_after_s"]) == (2_592_000, 86_400)
    # Forgotten after its day of silence, the second gauge is learned afresh when it comes
    # back: its first readings back are cold again, and its open silence episode never ends.
    assert forgot["rows_before_warm"] > kept["rows_before_warm"]
    assert forgot["anomalies"] == kept["anomalies"] - 1


def test_a_bad_cityagent_forget_after_s_stops_replay_naming_it(tmp_path: Path, capsys,
                                                                monkeypatch) -> None:
    monkeypatch.setenv("CITYAGENT_FORGET_AFTER_S", "3600")
    assert cli_main(["replay", str(LEVEL_CSV)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cityagent: CITYAGENT_FORGET_AFTER_S must be 0 (never forget a sensor) "
                          "or between 86400 (one day) and 315360000 (ten years); got '3600'"), err


def test_an_idle_wait_past_an_hour_stops_replay_with_one_line_naming_it(tmp_path: Path,
                                                                        capsys) -> None:
    # 1e306 s ended in an OverflowError traceback as it was made milliseconds.
    text = (ROOT / "cityagent" / "data" / "detection.toml").read_text("utf-8")
    config = tmp_path / "idle.toml"
    config.write_text(text.replace("\nidle_s = 5 ", "\nidle_s = 1e306 ", 1), "utf-8")
    assert cli_main(["replay", str(LEVEL_CSV), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == (f"cityagent: {config}: windows.idle_s must be above 0 and at most 3600 (an "
                   "hour); got 1e+306\n")


def test_replay_needs_no_other_setting_of_the_workers(capsys, monkeypatch) -> None:
    """Only the detection variables are read (CITYAGENT_DETECTION, _WINDOW_S, _GRACE_S,
    _FORGET_AFTER_S): a wrong Kafka address is nothing to an offline replay."""
    monkeypatch.setenv("CITYAGENT_KAFKA", "not a host list")
    assert cli_main(["replay", str(LEVEL_CSV), "--json"]) == 0


def _replayed(capsys, *args: str) -> tuple[dict, list[str]]:
    """The --json summary of a replay of LEVEL_CSV and its stderr lines."""
    import json

    assert cli_main(["replay", str(LEVEL_CSV), "--json", *args]) == 0
    out, err = capsys.readouterr()
    return json.loads(out), err.strip().splitlines()


def test_replay_takes_the_workers_detection_settings_from_the_environment(
        tmp_path: Path, capsys, monkeypatch) -> None:
    """On a worker host, replay detected with the packaged settings and its own window and
    grace whatever CITYAGENT_DETECTION, CITYAGENT_WINDOW_S and CITYAGENT_GRACE_S said: a
    backtest of production history ran with other settings than production, without a word.
    Now it takes them when its flags are not given, and one line says what it used."""
    plain, said = _replayed(capsys)
    assert (plain["window_s"], plain["grace_s"]) == (300.0, 0.0)  # auto: the 5-min step
    assert said == ["cityagent replay: settings: window 300 s (auto), grace 0 s (default), "
                    "forget_after_s 2592000 s (settings file), detection settings "
                    "cityagent/data/detection.toml (packaged)"]
    text = (ROOT / "cityagent" / "data" / "detection.toml").read_text("utf-8")
    workers = tmp_path / "workers.toml"
    workers.write_text(text.replace("\nidle_s = 5 ", "\nidle_s = 900 ", 1), "utf-8")
    monkeypatch.setenv("CITYAGENT_DETECTION", str(workers))
    monkeypatch.setenv("CITYAGENT_WINDOW_S", "600")
    monkeypatch.setenv("CITYAGENT_GRACE_S", "30")
    theirs, said = _replayed(capsys)
    assert (theirs["window_s"], theirs["grace_s"]) == (600.0, 30.0)
    assert theirs["windows"] < plain["windows"]
    assert theirs["settings_from"] == {"config": "CITYAGENT_DETECTION",
                                       "window_s": "CITYAGENT_WINDOW_S",
                                       "grace_s": "CITYAGENT_GRACE_S",
                                       "forget_after_s": "settings file", "registry": "none"}
    # The worker's notice of a file value the window caps, then the settings line.
    assert said == [
        f"cityagent replay: [windows] idle_s = 900 of {workers} is taken as 600 s, the "
        "detection window CITYAGENT_WINDOW_S sets: a window set over the file's caps the idle "
        "wait at one window",
        "cityagent replay: settings: window 600 s (CITYAGENT_WINDOW_S), grace 30 s "
        "(CITYAGENT_GRACE_S), forget_after_s 2592000 s (settings file), detection settings "
        f"{workers} (CITYAGENT_DETECTION)"]
    # The flags win, and the line says over what.
    mine, said = _replayed(capsys, "--window", "300", "--grace", "0", "--config",
                           str(ROOT / "cityagent" / "data" / "detection.toml"))
    assert {k: mine[k] for k in plain if k not in ("elapsed_s", "read_s")} == {
        **{k: plain[k] for k in plain if k not in ("elapsed_s", "read_s")},
        "settings_from": {"config": "--config", "window_s": "--window", "grace_s": "--grace",
                          "forget_after_s": "settings file", "registry": "none"}}
    assert said[-1].startswith(
        "cityagent replay: settings: window 300 s (--window over CITYAGENT_WINDOW_S=600), "
        "grace 0 s (--grace over CITYAGENT_GRACE_S=30), ")
    assert said[-1].endswith(f"(--config over CITYAGENT_DETECTION={workers})")


@pytest.mark.parametrize("env, args, words", [
    ({"CITYAGENT_WINDOW_S": "abc"}, [], "cityagent: CITYAGENT_WINDOW_S must be a number; "
                                        "got 'abc'"),
    ({"CITYAGENT_DETECTION": "/no/such.toml"}, [],
     "cityagent: CITYAGENT_DETECTION names no readable file; got '/no/such.toml'"),
    ({"CITYAGENT_GRACE_S": "90"}, ["--window", "60"],
     "cityagent: the grace (90 s, CITYAGENT_GRACE_S) must lie between 0 and the window "
     "(60 s, --window)"),
    ({"CITYAGENT_GRACE_S": "900"}, [],
     "cityagent: the grace (900 s, CITYAGENT_GRACE_S) must lie between 0 and the window "
     "(300 s, auto)"),
])
def test_a_wrong_worker_setting_stops_replay_with_one_line_naming_it(
        env: dict[str, str], args: list[str], words: str, capsys, monkeypatch) -> None:
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert cli_main(["replay", str(LEVEL_CSV), *args]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [words]


def test_replay_takes_the_workers_sensor_registry_unless_given_one(
        tmp_path: Path, capsys, monkeypatch) -> None:
    """A gauge at 3.2 m is below the packaged 警戒 level; its registry row puts 警戒 at 3.0 m.
    Replay read the registry only from --registry, so on a worker host (where
    CITYAGENT_SENSOR_REGISTRY names it) a backtest missed the alarms production raised."""
    rows = ["sensor_id,kind,timestamp,lon,lat,level_m"]
    rows += [f"gauge-1,water_level,2026-06-01T00:{m:02d}:00Z,117.02,36.66,"
             f"{2.2 if m < 30 else 3.2}" for m in range(60)]
    data = tmp_path / "levels.csv"
    data.write_text("\n".join(rows) + "\n", "utf-8")
    registry = tmp_path / "registry.csv"
    registry.write_text("sensor_id,kind,warning_level_m,guaranteed_level_m\n"
                        "gauge-1,water_level,3.0,3.5\n", "utf-8")

    def replayed(*args: str) -> tuple[dict, list[str]]:
        import json
        assert cli_main(["replay", str(data), "--json", *args]) == 0
        out, err = capsys.readouterr()
        return json.loads(out), err.strip().splitlines()

    plain, said = replayed()
    assert plain["settings_from"]["registry"] == "none"
    assert "sensor registry" not in said[-1]
    monkeypatch.setenv("CITYAGENT_SENSOR_REGISTRY", str(registry))
    theirs, said = replayed()
    assert theirs["anomalies"] > plain["anomalies"], (plain, theirs)
    assert theirs["settings_from"]["registry"] == "CITYAGENT_SENSOR_REGISTRY"
    assert said[-1].endswith(f"sensor registry {registry} (CITYAGENT_SENSOR_REGISTRY)")
    flag, said = replayed("--registry", str(registry))
    assert flag["anomalies"] == theirs["anomalies"]
    assert said[-1].endswith(f"sensor registry {registry} (--registry over "
                             f"CITYAGENT_SENSOR_REGISTRY={registry})")
    monkeypatch.setenv("CITYAGENT_SENSOR_REGISTRY", str(tmp_path / "missing.csv"))
    assert cli_main(["replay", str(data), "--json"]) == 2
    assert "missing.csv" in capsys.readouterr().err
