"""One compiled call per batch (``detectors.step``) gives exactly what the separate steps gave.

The reference below is ``DetectionEngine.process`` as it was before the steps were fused:
each step its own call, in the same order, with fresh buffers. Both run over the same
stream of batches — several kinds, new sensors arriving mid-stream, stuck runs, spikes,
silences, late readings, duplicate sensors within a batch — from equal states; their
anomalies and every state column must be equal after every batch.
"""

from __future__ import annotations

import numpy as np

from cityagent.batch import ReadingBatch
from cityagent.detection import DetectionEngine, _kind_codes
from cityagent.detectors.config import DETECTORS
from cityagent.detectors.episodes import Events
from cityagent.detectors.flatline import track_runs
from cityagent.detectors.judge import judge_flatline, judge_silence, judge_windows
from cityagent.detectors.step import watched_values
from cityagent.state import BucketState
from cityagent.windows import NO_LIMIT, _admit, add_readings
from tests.cityagent.test_detection import DISTRICT, SIZE, SMALL, T0, readings

KINDS = ("traffic", "water_level", "pipe_pressure", "generic")
NORMAL = {"traffic": 45.0, "water_level": 2.0, "pipe_pressure": 0.3, "generic": 10.0}


def reference_process(engine: DetectionEngine, state: BucketState, batch: ReadingBatch,
                      now_ms: int) -> tuple[list[dict], int, int]:
    """(anomalies as dicts, late, windows closed): the steps one call each."""
    rows, new = state.rows_of(batch.sensor_id)
    c = state.cols
    kinds = _kind_codes(batch)
    if new:
        unset = c["kind"][rows] < 0
        c["kind"][rows[unset]] = kinds[unset]
    c["lon"][rows], c["lat"][rows], c["district"][rows] = batch.lon, batch.lat, batch.district
    x = np.full(len(batch), np.nan)
    for code, kind in enumerate(KINDS):
        column = batch.values.get(engine.config.kinds[kind].field)
        if column is not None:
            np.copyto(x, column, where=kinds == code)
    ts = batch.ts_ms
    order = np.lexsort((ts, rows))
    run_rows = np.empty(len(state), dtype=np.int64)
    run_since = np.empty(len(state), dtype=np.int64)
    run_x = np.empty(len(state))
    matrix = engine.param_matrix(state)
    size = engine.config.windows.size_ms
    keep = np.zeros(len(batch), dtype=np.bool_)
    _admit(ts, x, keep, state.watermark, NO_LIMIT, size, engine.config.windows.grace_ms)
    runs = track_runs(state.columns(), matrix, rows, ts, x, order, keep, size, run_rows,
                      run_since, run_x)
    late, closed = add_readings(state, rows, ts, x, engine.config.windows, order, matrix)
    events = Events()
    events.reserve(len(DETECTORS) * len(closed) + 2 * len(state))
    cols = state.columns()
    judge_windows(cols, matrix, closed.rows, closed.k, closed.n, closed.total, closed.vmin,
                  closed.vmax, closed.hop_mean, size, engine.config.windows.end_after_windows,
                  events.ints, events.floats, events.count)
    judge_silence(cols, matrix, state.watermark, events.ints, events.floats, events.count)
    judge_flatline(cols, matrix, run_rows[:runs], run_since[:runs], run_x[:runs], state.watermark,
                   events.ints, events.floats, events.count)
    count = int(events.count[0])
    anomalies = engine._anomalies(state, events.ints[:count].tolist(),
                                  events.floats[:count].tolist(), now_ms)
    return [a.to_dict() for a in anomalies], late, len(closed)


def stream(rng: np.random.Generator, batches: int) -> list[ReadingBatch]:
    """Batches of a small fleet: 24 sensors at first, 8 more from batch 30; sensor s3 stuck
    from batch 40, s5 silent for batches 50-140, spikes now and then, and one in 25 readings
    late (stamped two windows back; not in batch 0, where a sensor whose readings are all late
    is forgotten at once by the engine, which the steps alone do not do)."""
    out = []
    for b in range(batches):
        sensors = 24 if b < 30 else 32
        rows = []
        for s in range(sensors):
            if s == 5 and 50 <= b < 140:
                continue
            kind = KINDS[s % len(KINDS)]
            for _ in range(int(rng.integers(1, 4))):
                ts = T0 + b * SIZE // 2 + int(rng.integers(0, SIZE // 2))
                if rng.random() < 0.04 and b > 0:  # none in batch 0 (above)
                    ts -= 2 * SIZE
                value = NORMAL[kind] * (1 + rng.normal(0, 0.02))
                if s == 3 and b >= 40:
                    value = NORMAL[kind]
                if rng.random() < 0.01:
                    value *= 4
                rows.append((f"s{s}", kind, ts, value))
        order = rng.permutation(len(rows))
        out.append(readings([rows[i] for i in order]))
    return out


def test_one_compiled_call_gives_the_anomalies_and_state_of_the_separate_steps() -> None:
    engine = DetectionEngine(SMALL)
    fused, reference = engine.new_state(), engine.new_state()
    detectors: set[str] = set()
    late_seen = 0
    for i, batch in enumerate(stream(np.random.default_rng(7), 160)):
        now = T0 + i * 1000
        got = engine.process(fused, batch, now)
        want, late, windows = reference_process(engine, reference, batch, now)
        assert [a.to_dict() for a in got.anomalies] == want, f"batch {i}"
        assert (got.late, got.windows) == (late, windows), f"batch {i}"
        assert fused.watermark == reference.watermark
        assert fused.late_total == reference.late_total
        for name, column in reference.cols.items():
            np.testing.assert_array_equal(fused.cols[name], column, err_msg=f"{name}, batch {i}")
        detectors |= {a["detector"] for a in want}
        late_seen += late
    # the stream exercised what it was built for
    assert late_seen > 0
    assert detectors == set(DETECTORS)


def test_the_watched_value_is_the_column_of_each_readings_kind_and_nan_without_one() -> None:
    kinds = np.array([0, 1, 2, 3, 1], dtype=np.int64)
    speed = np.array([40.0, np.nan, np.nan, np.nan, np.nan])
    level = np.array([np.nan, 2.5, np.nan, np.nan, 3.5])
    pressure = np.array([np.nan, np.nan, 0.3, np.nan, np.nan])
    x = np.empty(5)
    watched_values(kinds, (speed, level, pressure, np.zeros(0)), x, 5)
    np.testing.assert_array_equal(x, [40.0, 2.5, 0.3, np.nan, 3.5])


def test_positions_follow_each_sensors_latest_reading_in_the_batch() -> None:
    engine = DetectionEngine(SMALL)
    state = engine.new_state()
    batch = readings([("a", "water_level", T0, 1.0), ("a", "water_level", T0 + 1, 1.0)])
    batch = ReadingBatch(batch.sensor_id, batch.kind, batch.ts_ms, np.array([117.0, 118.0]),
                         np.array([36.0, 37.0]), np.array([DISTRICT, 370103]), batch.values)
    engine.process(state, batch, T0)
    row = state.index["a"]
    assert (state.cols["lon"][row], state.cols["lat"][row]) == (118.0, 37.0)
    assert state.cols["district"][row] == 370103
