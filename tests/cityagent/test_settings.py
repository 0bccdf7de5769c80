from __future__ import annotations

import re

import pytest

from cityagent.errors import ConfigError
from cityagent.settings import Settings


def test_defaults_use_the_embedded_broker() -> None:
    s = Settings.from_env({})
    assert s.embedded and s.bootstrap == "127.0.0.1:9092"
    assert (s.readings_topic, s.anomalies_topic, s.alerts_topic) == (
        "city.readings", "city.anomalies", "city.alerts")


def test_external_kafka_and_overrides() -> None:
    s = Settings.from_env({"CITYAGENT_KAFKA": "k1:9092,k2:9092", "CITYAGENT_PARTITIONS": "16",
                           "CITYAGENT_TOPIC_PREFIX": "jinan"})
    assert not s.embedded and s.bootstrap == "k1:9092,k2:9092"
    assert s.partitions == 16 and s.readings_topic == "jinan.readings"


@pytest.mark.parametrize("raw", ["127.0.0.1:abc", "k1:99999", "k1:0", "k1", ",", "k1:9092,",
                                 "kafka://k1:9092", "k1:9092;k2:9092", "k 1:9092"])
def test_bootstrap_servers_that_are_not_host_port_name_the_variable(raw) -> None:
    """They waited 30 s for brokers nobody could reach, then said 'invalid literal for int()'
    or 'Unable to bootstrap from ,'."""
    with pytest.raises(ConfigError, match=r"^CITYAGENT_KAFKA must be the bootstrap servers as "
                                          r"host:port, comma-separated .*; got " + re.escape(repr(raw))):
        Settings.from_env({"CITYAGENT_KAFKA": raw})


@pytest.mark.parametrize(("raw", "bootstrap"), [
    ("k1:9092, k2:9092 ", "k1:9092,k2:9092"),  # blanks around the commas: dropped
    ("10.0.0.7:19092", "10.0.0.7:19092"),
    ("[::1]:9092,kafka_2.example.com:9093", "[::1]:9092,kafka_2.example.com:9093"),
])
def test_bootstrap_servers_are_host_port_pairs(raw, bootstrap) -> None:
    assert Settings.from_env({"CITYAGENT_KAFKA": raw}).bootstrap == bootstrap


def test_settings_files_are_paths(tmp_path) -> None:
    alerting = tmp_path / "alerting.toml"
    alerting.write_text("")
    assert Settings.from_env({"CITYAGENT_ALERTING": str(alerting)}).alerting_path == alerting
    assert Settings.from_env({}).alerting_path is None


@pytest.mark.parametrize("env, words", [
    ({"CITYAGENT_PARTITIONS": "eight"}, "CITYAGENT_PARTITIONS must be a whole number"),
    ({"CITYAGENT_API_PORT": "70000"}, "CITYAGENT_API_PORT is out of range"),
    ({"CITYAGENT_BROKER_PORT": "0"}, "CITYAGENT_BROKER_PORT is out of range"),
    ({"CITYAGENT_DETECTION": "/no/such/file.toml"}, "CITYAGENT_DETECTION names no readable file"),
    ({"CITYAGENT_ALERTING": "/no/such/file.toml"}, "CITYAGENT_ALERTING names no readable file"),
    ({"CITYAGENT_WINDOW_S": "-1"}, "CITYAGENT_WINDOW_S must be a positive number"),
    ({"CITYAGENT_GRACE_S": "x"}, "CITYAGENT_GRACE_S must be a number"),
    # The worker ended in a numba TypingError (milliseconds beyond 64 bits), started again
    # three times by `up`; a grace that large was named as the settings file's.
    ({"CITYAGENT_WINDOW_S": "1e300"}, r"^CITYAGENT_WINDOW_S must be at most 31622400 \(a year\); "
                                      r"got '1e300'$"),
    ({"CITYAGENT_GRACE_S": "1e300"}, r"^CITYAGENT_GRACE_S must be at most 31622400 \(a year\)"),
    ({"CITYAGENT_LOG_LEVEL": "loud"}, "CITYAGENT_LOG_LEVEL must be one of"),
    ({"CITYAGENT_FUTURE_TOLERANCE_S": "0"}, "CITYAGENT_FUTURE_TOLERANCE_S must be a positive"),
    ({"CITYAGENT_FEEDS_CATCH_UP_S": "0"}, "CITYAGENT_FEEDS_CATCH_UP_S must be a positive"),
    # Faust refused it as the worker started, in a traceback ('cannot be greater than
    # broker_request_timeout=90.0'), and `up` started the worker again three times.
    ({"CITYAGENT_SESSION_TIMEOUT_S": "91"},
     r"^CITYAGENT_SESSION_TIMEOUT_S must be at most 90 \(the workers' Kafka request timeout, "
     r"which Faust wants no shorter\); got 91$"),
    ({"CITYAGENT_FUTURE_TOLERANCE_S": "90000"}, "at most 86400"),
    ({"CITYAGENT_SITUATION_LOOKBACK_H": "0"}, "CITYAGENT_SITUATION_LOOKBACK_H must be a positive"),
    ({"CITYAGENT_SITUATION_LOOKBACK_H": "-3"}, "CITYAGENT_SITUATION_LOOKBACK_H must be a positive"),
    ({"CITYAGENT_SITUATION_LOOKBACK_H": "a day"}, "CITYAGENT_SITUATION_LOOKBACK_H must be a number"),
    ({"CITYAGENT_SITUATION_LOOKBACK_H": "nan"}, "CITYAGENT_SITUATION_LOOKBACK_H must be a positive"),
    ({"CITYAGENT_ALERTS_RETENTION_DAYS": "6"},
     r"CITYAGENT_ALERTS_RETENTION_DAYS must be between 7 \(the API reads the last 7 days"),
    ({"CITYAGENT_ALERTS_RETENTION_DAYS": "0"}, "CITYAGENT_ALERTS_RETENTION_DAYS must be between 7"),
    ({"CITYAGENT_ALERTS_RETENTION_DAYS": "-30"}, "CITYAGENT_ALERTS_RETENTION_DAYS must be between"),
    ({"CITYAGENT_ALERTS_RETENTION_DAYS": "3651"}, r"and 3650 \(ten years\); got 3651"),
    ({"CITYAGENT_ALERTS_RETENTION_DAYS": "180d"},
     "CITYAGENT_ALERTS_RETENTION_DAYS must be a whole number; got '180d'"),
    ({"CITYAGENT_ALERTS_RETENTION_DAYS": "7.5"}, "CITYAGENT_ALERTS_RETENTION_DAYS must be a whole"),
    ({"CITYAGENT_SITUATION_LOOKBACK_H": "169"},
     r"CITYAGENT_SITUATION_LOOKBACK_H must be at most 168 \(the readings topic's retention"),
    ({"CITYAGENT_TOPIC_PREFIX": "bad prefix"},
     r"^CITYAGENT_TOPIC_PREFIX must be 1-200 ASCII letters, digits, '\.', '_' or '-' \(it "
     r"begins every topic's name\); got 'bad prefix'$"),
    ({"CITYAGENT_FORGET_AFTER_S": "30d"}, "^CITYAGENT_FORGET_AFTER_S must be a number; got '30d'$"),
    *[({"CITYAGENT_FORGET_AFTER_S": raw}, r"^CITYAGENT_FORGET_AFTER_S must be 0 \(never forget a "
       r"sensor\) or between 86400 \(one day\) and 315360000 \(ten years\); got " f"'{raw}'$")
      for raw in ("3600", "86399", "-1", "315360001", "1e12", "inf", "nan")],
])
def test_bad_settings_name_the_variable(env: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Settings.from_env(env)


def test_the_feeds_catch_up_limit_is_a_setting() -> None:
    assert Settings.from_env({}).feeds_catch_up_s == 30.0
    assert Settings.from_env({"CITYAGENT_FEEDS_CATCH_UP_S": "2.5"}).feeds_catch_up_s == 2.5


def test_the_future_tolerance_is_a_setting() -> None:
    assert Settings.from_env({}).future_tolerance_ms == 300_000
    assert Settings.from_env({"CITYAGENT_FUTURE_TOLERANCE_S": "900"}).future_tolerance_ms == 900_000


def test_the_situation_lookback_is_a_setting_of_at_most_the_retention() -> None:
    assert Settings.from_env({}).situation_lookback_ms == 24 * 3_600_000
    assert Settings.from_env({"CITYAGENT_SITUATION_LOOKBACK_H": "1.5"}).situation_lookback_ms == (
        5_400_000)
    assert Settings.from_env({"CITYAGENT_SITUATION_LOOKBACK_H": "168"}).situation_lookback_h == 168



def test_the_alerts_topic_keeps_180_days_unless_set_between_7_and_3650() -> None:
    assert Settings.from_env({}).alerts_retention_days == 180
    assert Settings.from_env({}).alerts_retention_ms == 180 * 86_400_000
    assert Settings.from_env({"CITYAGENT_ALERTS_RETENTION_DAYS": "7"}).alerts_retention_ms == (
        604_800_000)
    assert Settings.from_env({"CITYAGENT_ALERTS_RETENTION_DAYS": " 3650 "}).alerts_retention_days == (
        3650)


@pytest.mark.parametrize(("raw", "seconds"), [
    ("0", 0.0), ("86400", 86_400.0), (" 604800 ", 604_800.0), ("315360000", 315_360_000.0),
    ("2592000.5", 2_592_000.5),
])
def test_forgetting_sensors_is_a_setting_of_0_or_a_day_to_ten_years(raw, seconds) -> None:
    assert Settings.from_env({}).forget_after_s is None  # unset: the settings file decides
    assert Settings.from_env({"CITYAGENT_FORGET_AFTER_S": raw}).forget_after_s == seconds
