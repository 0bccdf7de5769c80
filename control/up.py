"""`cityagent up`: broker (unless external), topics, workers, API and, with --simulate, sensors."""

from __future__ import annotations

import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cityagent.errors import CityAgentError, ConfigError, PortInUse
from cityagent.readings import format_ts
from cityagent.settings import Settings
from control.broker import EmbeddedBroker, wait_for_kafka
from control.restarts import RESTART_WINDOW_S, Restarts, first_restart_delay_s
from control.supervisor import Child, Supervisor
from control.topics import ensure_topics, pipeline_topics, short_retention

__all__ = ("UpOptions", "run_up", "check_settings_files", "check_workers", "fleet_args",
           "simulator_args", "api_argv", "BrokerMemory", "EMBEDDED_CHECKPOINT_S",
           "API_STOP_GRACE_S", "OUTPUT_LOST_CODE")

#: How long the API, told to stop (SIGTERM), waits for open requests before it closes them.
#: uvicorn waits for ever by default, and a dashboard's alert stream never ends by itself: the
#: API would refuse new calls yet keep the page's stream (实时) until every page closed.
API_STOP_GRACE_S = 3


def api_argv(host: str, port: int) -> list[str]:
    """The API process as `cityagent up` runs it."""
    return [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app_from_env",
            "--host", host, "--port", str(port), "--log-level", "warning",
            "--timeout-graceful-shutdown", str(API_STOP_GRACE_S)]


@dataclass(frozen=True)
class UpOptions:
    workers: int = 1
    port: int | None = None
    simulate: bool = False
    sensors: int = 2000
    rate: float = 1000.0
    #: The legacy breach schedule of the demo; a scenario replaces it (as in `cityagent sim`).
    breach_every_s: float = 10.0
    # The simulator's options of sensors_sim.cli.add_run_arguments; None: the simulator's default.
    seed: int | None = None
    scenario: str | None = None
    warm_up_s: float | None = None
    accelerate: float | None = None
    start_ms: int | None = None
    late_fraction: float | None = None


def fleet_args(options: UpOptions) -> list[str]:
    """The simulator's arguments that choose its fleet and report interval (in event time:
    the tick times --accelerate): the registry `up` writes for the workers must describe the
    fleet the simulator sends."""
    args = ["--sensors", str(options.sensors), "--rate", str(options.rate)]
    if options.seed is not None:
        args += ["--seed", str(options.seed)]
    if options.accelerate is not None:
        args += ["--accelerate", repr(options.accelerate)]
    return args


def simulator_args(options: UpOptions) -> list[str]:
    """The arguments of the simulator `up --simulate` starts (``python -m sensors_sim ...``)."""
    args = fleet_args(options)
    if options.scenario is not None:
        args += ["--scenario", options.scenario]
    else:
        args += ["--breach-every", str(options.breach_every_s)]
    if options.warm_up_s is not None:
        args += ["--warm-up", _seconds_text(options.warm_up_s)]
    if options.start_ms is not None:
        args += ["--start", format_ts(options.start_ms)]
    if options.late_fraction is not None:
        args += ["--late-fraction", repr(options.late_fraction)]
    return args


def _seconds_text(seconds: float) -> str:
    """Seconds as the simulator's --warm-up reads them (digits, no exponent)."""
    text = repr(float(seconds))
    return text if "e" not in text else f"{seconds:.3f}"


#: Detection checkpoint interval of the workers on the embedded broker, unless
#: ``CITYAGENT_CHECKPOINT_S`` is set. Tansu's memory storage frees nothing while it runs: with
#: the default 10 s, ``up --simulate`` (2,000 sensors) grew it by ~23 MB a minute, with 60 s by
#: ~6.6 (each checkpoint writes every sensor's state, ~1.8 MB). A longer interval only means
#: more readings applied again after a crash (exactly: docs/architecture.md), and SIGTERM
#: still checkpoints at once.
EMBEDDED_CHECKPOINT_S = 60.0
#: The exit code of a worker or the API that found a setting wrong as it started
#: (``streams/__main__.py``, ``api.main.create_app_from_env``). It was started again three
#: times, each saying the same line, before `up` stopped everything with exit code 1.
CONFIG_EXIT_CODE = 2
#: How often ``up`` reports the embedded broker's memory.
MEMORY_REPORT_S = 600.0
#: The exit code of an `up` whose output's reader went away while it ran (``up | head``):
#: 128 + SIGPIPE, what a shell reports for a tool cut off by its reader.
OUTPUT_LOST_CODE = 141
#: How long `up` waits, once its output's reader is gone, for the Ctrl-C that went to the
#: reader too (``up | tee log`` in a terminal): that is a stop asked for, exit code 0.
OUTPUT_LOST_GRACE_S = 1.0


class _Stop(Exception):
    pass


class BrokerMemory:
    """Reports of the embedded broker's memory and how fast it grows."""

    def __init__(self, broker: EmbeddedBroker, now: float | None = None) -> None:
        self.broker = broker
        self.started = time.monotonic() if now is None else now
        self.last_report = self.started
        self.first = broker.memory_bytes()

    def due(self, now: float) -> bool:
        return now - self.last_report >= MEMORY_REPORT_S

    def line(self, now: float, held: int | None = None) -> str | None:
        """``embedded broker: 812 MB in memory, +1,270 MB/hour since it started; …``."""
        self.last_report = now
        held = self.broker.memory_bytes() if held is None else held
        if held is None:
            return None
        text = f"embedded broker: {held / 1e6:,.0f} MB in memory"
        hours = (now - self.started) / 3600.0
        if self.first is not None and hours >= 5 / 60:  # sooner, start-up dominates
            text += f", {(held - self.first) / 1e6 / hours:+,.0f} MB/hour since it started"
        return (text + "; it frees nothing while it runs (memory storage): for long runs use "
                "Apache Kafka (CITYAGENT_KAFKA, see the README, \"Using an external Kafka\", and deploy/)")


def run_up(settings: Settings, options: UpOptions) -> int:
    """Run the pipeline until Ctrl-C or SIGTERM; return the exit code.

    With ``simulate``, the simulator's scenario is first checked as `cityagent sim` checks it
    (it can be read and fits the fleet): CityAgentError before anything is started if not."""
    check_workers(options.workers, settings.partitions)
    if options.simulate:
        from sensors_sim.cli import check_run

        check_run(simulator_args(options))
    check_settings_files(settings)
    port = options.port or settings.api_port
    if settings.embedded and port == settings.broker_port:
        # Free when checked, the port was then the broker's, and the API failed to bind it
        # four times before `up` gave up.
        raise PortInUse(f"the API (--port / CITYAGENT_API_PORT) and the embedded broker "
                        f"(CITYAGENT_BROKER_PORT) both want port {port}: give them two")
    try:
        logs = Path(tempfile.mkdtemp(prefix="cityagent-"))
    except OSError as exc:  # a full disk, a temp directory gone: it was a traceback
        raise CityAgentError(
            f"cannot make a directory for the logs in {tempfile.gettempdir()} "
            f"({exc.strerror or exc}); free some space there or set TMPDIR to a writable "
            "directory") from None
    supervisor = Supervisor()
    say = lambda line: supervisor.say("cityagent", line)  # noqa: E731
    broker: EmbeddedBroker | None = None
    memory: BrokerMemory | None = None

    def on_signal(signum: int, _frame: object) -> None:
        raise _Stop(signal.Signals(signum).name)

    def on_second_signal(signum: int, _frame: object) -> None:
        # While stopping: kill what is left, by PID (stop_all then stops waiting). It was
        # ignored, and a stuck worker kept `up` waiting its whole 15 s.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.forced = True
        killed = [f"{c.name} (pid {c.pid})" for c in supervisor.kill_remaining()]
        if broker is not None and (pid := broker.kill()) is not None:
            killed.append(f"the embedded broker (pid {pid})")
        supervisor.say_at_once("cityagent", f"{signal.Signals(signum).name} again: " + (
            f"killing what is still running: {', '.join(killed)}" if killed
            else "nothing is left running to kill"))

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    ended: dict[str, int] = {}  # a child that ended for good (the simulator): its exit code
    try:
        _check_port_free(settings.api_host, port, "the API")
        if settings.embedded:
            broker = EmbeddedBroker(settings.broker_port, log_path=logs / "broker.log")
            say(f"starting the embedded broker (Tansu, memory only) on 127.0.0.1:{settings.broker_port}")
            bootstrap = broker.start()
            say(f"broker ready at {bootstrap} (pid {broker.pid}); its log: {logs / 'broker.log'}")
        else:
            bootstrap = settings.bootstrap
            say(f"using external Kafka at {bootstrap}")
            wait_for_kafka(bootstrap)
        ensure_topics(bootstrap, pipeline_topics(settings))
        say(f"topics ready: {', '.join(t.name for t in pipeline_topics(settings))}")
        if broker is None:  # an embedded broker's topics were all just created, as asked
            short = short_retention(bootstrap, settings.alerts_topic, settings.alerts_retention_ms)
            if short:
                say(f"warning: {short}")
        env = dict(os.environ, CITYAGENT_KAFKA=bootstrap, PYTHONUNBUFFERED="1")
        if broker is not None:
            memory = BrokerMemory(broker)
            if "CITYAGENT_CHECKPOINT_S" not in os.environ:
                env["CITYAGENT_CHECKPOINT_S"] = f"{EMBEDDED_CHECKPOINT_S:g}"
                say(f"workers checkpoint detection state every {EMBEDDED_CHECKPOINT_S:g} s "
                    "(the embedded broker keeps all it is sent; CITYAGENT_CHECKPOINT_S to choose)")
        if options.simulate and settings.registry_path is None:
            # The workers judge the simulated gauges by their own 警戒/保证 levels, free-flow
            # speeds and report intervals: the simulator writes its fleet's registry first.
            registry = logs / "registry.json"
            try:
                done = subprocess.run([sys.executable, "-m", "sensors_sim",
                                       *fleet_args(options), "--registry", str(registry)],
                                      env=env, check=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, timeout=120)
                env["CITYAGENT_SENSOR_REGISTRY"] = str(registry)
                # The simulator's line ends with the settings it wrote the registry by.
                wrote = done.stderr.decode("utf-8", "replace").strip().splitlines()
                note = wrote[-1].partition(f"{registry}: ")[2] if wrote else ""
                say(f"sensor registry of the simulated fleet: {registry}"
                    + (f" ({note})" if note else ""))
            except (subprocess.SubprocessError, OSError) as exc:
                say(f"warning: could not write the simulated fleet's registry ({exc}); "
                    "the workers judge it by the kind defaults")
        for i in range(1, options.workers + 1):
            supervisor.spawn(f"worker-{i}", [sys.executable, "-m", "streams"], env)
        supervisor.spawn("api", api_argv(settings.api_host, port),
                         _api_env(env, settings, _url(settings.api_host, port), say))
        if options.simulate:
            supervisor.spawn("simulator", [sys.executable, "-m", "sensors_sim",
                                           *simulator_args(options)], env)
        url = _url(settings.api_host, port)
        say(f"API        {url}   (OpenAPI docs: {url}/docs)")
        say(f"alerts     {url}/v1/alerts   (workers take ~10 s to join; alerts follow)")
        say("press Ctrl-C to stop everything")
        code = _supervise(supervisor, Restarts(
            lambda name: first_restart_delay_s(name, settings.session_timeout_s)),
            say, memory, takeover=options.workers > 1, broker=broker, ended=ended, url=url)
    except _Stop as stop:
        say(f"{stop.args[0]}: stopping (press Ctrl-C again to kill what is left at once)")
        if ended.get("simulator"):
            say(f"exit code 1: the simulator failed earlier ({_how_ended(ended['simulator'])})")
            code = 1
    except CityAgentError as exc:
        say(f"error: {exc}")
        code = 2
    finally:
        signal.signal(signal.SIGINT, on_second_signal)
        signal.signal(signal.SIGTERM, on_second_signal)
        supervisor.stop_all()
        if broker is not None:
            if memory is not None:
                _say_if(say, memory.line(time.monotonic()))
            broker.stop()
        if any(logs.iterdir()):
            say(f"stopped; no process left running; the logs stay in {logs} "
                "(delete it when done)")
        else:  # nothing was written there (an external Kafka, no simulator): leave no litter
            logs.rmdir()
            say("stopped; no process left running")
    return code


def _supervise(supervisor: Supervisor, restarts: Restarts, say, memory: BrokerMemory | None,
               *, takeover: bool, broker: EmbeddedBroker | None = None,
               ended: dict[str, int] | None = None, url: str = "") -> int:
    """Start what exits again after its wait (`control.restarts`) until something exits too
    often or the embedded broker exits (return 1), or something exits for a wrong setting
    (return 2), or the output's reader goes away (return 141); Ctrl-C or SIGTERM (`_Stop`)
    ends a wait at once, as any other time. The simulator is not started again: its exit
    is said, its code put in ``ended``, and the rest runs on."""
    waiting: dict[str, tuple[Child, float]] = {}  # name -> (the exited child, when to start it)
    ended = {} if ended is None else ended
    while True:
        if supervisor.output_lost:
            # Nobody reads what we say any more. A Ctrl-C that stopped the reader too
            # (`up | tee log`) reaches us in a moment (`_Stop`): wait for it first.
            time.sleep(OUTPUT_LOST_GRACE_S)
            return OUTPUT_LOST_CODE
        now = time.monotonic()
        if broker is not None and broker.returncode is not None:
            # Killed (out of memory: it frees nothing while it runs) or crashed. Everything it
            # held is gone with it, and a new one would be empty: the workers and the API only
            # filled the output with connection errors, and `up` said nothing.
            say(f"the embedded broker (pid {broker.pid}) exited with code {broker.returncode}; "
                "every topic, reading, state and alert it held is lost (memory only); "
                "stopping everything")
            return 1
        for name, (child, due) in list(waiting.items()):
            if now >= due:
                del waiting[name]
                say(f"{name} started again (pid {supervisor.respawn(child).pid})")
        dead = supervisor.first_dead({*waiting, *ended})
        if dead is not None and dead.name == "simulator":
            ended[dead.name] = dead.proc.returncode
            say(_simulator_ended(dead, url))
            continue
        if dead is not None and dead.proc.returncode == CONFIG_EXIT_CODE:
            say(f"{dead.name} (pid {dead.pid}) exited with code {CONFIG_EXIT_CODE}, a "
                "configuration error (its line above names the setting): starting it again "
                "cannot mend it; stopping everything")
            return CONFIG_EXIT_CODE
        if dead is not None:
            delay = restarts.after_exit(dead.name, now) if _restartable(dead.name) else None
            if delay is not None:
                # Stopping everything would stop the embedded broker too, and with it
                # every reading, state and alert it holds (memory storage).
                waiting[dead.name] = (dead, now + delay)
                at = time.strftime("%H:%M:%S", time.localtime(time.time() + delay))
                say(f"{dead.name} (pid {dead.pid}) exited with code {dead.proc.returncode}; "
                    f"starting it again in {delay:g} s, at {at}"
                    + (" (the group shares its partitions out again once Kafka sees it gone)"
                       if takeover and dead.name.startswith("worker-") else ""))
                continue
            exits = restarts.exits(dead.name)
            say(f"{dead.name} exited with code {dead.proc.returncode}"
                + (f" ({exits} times within {RESTART_WINDOW_S:g} s of running)" if exits > 1 else "")
                + "; stopping everything")
            return 1
        if memory is not None and memory.due(time.monotonic()):
            _say_if(say, memory.line(time.monotonic()))
        time.sleep(0.2)


def _simulator_ended(child: Child, url: str) -> str:
    """What `up` says when its simulator exits. It stopped everything before, the embedded
    broker too, and with it every reading, state and alert of the run (memory only): a
    finished run could not be looked at, a failed one not looked into."""
    code = child.proc.returncode
    running = (f"no more simulated readings; the broker, workers, API and dashboard keep "
               f"running{' (' + url + ')' if url else ''} with what they hold; press Ctrl-C "
               "to stop them")
    if code == 0:
        return f"simulator (pid {child.pid}) finished (exit code 0): {running}"
    why = "" if code < 0 else "; its last lines above say why"  # a signal leaves no line
    return (f"simulator (pid {child.pid}) failed ({_how_ended(code)}{why}): {running} "
            "(`up` then exits with code 1)")


def _how_ended(code: int) -> str:
    """``exit code 1``, or ``killed by SIGKILL`` for a negative return code."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def check_workers(workers: int, partitions: int) -> None:
    """ConfigError when there are more workers than partitions: Kafka gives each partition
    to one worker of the group, so the others got none and sat idle (memory, heartbeats,
    rebalances) without a word."""
    if workers > partitions:
        raise ConfigError(
            f"--workers {workers} is more than the {partitions} partitions of the topics "
            f"the workers share (CITYAGENT_PARTITIONS): {workers - partitions} of them would "
            f"get none and sit idle; give --workers {partitions} or fewer, or raise "
            "CITYAGENT_PARTITIONS (new topics only: an existing topic keeps its count)")


def _restartable(name: str) -> bool:
    """Workers and the API hold nothing that a restart loses (their state is in the topics)."""
    return name.startswith("worker-") or name == "api"


def _say_if(say, line: str | None) -> None:
    if line:
        say(line)


def check_settings_files(settings: Settings) -> None:
    """Read the detection, alerting and zones files the workers and the API read at start;
    ConfigError naming the file if one is wrong.

    Checked here, before anything starts: otherwise each child printed the error and exited,
    was started again after its wait, and `up` gave up only after the fourth exit (~20 s,
    the broker and topics made for nothing)."""
    from cityagent.detectors.config import DetectionConfig
    from cityagent.incidents import AlertingConfig
    from cityagent.regions import default_regions
    from cityagent.routing import Router
    from cityagent.zones import ZoneSet

    DetectionConfig.load(settings.detection_path, window_s=settings.window_s,
                         grace_s=settings.grace_s, forget_after_s=settings.forget_after_s)
    AlertingConfig.load(settings.alerting_path)
    if settings.zones_path:
        ZoneSet.load(settings.zones_path, default_regions(),
                     departments=Router.load().department_codes)


def _api_env(env: dict[str, str], settings: Settings, url: str, say) -> dict[str, str]:
    """The API's environment: with a random dev admin key when no key is configured."""
    if settings.api_keys or settings.api_keys_path:
        return env
    key = secrets.token_urlsafe(24)
    say(f"dev admin key: {key}")
    say("  (this session only; send it as Authorization: Bearer KEY, e.g. "
        f"curl -H 'Authorization: Bearer {key}' {url}/v1/alerts; "
        "set CITYAGENT_API_KEYS to choose keys, see docs/api.md)")
    return dict(env, CITYAGENT_API_KEYS=f"admin:{key}")


def _check_port_free(host: str, port: int, who: str) -> None:
    """Bind ``host``:``port`` as uvicorn will (IPv6 when the host has a colon): PortInUse when
    it is taken, ConfigError when the host is no address of this machine. Every failure was
    'already in use', an IPv6 host (``::1``) included, which uvicorn binds."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"port {port} on {host}, wanted by {who}, is already in use; "
                    f"stop whatever holds it or choose another with --port / CITYAGENT_API_PORT"
                ) from None
            raise ConfigError(
                f"{who} cannot listen on {host} (CITYAGENT_API_HOST): {exc.strerror or exc}; "
                "give an address of this machine, e.g. 127.0.0.1, 0.0.0.0 (every interface) "
                "or ::1") from None


def _url(host: str, port: int) -> str:
    """The API's URL: an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
