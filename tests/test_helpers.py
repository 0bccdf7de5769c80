"""The tests' own helpers (tests/helpers.py) where a mistake would make tests test less."""

from __future__ import annotations

from pathlib import Path

from cityagent.settings import ENV_VARS, Settings
from tests.helpers import TEST_API_KEYS, pipeline_env


def test_a_child_process_gets_every_setting_of_the_pipeline_under_test(tmp_path: Path) -> None:
    """pipeline_env left out the sensor registry, zones, alerting file and more: a worker a
    test started with ``Settings(registry_path=...)`` ran without its registry, silently."""
    files = {name: tmp_path / f"{name}.txt" for name in
             ("detection_path", "registry_path", "alerting_path", "zones_path", "api_keys_path")}
    for path in files.values():
        path.write_text("", "utf-8")
    settings = Settings(
        kafka="127.0.0.1:9", broker_port=9999, topic_prefix="tp", partitions=3, replication=2,
        app_id="app-x", window_s=2.0, grace_s=0.0, forget_after_s=86_400.0, checkpoint_s=0.5,
        api_host="::1", api_port=8123, session_timeout_s=6, feeds_catch_up_s=5.0,
        log_level="warning", api_keys="admin:k", api_rate=50.0, future_tolerance_s=60.0,
        situation_lookback_h=2.0, alerts_retention_days=30, api_burst=500, **files)
    for name in {name for name, _ in ENV_VARS.values()}:  # every setting differs from its default
        assert getattr(settings, name) != getattr(Settings(), name), name
    assert Settings.from_env(pipeline_env(settings)) == settings


def test_a_child_process_gets_the_test_keys_and_the_embedded_brokers_address() -> None:
    env = pipeline_env(Settings(broker_port=9999))
    assert env["CITYAGENT_KAFKA"] == "127.0.0.1:9999"
    assert env["CITYAGENT_API_KEYS"] == TEST_API_KEYS
    assert "CITYAGENT_WINDOW_S" not in env  # unset: the file's own
