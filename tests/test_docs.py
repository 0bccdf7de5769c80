"""The docs match the code: every setting is documented, and the README's commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from cityagent.settings import ENV_VARS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text("utf-8")


def test_every_environment_variable_is_in_the_readme() -> None:
    documented = set(re.findall(r"`(CITYAGENT_[A-Z_]+)`", README))
    assert set(ENV_VARS) <= documented, set(ENV_VARS) - documented


def test_the_readme_commands_are_make_targets_and_ci_runs_the_test_one() -> None:
    makefile = (ROOT / "Makefile").read_text("utf-8")
    for target in ("up", "test"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    assert re.search(r"^make test$", ci, re.M)
    assert "cityagent up --simulate" in makefile
