"""The domain stays pure: no Kafka, Faust, HTTP or metrics import may appear in cityagent/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cityagent

BANNED = ("faust", "kafka", "aiokafka", "confluent_kafka", "fastapi", "starlette", "httpx",
          "requests", "uvicorn", "prometheus_client", "urllib.request", "http", "socket")
PACKAGE = Path(cityagent.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))


def imported_modules(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def banned_in(source: str) -> list[str]:
    return sorted(
        name for name in imported_modules(source)
        if any(name == b or name.startswith(b + ".") for b in BANNED)
    )


def test_the_guard_catches_a_banned_import() -> None:
    assert banned_in("import faust\nfrom aiokafka import AIOKafkaProducer\nimport numpy") == [
        "aiokafka", "faust"]
    assert banned_in("from fastapi.responses import JSONResponse") == ["fastapi.responses"]
    assert banned_in("import numpy, shapely") == []


def test_there_are_domain_modules_to_check() -> None:
    assert {p.name for p in MODULES} >= {"readings.py", "batch.py", "detection.py", "regions.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_domain_module_imports_no_io_framework(path: Path) -> None:
    assert banned_in(path.read_text("utf-8")) == [], f"{path} imports an I/O framework"
