"""`cityagent up --simulate` and the simulator's options, without a broker: they are checked
as `cityagent sim` checks them, refused without --simulate, and reach the simulator `up`
starts (its command line) and the registry it writes first (the same fleet)."""

from __future__ import annotations

import json
import re
import socket
import tempfile

import pytest

import control.up
from cityagent.errors import ConfigError, PortInUse
from control.cli import build_parser, main, up_options
from control.up import UpOptions, fleet_args, simulator_args
from sensors_sim.cli import RUN_OPTIONS, fleet_signals
from sensors_sim.cli import build_parser as sim_parser
from sensors_sim.cli import main as sim_main
from tests.helpers import free_port

#: A value of each simulator option of `up`, none of them the simulator's default.
GIVEN = {
    "seed": ["--seed", "3"],
    "scenario": ["--scenario", "sensor-faults"],
    "warm_up": ["--warm-up", "17m"],
    "accelerate": ["--accelerate", "10"],
    "start": ["--start", "2026-07-15T06:00:00+08:00"],
    "late_fraction": ["--late-fraction", "0.25"],
}


@pytest.fixture
def nothing_starts(monkeypatch):
    """A tripwire: `up` must refuse before it starts a process (a broker, a worker)."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("cityagent up started the pipeline")

    monkeypatch.setattr(control.up, "Supervisor", refuse)


def test_every_option_of_the_simulator_that_up_takes_is_in_the_table():
    assert set(GIVEN) == set(RUN_OPTIONS)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--seed", "-1"], "--seed: must be 0 or more"),
        (["--seed", "x"], "--seed: must be a whole number"),
        (["--warm-up", "soon"], "--warm-up: expected a duration like 600, '20m' or '1h'"),
        (["--warm-up", "5 weeks"], "--warm-up: expected a duration"),
        (["--accelerate", "0"], "--accelerate: must be positive"),
        (["--accelerate", "inf"], "--accelerate: must be a finite number"),
        (["--start", "yesterday"], "--start: is not an RFC 3339 time"),
        (["--start", "1"], "--start: must lie between 2000 and 2100"),
        (["--late-fraction", "1.5"], "--late-fraction: must lie between 0 and 1"),
        # No bound: the simulator `up` started ran the machine out of memory laying it out.
        (["--sensors", "50000000"], "--sensors: must be at most 1,000,000 (~1.6 KB of memory"),
    ],
)
def test_bad_values_are_refused_as_sim_refuses_them(argv, says, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["up", "--simulate", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    up_line = err.strip().splitlines()[-1]
    assert up_line.startswith("cityagent up: error: argument ")
    with pytest.raises(SystemExit) as exc:
        sim_main(argv)
    assert exc.value.code == 2
    sim_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert up_line.removeprefix("cityagent up: ") == sim_line.removeprefix("cityagent sim: ")


@pytest.mark.parametrize("dest", sorted(GIVEN))
def test_a_simulator_option_without_simulate_is_an_error(dest, capsys, nothing_starts):
    with pytest.raises(SystemExit) as exc:
        main(["up", *GIVEN[dest]])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    flag = GIVEN[dest][0]
    assert f"cityagent up: error: {flag} is an option of the simulator: give --simulate too" in err


def test_several_without_simulate_are_named_together(capsys, nothing_starts):
    with pytest.raises(SystemExit) as exc:
        main(["up", "--scenario", "quiet-day", "--accelerate", "5"])
    assert exc.value.code == 2
    assert ("--scenario, --accelerate are options of the simulator: give --simulate too"
            in capsys.readouterr().err)


@pytest.mark.parametrize(
    ("scenario", "says"),
    [
        ("nope", "no scenario file or built-in scenario 'nope'; built-ins: "),
        ("{tmp}/missing.json", "cannot read scenario {tmp}/missing.json"),
        ("{tmp}/bad.json", "{tmp}/bad.json is not valid JSON"),
        ("{tmp}/elsewhere.json", "{tmp}/elsewhere.json#0: no sensor of this fleet lies in 999999"),
        # A city's name for its code ended both in a ValueError traceback.
        ("{tmp}/named.json", "{tmp}/named.json: anomalies[0]: 'place' must be a city or "
                             "district code like \"370100\" or \"370102\"; got 'jinan'"),
        # Not UTF-8 (saved as GBK): a UnicodeDecodeError traceback.
        ("{tmp}/gbk.json", "{tmp}/gbk.json is not UTF-8 text, as a scenario file must be "
                           "(invalid start byte at byte 43)"),
    ],
)
def test_a_scenario_sim_cannot_use_stops_up_before_it_starts_anything(
        scenario, says, tmp_path, capsys, nothing_starts):
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "elsewhere.json").write_text('{"anomalies": [{"type": "burst", "place": "999999"}]}')
    (tmp_path / "named.json").write_text('{"anomalies": [{"type": "burst", "place": "jinan"}]}')
    (tmp_path / "gbk.json").write_bytes('{"anomalies": [{"type": "burst", "place": "济南"}]}'
                                        .encode("gbk"))
    scenario, says = scenario.format(tmp=tmp_path), says.format(tmp=tmp_path)
    assert main(["up", "--simulate", "--sensors", "100", "--scenario", scenario]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cityagent: {says}"), lines
    # `cityagent sim` says the same of it (and exits 1: it had started nothing either).
    assert sim_main(["--sensors", "100", "--count", "1", "--sink", "file",
                     "--out", str(tmp_path / "o.jsonl"), "--scenario", scenario]) == 1
    assert f"sensors_sim: {says}" in capsys.readouterr().err


@pytest.mark.parametrize("variable, content, says", [
    ("CITYAGENT_ZONES", '{"type": "FeatureCollection", "features": [{"type": "Feature"}]}',
     "{path}: 'properties' of feature #0 must be an object"),
    ("CITYAGENT_ALERTING", "[lifecycle]\nresolve_after = 900\n",
     "{path} [lifecycle]: unknown key 'resolve_after'"),
    ("CITYAGENT_DETECTION", "[windows\n", "cannot read detection settings from {path}"),
])
def test_a_bad_settings_file_stops_up_before_it_starts_anything(
        variable, content, says, tmp_path, monkeypatch, capsys, nothing_starts):
    """Before, `up` started the broker, the topics, the workers and the API; each child
    printed the error and exited, was started again after its wait, and `up` stopped with
    exit code 1 at the fourth exit, some 20 s later."""
    path = tmp_path / "settings-file"
    path.write_text(content)
    monkeypatch.setenv(variable, str(path))
    assert main(["up"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cityagent: "), lines
    assert says.format(path=path) in lines[0]


def test_a_warm_up_without_a_scenario_stops_up_before_it_starts_anything(tmp_path, capsys,
                                                                        nothing_starts):
    """--warm-up delays only a scenario: without one it did nothing, and the breaches of the
    demo (or of --breach-every) were injected from the first tick."""
    says = "--warm-up delays a --scenario: give one, or leave --warm-up out"
    assert main(["up", "--simulate", "--sensors", "100", "--warm-up", "20m"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"cityagent: {says}"]
    assert sim_main(["--sensors", "100", "--count", "1", "--sink", "file",
                     "--out", str(tmp_path / "o.jsonl"), "--warm-up", "20m"]) == 1
    assert f"sensors_sim: {says}" in capsys.readouterr().err


def test_a_scenario_that_fits_only_another_seeds_fleet_is_judged_by_the_seed(tmp_path, capsys,
                                                                             nothing_starts):
    """The check builds the fleet the simulator will send: with up's --sensors and --seed."""
    one = sim_parser().parse_args(["--sensors", "20", "--seed", "1"])
    ids = set(fleet_signals(one).sensor_id.tolist())
    two = set(fleet_signals(sim_parser().parse_args(["--sensors", "20", "--seed", "2"]))
              .sensor_id.tolist())
    only_one = sorted(ids - two)
    assert only_one, "seeds 1 and 2 gave the same 20 sensor ids"
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"anomalies": [{"type": "stuck", "sensors": [only_one[0]]}]}))
    assert main(["up", "--simulate", "--sensors", "20", "--seed", "2", "--scenario",
                 str(path)]) == 2
    assert only_one[0] in capsys.readouterr().err
    with pytest.raises(AssertionError, match="started the pipeline"):
        main(["up", "--simulate", "--sensors", "20", "--seed", "1", "--scenario", str(path)])


def _up(*argv: str) -> UpOptions:
    return up_options(build_parser().parse_args(["up", "--simulate", *argv]))


def test_the_simulator_up_starts_gets_every_option_as_sim_would_read_it():
    given = [word for dest in sorted(GIVEN) for word in GIVEN[dest]]
    options = _up("--sensors", "300", "--rate", "3000", *given)
    passed = sim_parser().parse_args(simulator_args(options))
    direct = sim_parser().parse_args(["--sensors", "300", "--rate", "3000", *given])
    default = sim_parser().parse_args([])
    for dest in RUN_OPTIONS:
        assert getattr(passed, dest) == getattr(direct, dest) != getattr(default, dest), dest
    assert (passed.sensors, passed.rate) == (300, 3000.0)
    assert passed.warm_up == 17 * 60 and passed.start == 1_784_066_400_000


def test_options_not_given_are_left_to_the_simulator():
    args = simulator_args(_up())
    assert args == ["--sensors", "2000", "--rate", "1000.0", "--breach-every", "10.0"]
    passed = sim_parser().parse_args(args)
    default = sim_parser().parse_args([])
    for dest in RUN_OPTIONS:
        assert getattr(passed, dest) == getattr(default, dest), dest


def test_a_scenario_replaces_the_demo_breaches_as_in_sim():
    """up always passed --breach-every 10, so breaches were injected into a scenario run."""
    assert "--breach-every" in simulator_args(_up())
    with_scenario = simulator_args(_up("--scenario", "quiet-day"))
    assert "--breach-every" not in with_scenario
    assert sim_parser().parse_args(with_scenario).breach_every is None  # sim: 0 with --scenario


@pytest.mark.parametrize("seconds", [0.0, 0.25, 1020.0, 1e-5, 3.5e7])
def test_a_warm_up_reaches_the_simulator_unchanged(seconds):
    passed = sim_parser().parse_args(simulator_args(UpOptions(simulate=True, warm_up_s=seconds)))
    assert passed.warm_up == pytest.approx(seconds, abs=1e-3)


def test_the_registry_describes_the_fleet_the_simulator_sends():
    """The workers judge the simulated gauges by the registry `up` writes first: it must be
    written for the same --sensors, --rate and --seed (the seed was not passed at all)."""
    options = _up("--sensors", "300", "--rate", "3000", "--seed", "3", "--scenario", "quiet-day",
                  "--accelerate", "10")
    registry = sim_parser().parse_args(fleet_args(options))
    simulator = sim_parser().parse_args(simulator_args(options))
    # --accelerate: the report interval is in event time (it was left out: the wall tick).
    for dest in ("sensors", "rate", "seed", "accelerate"):
        assert getattr(registry, dest) == getattr(simulator, dest), dest
    assert registry.seed == 3 and registry.scenario is None


@pytest.mark.parametrize(("port", "says"), [("70000", "must be a TCP port, 1 to 65535; got 70000"),
                                            ("0", "must be positive; got 0")])
def test_a_port_no_socket_takes_is_an_argument_error(port, says, capsys, nothing_starts):
    """--port 70000 ended in an OverflowError traceback from bind() (exit code 1)."""
    with pytest.raises(SystemExit) as exc:
        main(["up", "--port", port])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"cityagent up: error: argument --port: {says}" in err and "Traceback" not in err


def test_bootstrap_servers_that_are_not_host_port_stop_up_before_it_starts_anything(
        monkeypatch, capsys, nothing_starts):
    """Unchecked, `up` waited 30 s for '127.0.0.1:abc', then failed on int('abc')."""
    monkeypatch.setenv("CITYAGENT_KAFKA", "127.0.0.1:abc")
    assert main(["up"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "cityagent: CITYAGENT_KAFKA must be the bootstrap servers as host:port, comma-separated "
        "(e.g. kafka-1:9092,kafka-2:9092; a port of 1 to 65535); '127.0.0.1:abc' is not one; "
        "got '127.0.0.1:abc'"]


def test_the_api_port_is_checked_as_uvicorn_binds_it_ipv6_too():
    """An IPv6 API host (``CITYAGENT_API_HOST=::1``, which uvicorn binds) was checked on an IPv4
    socket, and `up` refused every port of it as 'already in use'."""
    with socket.socket(socket.AF_INET6) as holder:
        try:
            holder.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback on this machine")
        taken = holder.getsockname()[1]
        control.up._check_port_free("::1", free_port(), "the API")  # no error: it is free
        holder.listen()
        with pytest.raises(PortInUse, match=f"port {taken} on ::1, wanted by the API, is "
                                            "already in use"):
            control.up._check_port_free("::1", taken, "the API")


@pytest.mark.parametrize(("host", "why"), [("192.0.2.1", "Cannot assign requested address"),
                                           ("no-such-host.invalid", "")])
def test_an_api_host_that_is_not_this_machine_is_named_not_a_port_in_use(host, why):
    """Any failure to bind was 'port N on HOST ... is already in use', a typo'd host too."""
    with pytest.raises(ConfigError, match=f"^the API cannot listen on {re.escape(host)} "
                                          rf"\(CITYAGENT_API_HOST\): {why}.*; give an address of "
                                          "this machine, e.g. 127.0.0.1, 0.0.0.0"):
        control.up._check_port_free(host, free_port(), "the API")


@pytest.mark.parametrize(("argv", "env"), [(["--port", "19555"], {"CITYAGENT_BROKER_PORT": "19555"}),
                                           (["--port", "9092"], {}),
                                           ([], {"CITYAGENT_API_PORT": "9092"})])
def test_an_api_port_that_is_the_embedded_brokers_is_refused_before_anything_starts(
        argv, env, monkeypatch, capsys, nothing_starts):
    """Free when `up` checked it, the port was then taken by the broker, and the API failed to
    bind it four times before `up` stopped everything (exit code 1)."""
    for name in ("CITYAGENT_KAFKA", "CITYAGENT_API_PORT", "CITYAGENT_BROKER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    port = argv[1] if argv else env["CITYAGENT_API_PORT"]
    assert main(["up", *argv]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "cityagent: the API (--port / CITYAGENT_API_PORT) and the embedded broker "
        f"(CITYAGENT_BROKER_PORT) both want port {port}: give them two"]


def test_an_api_port_that_is_the_default_brokers_is_fine_with_an_external_kafka(
        monkeypatch, nothing_starts):
    monkeypatch.setenv("CITYAGENT_KAFKA", "kafka-1:9092")
    with pytest.raises(AssertionError, match="started the pipeline"):
        main(["up", "--port", "9092"])


def test_a_temp_directory_up_cannot_write_is_one_line_before_anything_starts(
        monkeypatch, tmp_path, capsys, nothing_starts):
    """The directory of its logs (and the simulated fleet's registry) could not be made, on a
    full disk or in a temp directory that was gone: a FileNotFoundError or OSError traceback."""
    gone = tmp_path / "gone"
    monkeypatch.setattr(tempfile, "tempdir", str(gone))
    assert main(["up"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"cityagent: cannot make a directory for the logs in {gone} (No such file or "
        "directory); free some space there or set TMPDIR to a writable directory"]


def test_more_workers_than_partitions_is_refused_before_anything_starts(capsys, monkeypatch,
                                                                         nothing_starts):
    """A worker beyond the partitions gets none: 9 workers on 8 partitions started one
    that sat idle, without a word."""
    monkeypatch.delenv("CITYAGENT_PARTITIONS", raising=False)
    assert main(["up", "--workers", "9"]) == 2
    assert capsys.readouterr().err == (
        "cityagent: --workers 9 is more than the 8 partitions of the topics the workers share "
        "(CITYAGENT_PARTITIONS): 1 of them would get none and sit idle; give --workers 8 or "
        "fewer, or raise CITYAGENT_PARTITIONS (new topics only: an existing topic keeps its "
        "count)\n")
    control.up.check_workers(16, 16)  # as many as partitions: each gets one


class _Exited:
    def __init__(self, name: str, pid: int, code: int) -> None:
        self.name, self.pid = name, pid
        self.proc = type("Proc", (), {"returncode": code})()


class _Children:
    """The supervisor `_supervise` watches, with children that have exited; after a few
    rounds of the loop, Ctrl-C (``_Stop``)."""

    def __init__(self, *dead: _Exited, rounds: int = 3) -> None:
        self.dead, self.rounds, self.output_lost = list(dead), rounds, False

    def first_dead(self, skip=()):
        self.rounds -= 1
        if self.rounds < 0:
            raise control.up._Stop("SIGINT")
        return next((c for c in self.dead if c.name not in skip), None)


def _supervise(children: _Children, ended: dict[str, int]) -> list[str]:
    said: list[str] = []
    with pytest.raises(control.up._Stop):
        control.up._supervise(children, control.up.Restarts(lambda _name: 1.0), said.append,
                              None, takeover=False, ended=ended, url="http://127.0.0.1:8000")
    return said


@pytest.mark.parametrize(("code", "says"), [
    (0, "simulator (pid 41) finished (exit code 0): no more simulated readings; the broker, "
        "workers, API and dashboard keep running (http://127.0.0.1:8000) with what they hold; "
        "press Ctrl-C to stop them"),
    (1, "simulator (pid 41) failed (exit code 1; its last lines above say why): no more "
        "simulated readings; the broker, workers, API and dashboard keep running "
        "(http://127.0.0.1:8000) with what they hold; press Ctrl-C to stop them (`up` then "
        "exits with code 1)"),
    (-9, "simulator (pid 41) failed (killed by SIGKILL): no more simulated readings;"),
])
def test_a_simulator_that_exits_leaves_the_pipeline_running_and_says_so(code, says):
    """The simulator's exit stopped everything, the embedded broker too, and with it every
    reading, state and alert of the run (memory only): nothing left to look at."""
    ended: dict[str, int] = {}
    said = _supervise(_Children(_Exited("simulator", 41, code)), ended)
    assert len(said) == 1 and said[0].startswith(says), said  # said once, not again each round
    assert ended == {"simulator": code}


def test_a_worker_that_exits_is_still_started_again_next_to_an_ended_simulator():
    children = _Children(_Exited("simulator", 41, 0), _Exited("worker-1", 42, 1), rounds=2)
    said = _supervise(children, {})
    assert said[0].startswith("simulator (pid 41) finished")
    assert said[1].startswith("worker-1 (pid 42) exited with code 1; starting it again in 1 s")


def test_output_whose_reader_went_away_stops_up_with_141(monkeypatch):
    """`up | head`: the reader is gone, nobody sees what `up` says; it stops as SIGPIPE would
    have stopped it (after waiting a moment for a Ctrl-C that may have gone to both)."""
    monkeypatch.setattr(control.up, "OUTPUT_LOST_GRACE_S", 0.0)
    children = _Children()
    children.output_lost = True
    assert control.up._supervise(children, control.up.Restarts(lambda _name: 1.0), print,
                                 None, takeover=False) == control.up.OUTPUT_LOST_CODE == 141
