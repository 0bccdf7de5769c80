"""docker-compose.yml and deploy/ match the code: no Docker engine runs here, so what can be
checked without one is checked (modules, settings, keys, the registry, the Kafka data directory).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from cityagent.settings import ENV_VARS
from control.topics import TopicSpec

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
SERVICES = COMPOSE["services"]
OURS = {name: s for name, s in SERVICES.items() if s.get("image") == "cityagent:local"}


def _env(service: dict) -> dict[str, str]:
    return {str(k): str(v) for k, v in (service.get("environment") or {}).items()}


def _fleet_args(command: list[str]) -> list[str]:
    """The simulator's arguments that choose its fleet (the registry must describe that fleet)."""
    picked = []
    for flag in ("--sensors", "--rate", "--seed"):
        if flag in command:
            picked += [flag, command[command.index(flag) + 1]]
    return picked


def test_every_service_runs_a_module_the_image_has() -> None:
    assert set(OURS) == {"topics", "registry", "worker", "api", "simulator"}
    for name, service in OURS.items():
        command = service["command"]
        assert command[:2] == ["python", "-m"], name
        module = command[2]
        if module == "uvicorn":
            factory = command[command.index("--factory") + 1]
            module_name, attr = factory.split(":")
            assert hasattr(importlib.import_module(module_name), attr), factory
        else:
            spec = importlib.util.find_spec(module)
            assert spec is not None, (name, module)
            if spec.submodule_search_locations:  # a package: `python -m` runs its __main__
                assert importlib.util.find_spec(f"{module}.__main__") is not None, (name, module)
        assert service["build"]["dockerfile"] == "deploy/Dockerfile", name


def test_every_setting_named_is_one_the_code_reads() -> None:
    for name, service in OURS.items():
        for var in _env(service):
            assert var in ENV_VARS, (name, var)


def test_the_api_gets_keys_and_a_readiness_check() -> None:
    """The API exits at start without keys; compose must refuse to run without them."""
    api = SERVICES["api"]
    keys = _env(api)["CITYAGENT_API_KEYS"]
    assert re.fullmatch(r"\$\{CITYAGENT_API_KEYS:\?.+\}", keys), keys
    assert "/readyz" in " ".join(api["healthcheck"]["test"])


def test_workers_and_api_judge_the_simulated_fleet_by_its_registry() -> None:
    registry = SERVICES["registry"]["command"]
    path = registry[registry.index("--registry") + 1]
    assert _fleet_args(registry) == _fleet_args(SERVICES["simulator"]["command"])
    for name in ("worker", "api"):
        assert _env(SERVICES[name])["CITYAGENT_SENSOR_REGISTRY"] == path, name
        assert SERVICES[name]["depends_on"]["registry"]["condition"] == \
            "service_completed_successfully"
        volume = next(v for v in SERVICES[name]["volumes"] if v.split(":")[1] == str(Path(path).parent))
        assert volume in SERVICES["registry"]["volumes"]


def test_kafka_keeps_its_data_on_the_volume() -> None:
    kafka = SERVICES["kafka"]
    data_dir = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert any(v.endswith(f":{data_dir}") and v.split(":")[0] in COMPOSE["volumes"]
               for v in kafka["volumes"])
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_the_build_context_leaves_out_local_state_and_secrets() -> None:
    ignored = (ROOT / ".dockerignore").read_text("utf-8").split()
    assert {".git", ".venv", ".env"} <= set(ignored)
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text("utf-8")
    for copied in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert copied not in ignored, copied


@pytest.mark.parametrize(("replication", "min_isr"), [(1, None), (2, None), (3, "2"), (5, "3")])
def test_replicated_topics_need_a_majority_in_sync(replication: int, min_isr: str | None) -> None:
    config = TopicSpec("city.readings", 8, replication).topic_config()
    assert config.get("min.insync.replicas") == min_isr


def test_create_topics_help_explains_and_creates_nothing(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m control.create_topics --help` once ignored its arguments: with
    CITYAGENT_KAFKA set it went on to create the topics on that cluster."""
    from control import create_topics

    monkeypatch.setenv("CITYAGENT_KAFKA", "127.0.0.1:9")  # nothing listens: never reached
    monkeypatch.setattr(create_topics, "wait_for_kafka", _never_called)
    monkeypatch.setattr(create_topics, "ensure_topics", _never_called)
    with pytest.raises(SystemExit) as exit_:
        create_topics.main(["--help"])
    assert exit_.value.code == 0
    assert "CITYAGENT_KAFKA" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        create_topics.main(["--partitions", "16"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --partitions 16" in capsys.readouterr().err


def _never_called(*_args, **_kwargs):
    raise AssertionError("create_topics contacted Kafka")


def test_the_health_check_named_is_what_readyz_waits_for() -> None:
    """It named the alerts and readings topics only; /readyz also waits for the broker, the
    idempotency records and the zones, maintenance and routing topics."""
    from api.routes import health

    text = " ".join((ROOT / "deploy" / "README.md").read_text("utf-8").split())
    health_text = text[text.index("**Health.**"):][:700]
    waits_for = re.findall(r'"(\w+_caught_up|broker)": ', Path(health.__file__).read_text("utf-8"))
    assert set(waits_for) == {"broker", "readings_caught_up", "alerts_caught_up",
                              "idempotency_caught_up", "settings_caught_up"}
    for said in ("once the broker answers", "alerts topic", "readings topic",
                 "idempotency records", "zones, maintenance and routing topics", "`missing`"):
        assert said in health_text, said
