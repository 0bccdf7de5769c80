"""The docs match the code: every setting is documented, and the README's commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from cityagent.settings import ENV_VARS, Settings

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


def test_the_readme_table_of_settings_is_the_one_in_settings_py() -> None:
    """cityagent/settings.py's ENV_VARS is the source of the README's table: the same
    variables, in the same order, with the same meaning (a `|` escaped in the table)."""
    rows = re.findall(r"^\| `(CITYAGENT_[A-Z_]+)` \| (.*) \|$", README, re.M)
    assert [var for var, _ in rows] == list(ENV_VARS)
    for var, meaning in rows:
        assert meaning.replace("\\|", "|") == ENV_VARS[var][1], var


def test_api_md_says_everywhere_that_the_alert_list_waits_for_its_topic() -> None:
    """docs/api.md's Alerts section (and the code, api.deps.get_read_alert_book) has
    `GET /v1/alerts` wait for the alerts topic and answer 503 after 10 s; its zones section
    still said it did not wait, as before 2026-11-24."""
    api_md = re.sub(r"\s+", " ", (ROOT / "docs" / "api.md").read_text("utf-8"))
    for claim in re.findall(r"[^.]*\bdo(?:es)? not wait\b[^.]*\.", api_md):
        assert "/v1/alerts`" not in claim.replace("/v1/alerts/stream`", ""), claim


def test_the_topic_prefix_row_names_the_topics_the_app_id_names() -> None:
    """It said 'every topic name', and a second pipeline given only another prefix shared the
    first one's consumer group and state changelogs."""
    from control.topics import pipeline_topics

    settings = Settings(topic_prefix="pfx", app_id="appid")
    others = [t.name for t in pipeline_topics(settings) if not t.name.startswith("pfx.")]
    assert others and all(name.startswith("appid-") and name.endswith("-changelog")
                          for name in others)
    meaning = ENV_VARS["CITYAGENT_TOPIC_PREFIX"][1]
    assert "but the two table changelogs'" in meaning and "`CITYAGENT_APP_ID`" in meaning


def test_the_docs_quote_the_state_row_size_the_columns_make() -> None:
    """The docs said ~0.84 KB per sensor after two 8-byte columns (last_gap_ms, flat_x) had
    been added; the size they quote is now the one the state's columns add up to."""
    from cityagent.state import ROW_COLUMN_BYTES, BucketState

    state = BucketState()
    state.rows_of([f"jn-wl-{i:06d}" for i in range(4000)])
    per_sensor = sum(map(len, state.to_parts())) / len(state)  # the simulator's ids
    quoted = f"~{per_sensor / 1000:.2f} KB per sensor"
    detection = _words(ROOT / "docs" / "detection.md")
    assert f"{ROW_COLUMN_BYTES} bytes of numpy columns in memory" in detection
    assert f"The {ROW_COLUMN_BYTES} are `cityagent.state.ROW_COLUMN_BYTES`" in detection
    assert f"{round(per_sensor)} bytes a sensor in a bucket of 4,000" in detection
    assert f"{ROW_COLUMN_BYTES} bytes per sensor" in _words(ROOT / "docs" / "architecture.md")
    for name in ("docs/detection.md", "docs/architecture.md", "cityagent/state.py",
                 "cityagent/detectors/config.py"):
        for said in re.findall(r"~\d\.\d+ KB per sensor", _words(ROOT / name)):
            assert said == quoted, (name, said)


def _words(path: Path) -> str:
    """The text with every run of white space one space (as Markdown reads it)."""
    return re.sub(r"\s+", " ", path.read_text("utf-8"))
