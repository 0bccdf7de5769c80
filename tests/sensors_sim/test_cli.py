"""The simulator's command line without a broker: argument checks, unreachable sinks, the
registry, the file sink, labels and event time."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys

import orjson
import pytest

from cityagent.readings import format_ts, parse_reading
from sensors_sim.cli import main
from tests.helpers import free_port
from tests.sensors_sim.fake_api import FakeApi, serving


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--sensors", "0"], "--sensors: must be positive"),
        (["--sensors", "ten"], "--sensors: must be a whole number"),
        # No bound: 1e8 sensors (~160 GB at ~1.6 KB each) ran the machine out of memory.
        (["--sensors", "1000001"], "--sensors: must be at most 1,000,000 (~1.6 KB of memory "
                                   "each: 1,000,000 take ~1.6 GB, 1,000,001 would take ~2 GB)"),
        (["--bench", "--sensors", "100000000"], "--sensors: must be at most 1,000,000"),
        (["--rate", "-5"], "--rate: must be positive"),
        (["--duration", "0"], "--duration: must be positive"),
        (["--count", "0"], "--count: must be positive"),
        (["--breach-every", "-1"], "--breach-every: must be 0 or more"),
        # Rounded to a schedule of 0 ms: the breaches were off, without a word.
        (["--breach-every", "0.0004"], "--breach-every: must be 0 (off) or at least 0.001 s"),
        (["--breach-duration", "nan"], "--breach-duration: must be a finite number"),
        # kafka-python checked it at the first send: a ValueError traceback.
        (["--topic", "bad topic!"], "--topic: a Kafka topic name is 1-249 ASCII letters"),
        # Found at the first connection: exit code 1, 'invalid literal for int()'.
        (["--bootstrap", "127.0.0.1:abc"], "--bootstrap: must be the bootstrap servers as "
                                           "host:port, comma-separated"),
        (["--bootstrap", "kafka://k1:9092"], "'kafka://k1:9092' is not one"),
        # kafka-python's flush overflowed time_t: the readings it waited for went unacknowledged.
        (["--flush-timeout", "1e300"], "--flush-timeout: must be at most 86,400 seconds"),
        # Its 64-bit end time overflowed: a traceback at the first breach.
        (["--breach-duration", "1e300"], "--breach-duration: must be at most 3,155,760,000 s"),
        (["--duration", "1", "--count", "5"], "not allowed with argument"),
        (["--seed", "-1"], "--seed: must be 0 or more"),  # numpy's ValueError, a traceback
        (["--start", "yesterday"], "--start: is not an RFC 3339 time"),  # named 'ts'
        (["--start", "1"], "--start: must lie between 2000 and 2100"),
        # Retried for --give-up seconds (30) before it said the scheme was missing.
        (["--sink", "http", "--api", "127.0.0.1:8000"],
         "--api: expected a URL like http://127.0.0.1:8000; got '127.0.0.1:8000'"),
    ],
)
def test_bad_arguments(argv, says, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert says in capsys.readouterr().err


def test_unreachable_broker_is_one_clear_message(capsys):
    bootstrap = f"127.0.0.1:{free_port()}"
    code = main(["--sensors", "10", "--duration", "1", "--bootstrap", bootstrap,
                 "--topic", "t.readings", "--connect-timeout", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot reach the Kafka brokers at {bootstrap}" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# -- registry, file sink, labels, time ------------------------------------------------------

_START = "2026-07-15T06:00:00+08:00"


def test_registry_json_and_csv_identical_for_a_seed(tmp_path, capsys):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    for path, seed in ((a, "3"), (b, "3"), (c, "4")):
        assert main(["--sensors", "60", "--seed", seed, "--registry", str(path)]) == 0
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    doc = json.loads(a.read_text("utf-8"))
    assert doc["count"] == 60 and len(doc["sensors"]) == 60
    gauge = next(s for s in doc["sensors"] if s["kind"] == "water_level")
    assert gauge["warning_level_m"] < gauge["guaranteed_level_m"]
    sites = {s["water_site"] for s in doc["sensors"] if s["kind"] == "water_level"}
    assert sites <= {"river", "street", "underpass"} and "river" in sites
    assert all(s["water_site"] is None for s in doc["sensors"] if s["kind"] != "water_level")
    road = next(s for s in doc["sensors"] if s["kind"] == "traffic")
    assert road["road_class"] in {"expressway", "arterial", "secondary"}
    assert road["expected_interval_s"] == 0.1  # 60 sensors at the default 2000/s
    assert {"sensor_id", "lon", "lat", "city_code", "district_code"} <= set(gauge)
    out = tmp_path / "r.csv"
    assert main(["--sensors", "60", "--seed", "3", "--registry", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["sensor_id"] for r in rows] == [s["sensor_id"] for s in doc["sensors"]]
    assert "wrote the registry of 60 sensors" in capsys.readouterr().err


def test_the_registry_takes_the_pipe_limits_of_the_workers_detection_settings(
        tmp_path, capsys, monkeypatch):
    """The registry gives every pipe ``floor_mpa`` and ``high_mpa``, and a registry row wins
    over the detection file in the workers: written from the packaged file alone, it undid an
    operator's ``CITYAGENT_DETECTION`` for every simulated pipe of `cityagent up --simulate`
    (0.14/0.80 MPa instead of the file's 0.20/0.70). Read as the workers read it now, and
    the line that says it was written names where from."""
    from importlib import resources

    from cityagent.detectors.config import DetectionConfig

    for var in ("CITYAGENT_DETECTION", "CITYAGENT_WINDOW_S", "CITYAGENT_GRACE_S",
                "CITYAGENT_FORGET_AFTER_S", "CITYAGENT_SENSOR_REGISTRY"):
        monkeypatch.delenv(var, raising=False)
    packaged = DetectionConfig.load().kind("pipe_pressure")
    text = tmp_path / "detection.toml"
    body = resources.files("cityagent.data").joinpath("detection.toml").read_text("utf-8")
    body = body.replace(f"floor_mpa = {packaged.floor_mpa:g}", "floor_mpa = 0.20")
    body = body.replace(f"high_mpa = {packaged.high_mpa:.2f}", "high_mpa = 0.70")
    text.write_text(body, "utf-8")
    assert DetectionConfig.load(text).kind("pipe_pressure").floor_mpa == 0.20  # edited
    monkeypatch.setenv("CITYAGENT_DETECTION", str(text))
    monkeypatch.setenv("CITYAGENT_SENSOR_REGISTRY", str(tmp_path / "not-yet.json"))  # not read
    out = tmp_path / "fleet.json"
    assert main(["--sensors", "60", "--seed", "3", "--registry", str(out)]) == 0
    pipes = [s for s in json.loads(out.read_text("utf-8"))["sensors"]
             if s["kind"] == "pipe_pressure"]
    assert pipes and {(p["min_pressure_mpa"], p["max_pressure_mpa"]) for p in pipes} == {
        (0.20, 0.70)}
    err = capsys.readouterr().err
    assert (f"wrote the registry of 60 sensors to {out}: pipe pressure limits 0.2-0.7 MPa "
            f"from {text} (CITYAGENT_DETECTION), report interval 0.1 s") in err

    monkeypatch.setenv("CITYAGENT_WINDOW_S", "-5")  # refused as the workers refuse it
    assert main(["--sensors", "60", "--registry", str(tmp_path / "other.json")]) == 2
    err = capsys.readouterr().err
    assert "CITYAGENT_WINDOW_S" in err and "Traceback" not in err
    assert not (tmp_path / "other.json").exists()


def _file_run(tmp_path, *extra, name="out.jsonl"):
    out, labels = tmp_path / name, tmp_path / "labels.jsonl"
    code = main(["--sensors", "160", "--rate", "100000", "--count", "3200", "--sink", "file",
                 "--out", str(out), "--labels", str(labels), "--start", _START, *extra])
    return code, out, labels


def test_file_sink_labels_and_accelerated_event_time(tmp_path, capsys):
    code, out, labels = _file_run(tmp_path, "--scenario", "sensor-faults", "--accelerate", "600")
    assert code == 0, capsys.readouterr().err
    lines = [orjson.loads(line) for line in out.read_text().splitlines()]
    readings = [parse_reading(doc) for doc in lines]
    # 20 ticks of 0.1 s wall time, 60 s of event time each (x600); dropouts leave gaps.
    ts = sorted({r.ts_ms for r in readings})
    assert ts[0] == 1_784_066_400_000 and all(b - a == 60_000 for a, b in zip(ts, ts[1:], strict=False))
    truth = [orjson.loads(line) for line in labels.read_text().splitlines()]
    assert {t["anomaly"] for t in truth} == {"stuck", "dropout", "spike", "drift"}
    dropped = {t["sensor_id"] for t in truth if t["anomaly"] == "dropout"}
    for t in truth:
        assert set(t) == {"sensor_id", "kind", "anomaly", "start_ms", "end_ms", "magnitude",
                          "source"}
        if t["sensor_id"] in dropped:
            seen = {r.ts_ms for r in readings if r.sensor_id == t["sensor_id"]}
            assert not any(t["start_ms"] <= s < t["end_ms"] for s in seen)
    err = capsys.readouterr().err
    assert "spike injected (sensor-faults#2)" in err


def test_same_seed_same_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = (_file_run(tmp_path / d, "--scenario", "pipe-burst-qingdao",
                               "--accelerate", "100") for d in "ab")
    assert first[0] == second[0] == 0
    assert first[1].read_bytes() == second[1].read_bytes()
    assert first[2].read_bytes() == second[2].read_bytes()


def test_late_fraction_delivers_out_of_order_but_all(tmp_path):
    code, out, _ = _file_run(tmp_path, "--late-fraction", "0.2", "--breach-every", "0",
                             name="out.csv")
    assert code == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 3200
    ts = [int(r["ts_ms"]) for r in rows]
    assert sum(b < a for a, b in zip(ts, ts[1:], strict=False)) > 10  # out of order
    assert len({(r["sensor_id"], r["ts_ms"]) for r in rows}) == 3200  # none lost or doubled


def test_http_sink_unreachable_exits_naming_the_api(capsys):
    api = f"http://127.0.0.1:{free_port()}"
    code = main(["--sensors", "10", "--count", "10", "--sink", "http", "--api", api,
                 "--give-up", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot reach the API at {api}/v1/readings within 1s" in err
    assert "Traceback" not in err


class Refusing(FakeApi):
    """The API to a request without a valid key (401), or with a key whose role may not post
    readings (403 without ``rejected``), as api/auth.py answers."""

    status = 401
    seen = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.read_body()
        type(self).seen += 1
        detail = ("invalid API key: it matches no configured key" if self.status == 401 else
                  "this viewer key may only read; POST /v1/readings needs an integrator or "
                  "admin key")
        self.answer(self.status, {"detail": detail})


@pytest.mark.parametrize(("status", "says"), [
    (401, "(invalid API key: it matches no configured key); stopping: give an integrator or "
          "admin key with --api-key, see docs/api.md"),
    (403, "(this viewer key may only read; POST /v1/readings needs an integrator or admin "
          "key); stopping: give an integrator or admin key with --api-key (a viewer or "
          "operator key may not post readings), see docs/api.md"),
])
def test_a_refused_key_stops_the_http_run_at_its_first_request(status, says, capsys):
    """A wrong or missing --api-key was counted as an error per request and the run went on
    sending into the wall: 20 refused requests here, the whole --count or --duration."""
    Refusing.status, Refusing.seen = status, 0
    with serving(Refusing) as api:
        code = main(["--sensors", "1000", "--rate", "100000", "--count", "20000", "--sink",
                     "http", "--api", api, "--api-key", "wrong"])
    err = capsys.readouterr().err
    assert code == 1
    assert Refusing.seen == 1
    assert (f"sensors_sim: the API at {api}/v1/readings refused the key: HTTP {status} {says}"
            in err.splitlines()), err
    assert "Traceback" not in err


def test_file_sink_needs_out(capsys):
    with pytest.raises(SystemExit):
        main(["--sink", "file"])
    assert "--sink file needs --out" in capsys.readouterr().err


def test_an_accelerated_run_into_the_pipeline_starts_in_the_past_to_end_near_the_clock():
    """The pipeline ignores readings dated over 5 min past its clock, so an accelerated run
    into Kafka or the API with a --duration starts its event time that far back."""
    from sensors_sim.cli import _start_ms, build_parser

    now = 1_790_000_000_000
    parse = build_parser().parse_args
    start, note = _start_ms(parse(["--accelerate", "60", "--duration", "180"]), now)
    assert start == now - 180 * 59 * 1000 and "2.95 h ago" in note
    start, note = _start_ms(parse(["--accelerate", "60"]), now)
    assert start == now and "after 5 s" in note and "--duration" in note
    assert _start_ms(parse(["--accelerate", "60", "--duration", "180", "--start",
                            "2026-01-01T00:00:00Z"]), now) == (1_767_225_600_000, None)
    assert _start_ms(parse(["--accelerate", "60", "--duration", "9", "--sink", "file"]),
                     now) == (now, None)
    assert _start_ms(parse([]), now) == (now, None)


def test_a_start_whose_event_time_is_or_gets_ahead_of_the_clock_is_warned_of():
    """The worker drops readings dated over 5 min past its clock after Kafka acknowledged
    them: a --start an hour ahead sent a whole run to be dropped, and the run said nothing."""
    from sensors_sim.cli import _start_ms, build_parser

    now = 1_790_000_000_000
    parse = build_parser().parse_args
    hour_ahead = format_ts(now + 3_600_000)
    start, note = _start_ms(parse(["--start", hour_ahead]), now)
    assert start == now + 3_600_000
    assert note.startswith(f"warning: --start {hour_ahead} is 60.0 min past the clock")
    hour_ago = format_ts(now - 3_600_000)
    # x10 from an hour ago: (3,600 + 300) s of event time ahead of the clock after 433 s.
    _, note = _start_ms(parse(["--start", hour_ago, "--accelerate", "10"]), now)
    assert "passes the clock by 5 min after 433 s" in note and "--duration of 433 s or less" in note
    _, note = _start_ms(parse(["--start", hour_ago, "--accelerate", "10", "--duration", "600"]),
                        now)
    assert "after 433 s" in note
    assert _start_ms(parse(["--start", hour_ago, "--accelerate", "10", "--duration", "400"]),
                     now) == (now - 3_600_000, None)
    # Both figures are whole seconds, rounded down alike (433.6 s said "after 434 s" and
    # "--duration of 433 s or less").
    _, note = _start_ms(parse(["--start", format_ts(now - 3_602_400), "--accelerate", "10"]), now)
    assert "after 433 s" in note and "--duration of 433 s or less" in note
    assert _start_ms(parse(["--start", hour_ahead, "--sink", "file", "--out", "x"]),
                     now) == (now + 3_600_000, None)  # a file is not judged by the clock


def test_a_scenario_that_does_not_fit_the_fleet_leaves_the_output_alone(tmp_path, capsys):
    """It was found at the first tick, after the file sink had emptied the file."""
    out = tmp_path / "keep.jsonl"
    out.write_text("1\n2\n")
    scenario = tmp_path / "sc.json"
    scenario.write_text('{"anomalies": [{"type": "burst", "place": "999999"}]}')
    code = main(["--sensors", "100", "--count", "200", "--sink", "file", "--out", str(out),
                 "--scenario", str(scenario)])
    assert code == 1 and "no sensor of this fleet lies in 999999" in capsys.readouterr().err
    assert out.read_text() == "1\n2\n"


def test_a_rate_the_fleet_cannot_make_is_said(tmp_path, capsys):
    """--rate 100000 with 100 sensors ran at 1,000/s; only the banner's target showed it."""
    assert main(["--sensors", "100", "--rate", "100000", "--count", "100", "--sink", "file",
                 "--out", str(tmp_path / "o.jsonl")]) == 0
    assert ("100 sensors reporting at most every 0.1 s make 1,000 readings/s, not 100,000; "
            "give --sensors 10,000 or more") in capsys.readouterr().err


def test_faults_a_new_pipeline_cannot_find_yet_are_said(tmp_path, capsys):
    """`sensor-faults` injects its stuck sensors 1 min and its spikes 3 min into the run:
    a fresh `cityagent up` learns each sensor first (flatline 10 windows, spike 20), found
    none of them in a chaos run, and nothing told the load tester why."""
    code, _, _ = _file_run(tmp_path, "--scenario", "sensor-faults", "--accelerate", "10")
    err = capsys.readouterr().err
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning:" in line]
    assert len(warnings) == 3, err
    assert ("stuck (sensor-faults#0) starts 1 min into the run" in warnings[0]
            and "flatline detector judge a sensor only after 10 windows" in warnings[0]
            and "10 min of event time" in warnings[0] and "always flat" in warnings[0])
    assert ("spike (sensor-faults#2) starts 3 min into the run" in warnings[1]
            and "spike detector judge a sensor only after 20 windows" in warnings[1])
    assert "give --warm-up 17m or more" in warnings[2]


def test_a_warm_up_delays_the_scenario_and_silences_the_warning(tmp_path, capsys):
    code, out, labels = _file_run(tmp_path, "--scenario", "sensor-faults", "--accelerate",
                                  "6000", "--warm-up", "17m")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning" not in err and "scenario sensor-faults after a 17 min warm-up" in err
    first = min(parse_reading(orjson.loads(line)).ts_ms for line in out.read_text().splitlines())
    assert first == 1_784_066_400_000  # _START
    # Ticks of 0.1 s wall time, 600 s of event time each: the warm-up ends at the 3rd tick
    # (1,020 s <= 1,200 s), and the scenario's offsets count from there.
    truth = [orjson.loads(line) for line in labels.read_text().splitlines()]
    stuck = [t for t in truth if t["anomaly"] == "stuck"]
    assert len(stuck) == 3 and {t["start_ms"] for t in stuck} == {first + 1_200_000 + 60_000}
    with pytest.raises(SystemExit):
        main(["--warm-up", "soon"])
    assert "--warm-up: expected a duration like 600, '20m' or '1h'; got 'soon'" in (
        capsys.readouterr().err)


_FULL = "/dev/full"  # every write fails with ENOSPC, as on a full disk


@pytest.mark.skipif(not os.path.exists(_FULL), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("count", [3000, 10])
def test_a_full_disk_under_the_file_sink_is_one_line_and_no_reading_counted(count, capsys):
    """A full disk ended the run in an OSError traceback; a write that failed only at the
    last flush (a few readings, still in the buffer) left them counted as acknowledged."""
    code = main(["--sensors", "1000", "--rate", "100000", "--count", str(count), "--sink",
                 "file", "--out", _FULL])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"sensors_sim: cannot write readings to {_FULL}: [Errno 28] No space left" in err
    assert ", 0 acknowledged" in err.splitlines()[-1]


@pytest.mark.skipif(not os.path.exists(_FULL), reason="needs Linux's /dev/full")
def test_labels_that_cannot_be_written_stop_the_run_in_one_line(tmp_path, capsys):
    scenario = tmp_path / "now.json"
    scenario.write_text('{"anomalies": [{"type": "burst", "place": "370200"}]}')
    code = main(["--sensors", "1000", "--rate", "100000", "--count", "3000", "--sink", "file",
                 "--out", str(tmp_path / "o.jsonl"), "--labels", _FULL, "--scenario",
                 str(scenario)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.count(f"sensors_sim: cannot write labels to {_FULL}: [Errno 28]") == 1


@pytest.mark.parametrize(("signo", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 1)])
def test_a_stopped_run_into_an_unreachable_api_ends_within_the_flush_timeout(signo, code):
    """Stopped, it sent its held late readings with a fresh --give-up each (a Ctrl-C waited
    30 s more by default, saying nothing), and a SIGTERM during a retry waited for all of
    it. Now the retries end within --flush-timeout; here --give-up 600 would time out.

    The API is a socket that takes the first request and never answers: the signal comes
    while that request is under way, then the socket closes and every retry is refused."""
    listener = socket.create_server(("127.0.0.1", 0))
    api = f"http://127.0.0.1:{listener.getsockname()[1]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sensors_sim", "--sensors", "100", "--sink", "http", "--api",
         api, "--late-fraction", "0.5", "--give-up", "600", "--flush-timeout", "1"],
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        listener.settimeout(60)  # a guard, not a speed check
        conn, _ = listener.accept()
        proc.send_signal(signo)
        conn.close()
        listener.close()
        _, err = proc.communicate(timeout=120)  # a guard against the 600 s
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert f"cannot reach the API at {api}/v1/readings before stopping" in err
    assert "Traceback" not in err


def test_a_registry_or_labels_file_that_cannot_be_written_is_named(tmp_path, capsys):
    """They said only "[Errno 21] Is a directory: '...'" (of /proc/version, "[Errno 5]
    Input/output error"): not which option's file, nor that it was to be written."""
    assert main(["--sensors", "10", "--registry", str(tmp_path)]) == 1
    assert (f"sensors_sim: cannot write the registry to {tmp_path}: Is a directory"
            in capsys.readouterr().err)
    missing = tmp_path / "no" / "labels.jsonl"
    earlier = tmp_path / "o.jsonl"
    earlier.write_text("yesterday's readings\n")
    assert main(["--sensors", "10", "--count", "10", "--sink", "file", "--out",
                 str(earlier), "--labels", str(missing)]) == 1
    assert (f"sensors_sim: cannot write labels to {missing}: No such file or directory"
            in capsys.readouterr().err)
    # The labels' file is opened before the sink's: a run that cannot start leaves --out as
    # it was (it emptied it).
    assert earlier.read_text() == "yesterday's readings\n"


def test_a_run_stops_where_event_time_reaches_2100(tmp_path, capsys):
    """No reading may be dated 2100 or later: --accelerate 1e9 wrote such readings (replay
    and the API refuse them), and 1e300 ended in an OverflowError traceback."""
    out = tmp_path / "o.jsonl"
    code = main(["--sensors", "100", "--rate", "100000", "--count", "300", "--sink", "file",
                 "--out", str(out), "--start", "2099-12-31T23:59:00Z", "--accelerate", "600"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert ("event time reached 2100-01-01T00:00:00.000Z, from which no reading may be dated: "
            "stopping after 1 ticks") in err
    lines = out.read_text().splitlines()
    assert len(lines) == 100 and all(parse_reading(orjson.loads(line)) for line in lines)
    assert main(["--sensors", "100", "--count", "300", "--sink", "file", "--out", str(out),
                 "--accelerate", "1e300"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_late_readings_never_sent_are_not_said_to_be_delivered(capsys):
    """A run that stopped at an unreachable API said "N delivered late" of the readings it
    held back and, the sink unreachable, never sent."""
    api = f"http://127.0.0.1:{free_port()}"
    code = main(["--sensors", "100", "--count", "300", "--sink", "http", "--api", api,
                 "--give-up", "0.5", "--late-fraction", "0.5"])
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert "held back late and never sent" in summary and "late," not in summary, summary


def test_out_and_labels_of_the_same_file_are_refused(tmp_path, capsys):
    """Both were opened for writing: the labels overwrote the first readings, and the run
    said all 3,000 readings were written."""
    same = tmp_path / "run.jsonl"
    with pytest.raises(SystemExit) as exc:
        main(["--sink", "file", "--out", str(same), "--labels",
              str(tmp_path / "." / "run.jsonl"), "--count", "10"])
    assert exc.value.code == 2
    assert f"--out and --labels name the same file ({same}): give two" in (
        capsys.readouterr().err)
    assert not same.exists()


class _Refuses(FakeApi):
    """Every reading invalid (422): counted as an error, and the run goes on (a 401 or 403
    of the key stops it at once: test_a_refused_key_stops_the_http_run_at_its_first_request)."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.read_body()
        self.answer(422, {"detail": "all 10 readings are invalid; none was accepted",
                          "accepted": 0})


def test_progress_says_what_the_errors_are(capsys):
    """Refused readings ran a whole --duration at "errors N" with no reason, the 422 only in
    the summary at the end. Progress (every 3 s) now says a new error once."""
    with serving(_Refuses) as api:
        code = main(["--sensors", "10", "--rate", "100", "--duration", "4.5", "--sink", "http",
                     "--api", api, "--api-key", "x"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 1
    said = [line for line in lines if line.startswith("sensors_sim: warning: HTTP 422: ")]
    assert len(said) == 1 and "readings are invalid" in said[0], lines


def test_the_registry_gives_the_report_interval_in_event_time(tmp_path, capsys):
    """The detectors judge by event time, in which a sensor reports every tick x --accelerate:
    the registry said the wall tick (2 s at x10, not 20 s), so a sensor one tick late, quiet
    for 40 s, passed the silence limit (3 intervals, at least 30 s) and was called silent."""
    path = tmp_path / "fleet.csv"
    assert main(["--sensors", "2000", "--rate", "1000", "--accelerate", "10", "--registry",
                 str(path)]) == 0
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert {row["expected_interval_s"] for row in rows} == {"20.0"}


def test_count_writes_no_label_for_a_sensor_it_cut_from_the_last_tick(tmp_path, capsys):
    """--count ends a run inside a tick: the sensors after the cut send nothing of it, so
    an injection starting there never reached them. Their labels were written all the same
    (a load test scored by them counted misses of anomalies no reading carried)."""
    scenario = tmp_path / "now.json"
    scenario.write_text('{"anomalies": [{"type": "burst", "place": "370200"}]}')
    out, labels = tmp_path / "o.jsonl", tmp_path / "labels.jsonl"
    assert main(["--sensors", "1000", "--rate", "100000", "--count", "500", "--sink", "file",
                 "--out", str(out), "--labels", str(labels), "--scenario", str(scenario)]) == 0
    err = capsys.readouterr().err
    sent = {orjson.loads(line)["sensor_id"] for line in out.read_text().splitlines()}
    labelled = [orjson.loads(line)["sensor_id"] for line in labels.read_text().splitlines()]
    assert len(sent) == 500
    assert labelled and set(labelled) <= sent
    # Of the whole fleet the scenario hits more sensors than the 500 sent carry.
    assert main(["--sensors", "1000", "--rate", "100000", "--count", "1000", "--sink", "file",
                 "--out", str(out), "--labels", str(labels), "--scenario", str(scenario)]) == 0
    whole = labels.read_text().splitlines()
    assert len(whole) > len(labelled)
    assert f", {len(labelled)} labels" in err and f", {len(whole)} labels" in capsys.readouterr().err


def test_bench_gives_up_on_an_unreachable_broker_after_the_connect_timeout():
    """--bench tried an unreachable --bootstrap for 30 s whatever --connect-timeout said
    (and said nothing meanwhile). With 1 s it ends long before the guard's 20 s."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "sensors_sim", "--bench", "--bootstrap", f"127.0.0.1:{port}",
         "--connect-timeout", "1"],
        capture_output=True, text=True, timeout=20)  # a guard, not a speed check
    assert proc.returncode == 1, proc.stderr
    assert f"bench failed: cannot reach the Kafka brokers at 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_large_fleet_is_announced_before_it_is_laid_out(tmp_path, capsys):
    """A million sensors took seconds (and gigabytes) before the run's first line."""
    out = tmp_path / "o.jsonl"
    assert main(["--sensors", "250000", "--count", "1", "--sink", "file", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert (err.index("sensors_sim: laying out 250,000 sensors and their models")
            < err.index("sensors_sim: 250000 sensors -> file"))
    assert main(["--sensors", "1000", "--count", "1", "--sink", "file", "--out", str(out)]) == 0
    assert "laying out" not in capsys.readouterr().err


def test_progress_is_shown_between_ticks_far_apart(tmp_path, capsys):
    """1,000 sensors at 100 readings/s tick every 10 s: progress came only after a tick, so
    this 8 s run (one tick) showed none, and a large fleet at the default rate (250,000 at
    2,000/s: a tick every 125 s) was silent for minutes. The wait between ticks now wakes
    for each progress line (every 3 s)."""
    out = tmp_path / "o.jsonl"
    assert main(["--sensors", "1000", "--rate", "100", "--duration", "8", "--sink", "file",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    lines = re.findall(r"^sensors_sim: +\d+\.\ds sent 1,000 acked 1,000 ", err, re.M)
    assert lines, err
    assert len(out.read_text().splitlines()) == 1000  # still one tick: none sent early
