"""`cityagent bench --situation` on a small fleet: in process, no Kafka."""

from __future__ import annotations

import json

import pytest

from cityagent.batch import decode_batch
from cityagent.regions import default_regions
from cityagent.situation import SituationModel
from control.bench_situation import _fold, _messages, run_situation_bench
from sensors_sim.fleet import make_fleet
from sensors_sim.generators import FleetSignals


def test_a_round_is_every_sensor_once_in_bucket_messages() -> None:
    signals = FleetSignals(make_fleet(1200, 3, default_regions()), 3, breach_every_s=0)
    messages = _messages(signals, 1_767_225_600_000)
    batches = [decode_batch(m) for m in messages]
    ids = [i for b in batches for i in b.sensor_id.tolist()]
    assert sorted(ids) == sorted(s.sensor_id for s in signals.fleet)
    assert all(len({int(x) for x in b.buckets()}) == 1 for b in batches)  # one bucket each


def test_the_timed_fold_folds_every_reading() -> None:
    signals = FleetSignals(make_fleet(800, 5, default_regions()), 5, breach_every_s=0)
    model = SituationModel(default_regions())
    now = 1_767_225_601_000
    assert _fold(model, _messages(signals, now - 1000), now) > 0
    assert model.situation(now)["province"]["sensors"]["total"] == 800


def test_it_prints_the_figures_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_situation_bench(sensors=500, runs=2, as_json=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sensors"] == 500 and out["runs"] == 2
    for key in ("readings_per_s", "first_round_per_s", "situation_ms", "city_situation_ms",
                "sensors_page_ms", "sensors_first_page_ms"):
        assert out[key] > 0, key
