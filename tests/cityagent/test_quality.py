"""Detection quality against labelled ground truth: precision, recall, F1 and delay per type."""

from __future__ import annotations

import pytest

from cityagent.quality import FALSE_ALARM_TYPE, Detection, TruthLabel, score_detections

S = 1_000  # one second in ms
FLOOD = TruthLabel("jn-wl-1", "water_level", "rainstorm", 1_000 * S, 2_000 * S)
BURST = TruthLabel("jn-pp-1", "pipe_pressure", "burst", 5_000 * S, 6_000 * S)
TOLERANCE = 120 * S


def test_precision_recall_f1_and_delay_per_type() -> None:
    detections = [
        # true: raised 120 s after the flood began; a second, later one for the same label
        Detection("jn-wl-1", "water_level", "level", since_ms=1_060 * S, ts_ms=1_120 * S),
        Detection("jn-wl-1", "water_level", "change", since_ms=1_100 * S, ts_ms=1_300 * S),
        # false on a labelled sensor: its episode began long after the flood (and tolerance)
        Detection("jn-wl-1", "water_level", "deviation", since_ms=3_000 * S, ts_ms=3_060 * S),
        # false on a sensor without labels: counted against what its detector looks for
        Detection("jn-tr-7", "traffic", "silence", since_ms=500 * S, ts_ms=700 * S),
    ]
    q = score_detections(detections, [FLOOD, BURST], TOLERANCE)

    assert set(q) == {"rainstorm", "burst", "dropout"}
    rain = q["rainstorm"]
    assert (rain.labels, rain.found, rain.detections, rain.true_detections) == (1, 1, 3, 2)
    assert rain.precision == pytest.approx(2 / 3)
    assert rain.recall == 1.0
    assert rain.f1 == pytest.approx(0.8)
    assert rain.delays_s == [120.0]  # the first matching detection only
    assert rain.delay_median_s == 120.0 and rain.delay_p95_s == 120.0

    burst = q["burst"]  # missed
    assert (burst.labels, burst.found, burst.detections) == (1, 0, 0)
    assert (burst.recall, burst.precision, burst.f1) == (0.0, 1.0, 0.0)
    assert burst.delay_median_s is None

    drop = q["dropout"]  # only a false alarm
    assert FALSE_ALARM_TYPE[("silence", "traffic")] == "dropout"
    assert (drop.labels, drop.detections, drop.true_detections) == (0, 1, 0)
    assert (drop.precision, drop.recall, drop.f1) == (0.0, 1.0, 0.0)
    assert drop.to_dict() == {
        "precision": 0.0, "recall": 1.0, "f1": 0.0, "delay_median_s": None,
        "delay_p95_s": None, "onset_delay_median_s": None, "onset_delay_p95_s": None,
        "labels": 0, "found": 0, "detections": 1, "true_detections": 0}


@pytest.mark.parametrize("since_s, ts_s, matches", [
    (990, 1_000, True),  # raised at the label's start
    (900, 999, False),  # raised before the event began
    (2_119, 2_130, True),  # episode began within the tolerance after the label's end
    (2_120, 2_130, False),  # ... and just after it
])
def test_matching_window_of_a_label(since_s: int, ts_s: int, matches: bool) -> None:
    det = Detection("jn-wl-1", "water_level", "level", since_s * S, ts_s * S)
    q = score_detections([det], [FLOOD], TOLERANCE)["rainstorm"]
    assert (q.found, q.true_detections, q.detections) == (int(matches), int(matches), 1)


def test_an_unknown_detector_and_kind_counts_as_other() -> None:
    det = Detection("x", "generic", "oracle", 0, 0)
    q = score_detections([det], [], TOLERANCE)
    assert list(q) == ["other"] and q["other"].precision == 0.0


def test_no_detections_and_no_labels_is_empty() -> None:
    assert score_detections([], [], TOLERANCE) == {}


def test_merge_adds_counts_and_delays() -> None:
    a = score_detections([Detection("jn-wl-1", "water_level", "level", 1_000 * S, 1_030 * S)],
                         [FLOOD], TOLERANCE)["rainstorm"]
    b = score_detections([], [FLOOD], TOLERANCE)["rainstorm"]
    a.merge(b)
    assert (a.labels, a.found, a.recall, a.delays_s) == (2, 1, 0.5, [30.0])


def test_a_label_reads_from_a_dict() -> None:
    doc = {"sensor_id": "jn-pp-1", "kind": "pipe_pressure", "anomaly": "burst",
           "start_ms": 5_000_000, "end_ms": "6000000"}
    assert TruthLabel.from_dict(doc) == BURST


def test_delay_from_onset() -> None:
    """A ramp's label measures its delay also from its onset (when its change reached the
    readings' noise): a detection before the onset counts 0, a label that never reached the
    noise has no delay from onset, and any other label's onset is its start."""
    rise = TruthLabel("jn-wl-2", "water_level", "rainstorm", 1_000 * S, 2_000 * S,
                      onset_after_ms=90 * S)
    early = TruthLabel("jn-wl-3", "water_level", "rainstorm", 1_000 * S, 2_000 * S,
                       onset_after_ms=300 * S)
    faint = TruthLabel("jn-wl-4", "water_level", "rainstorm", 1_000 * S, 2_000 * S,
                       onset_after_ms=None)
    detections = [
        Detection("jn-wl-2", "water_level", "trend", since_ms=1_180 * S, ts_ms=1_240 * S),
        Detection("jn-wl-3", "water_level", "level", since_ms=1_200 * S, ts_ms=1_260 * S),
        Detection("jn-wl-4", "water_level", "trend", since_ms=1_300 * S, ts_ms=1_360 * S),
        Detection("jn-pp-1", "pipe_pressure", "level", since_ms=5_000 * S, ts_ms=5_030 * S),
    ]
    q = score_detections(detections, [rise, early, faint, BURST], TOLERANCE)

    assert q["rainstorm"].delays_s == [240.0, 260.0, 360.0]
    assert q["rainstorm"].onset_delays_s == [150.0, 0.0]
    assert q["rainstorm"].onset_delay_median_s == 75.0
    assert q["burst"].onset_delays_s == q["burst"].delays_s == [30.0]
    doc = q["rainstorm"].to_dict()
    assert (doc["onset_delay_median_s"], doc["onset_delay_p95_s"]) == (75.0, 142.5)
    assert TruthLabel.from_dict({"sensor_id": "a", "kind": "traffic", "anomaly": "drift",
                                 "start_ms": 5, "end_ms": 9}).onset_after_ms == 0
