"""`cityagent bench --situation`: how fast the API's situation model folds readings and answers.

In process, no Kafka: the API's readings feed decodes each message of the readings topic and
folds the batch into :class:`~cityagent.situation.SituationModel`; the situation routes then
summarise the model. This times both on a simulated fleet of ``--sensors`` sensors, one round
of readings per second of event time, cut into messages by sensor bucket as producers send
them (~500 readings each):

* the first round, every sensor new (the model adds a row per sensor);
* later rounds, every sensor known (the steady state of a running API);
* ``situation()`` (``GET /v1/situation``), ``city_situation()`` of 济南 and ``sensors()``
  pages (``GET /v1/sensors``: the first sorts the ids, later ones reuse the order), on the
  full model.

Each figure is the median of ``--runs`` runs, each on a fresh model.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np

from api.publisher import concat_batches
from cityagent.batch import decode_batch, encode_batch
from cityagent.regions import default_regions
from cityagent.situation import SituationModel
from sensors_sim.fleet import make_fleet
from sensors_sim.generators import FleetSignals

__all__ = ("run_situation_bench",)

_T0 = 1_767_225_600_000
#: Rounds of readings folded after the first (each timed on its own; their median is reported).
ROUNDS = 5
#: Messages folded in one call, as the readings feed does with one poll.
MESSAGES_PER_FOLD = 200


def _messages(signals: FleetSignals, ts_ms: int) -> list[bytes]:
    """One round of every sensor's reading as the topic's messages, one per bucket part."""
    return [encode_batch(part) for _, part in signals.tick(ts_ms).split_by_bucket(500)]


def _fold(model: SituationModel, messages: list[bytes], now_ms: int) -> float:
    """Seconds to decode and fold ``messages`` as the readings feed does, a poll at a time."""
    started = time.perf_counter()
    for i in range(0, len(messages), MESSAGES_PER_FOLD):
        batches = [decode_batch(m) for m in messages[i:i + MESSAGES_PER_FOLD]]
        model.update(concat_batches(batches), now_ms)
    return time.perf_counter() - started


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _run(sensors: int, seed: int) -> dict[str, float]:
    regions = default_regions()
    signals = FleetSignals(make_fleet(sensors, seed, regions), seed, breach_every_s=0)
    rounds = [_messages(signals, _T0 + k * 1000) for k in range(ROUNDS + 1)]
    model = SituationModel(regions)
    now = _T0 + (ROUNDS + 1) * 1000
    first = _fold(model, rounds[0], now)
    later = statistics.median(_fold(model, r, now) for r in rounds[1:])
    return {
        "first_round_per_s": sensors / first,
        "readings_per_s": sensors / later,
        "situation_ms": 1000 * _timed(lambda: model.situation(now)),
        "city_situation_ms": 1000 * _timed(lambda: model.city_situation("370100", now)),
        # The first page sorts the ids (kept until a sensor is added or forgotten).
        "sensors_first_page_ms": 1000 * _timed(lambda: model.sensors(now)),
        "sensors_page_ms": 1000 * _timed(lambda: model.sensors(now, after="m")),
        "messages_per_round": len(rounds[0]),
    }


def run_situation_bench(*, sensors: int, runs: int, as_json: bool) -> int:
    results = []
    for run in range(runs):
        results.append(_run(sensors, seed=run + 1))
        r = results[-1]
        if not as_json:
            print(f"run {run + 1}/{runs}: {r['readings_per_s']:,.0f} readings/s folded "
                  f"(first round {r['first_round_per_s']:,.0f}/s), situation "
                  f"{r['situation_ms']:.1f} ms", flush=True)
    summary = {key: float(np.median([r[key] for r in results])) for key in results[0]}
    summary |= {"sensors": sensors, "runs": runs, "messages_per_round": results[0]["messages_per_round"]}
    if as_json:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                          for k, v in summary.items()}))
        return 0
    print(f"situation model, {sensors:,} sensors, median of {runs} runs "
          f"({summary['messages_per_round']} messages a round):\n"
          f"  fold (decode + update), sensors known: {summary['readings_per_s']:,.0f} readings/s\n"
          f"  fold, every sensor new (first round):  {summary['first_round_per_s']:,.0f} readings/s\n"
          f"  GET /v1/situation        {summary['situation_ms']:.1f} ms\n"
          f"  GET /v1/situation/370100 {summary['city_situation_ms']:.1f} ms\n"
          f"  GET /v1/sensors (a page) {summary['sensors_page_ms']:.1f} ms "
          f"(the first after sensors came or went: {summary['sensors_first_page_ms']:.1f} ms)")
    return 0
