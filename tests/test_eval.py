"""`cityagent eval` on a small fleet: detection quality and the alerting figures, one object."""

from __future__ import annotations

import pytest

from control.cli import main as cli_main
from control.eval import EvalOptions, evaluate, format_table


def test_eval_reports_detection_and_alerting_figures() -> None:
    options = EvalOptions(sensors=150, seeds=(1,), scenarios=("pipe-burst-qingdao", "quiet-day"),
                          quiet_hours=2.0, warmup_hours=2.0)
    result = evaluate(options)

    for name in ("burst", "leak"):
        q = result["types"][name]
        assert set(q) >= {"precision", "recall", "f1", "delay_median_s", "delay_p95_s"}
        assert 0.0 <= q["f1"] <= 1.0
    assert result["false_alarms_per_sensor_day"] is not None
    alerting = result["alerting"]
    assert set(alerting) >= {"alerts_per_incident", "storm_alert_reduction", "routing_accuracy",
                             "zone_agreement"}
    assert alerting["zone_agreement"] == 1.0  # the index against shapely, point by point
    assert alerting["incidents_alerted"] >= 1  # the burst reached an incident alert
    assert alerting["alerts_per_incident"] >= 1.0
    assert 0.0 <= alerting["routing_accuracy"] <= 1.0
    assert alerting["storm_alert_reduction_over"] == "every injected scenario run"
    table = format_table(result)
    assert "alerts per injected incident" in table and "burst" in table
    # rainstorm-jinan did not run: the line said it was measured there.
    assert "(anomaly events per alert, every injected scenario run)" in table


@pytest.mark.parametrize("tick", ["0.0004", "0.5", "1e300", "3601"])
def test_a_tick_outside_a_second_to_an_hour_is_one_line_and_exit_2(tick, capsys) -> None:
    """0.0004 s was a tick of 0 ms: the warm-up's loop never ended. 1e300 was a traceback."""
    with pytest.raises(SystemExit) as exc:
        cli_main(["eval", "--tick", tick, "--sensors", "10", "--seeds", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--tick: must lie between 1 and 3,600 seconds; got {tick}" in err
    assert "Traceback" not in err


def test_more_sensors_than_an_evaluation_needs_is_one_line_and_exit_2(capsys) -> None:
    """A million sensors would have run over an hour per scenario and seed, saying nothing."""
    with pytest.raises(SystemExit) as exc:
        cli_main(["eval", "--sensors", "100001"])
    assert exc.value.code == 2
    assert "--sensors: must be at most 100,000" in capsys.readouterr().err


def test_a_long_scenario_run_shows_progress_within_it(monkeypatch) -> None:
    """Progress came once per scenario and seed: 8,000 sensors ran 33 s without a line."""
    monkeypatch.setattr("control.eval.PROGRESS_EVERY_S", 0.0)  # a line every tick
    lines: list[str] = []
    evaluate(EvalOptions(sensors=5, seeds=(1,), scenarios=("quiet-day",), warmup_hours=0.05,
                         quiet_hours=0.05),
             progress=lines.append)
    assert any("quiet-day seed 1: quiet day before it" in line for line in lines), lines[:3]
    assert any("quiet-day seed 1: scenario" in line and "detections so far" in line
               for line in lines), lines[-3:]


def test_eval_says_which_file_values_the_window_caps_as_the_worker_does(
        tmp_path, monkeypatch, capsys) -> None:
    """CITYAGENT_WINDOW_S caps the detection file's idle_s and grace_s at its window in eval
    as in the worker (the same DetectionConfig.load), but only the worker said so: an eval
    run with a 10 s window said 'window 10 s (+10 s grace)' of a file whose grace is 15."""
    from pathlib import Path

    text = Path(__file__).parents[1].joinpath("cityagent/data/detection.toml").read_text("utf-8")
    assert "idle_s = 5 " in text and "grace_s = 15 " in text
    detection = tmp_path / "detection.toml"
    detection.write_text(text.replace("idle_s = 5 ", "idle_s = 600 "), "utf-8")
    monkeypatch.setenv("CITYAGENT_DETECTION", str(detection))
    monkeypatch.setenv("CITYAGENT_WINDOW_S", "10")
    monkeypatch.delenv("CITYAGENT_GRACE_S", raising=False)
    assert cli_main(["eval", "--sensors", "2", "--seeds", "1", "--tick", "3600",
                     "--scenario", "quiet-day"]) == 0
    out, err = capsys.readouterr()
    capped = [line for line in err.splitlines() if "is taken as 10 s" in line]
    assert capped == [
        f"eval: [windows] grace_s = 15 of {detection} is taken as 10 s, the detection window "
        "CITYAGENT_WINDOW_S sets: a window set over the file's caps its grace at one window "
        "(set CITYAGENT_GRACE_S to choose it)",
        f"eval: [windows] idle_s = 600 of {detection} is taken as 10 s, the detection window "
        "CITYAGENT_WINDOW_S sets: a window set over the file's caps the idle wait at one window"]
    assert "window 10 s (+10 s grace)" in out
