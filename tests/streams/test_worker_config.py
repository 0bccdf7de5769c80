"""The worker and `cityagent eval` read the settings files the environment names, and a bad
one stops them with one line naming it (exit code 2), before any broker is contacted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from control.cli import main as cli_main


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
