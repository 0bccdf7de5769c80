"""Per-sensor parameters as one matrix: a row per sensor, a column per parameter.

Every detector parameter (detection.toml, per kind) and every per-sensor value of the
registry (a gauge's 警戒/保证 levels, a road's free-flow speed) becomes a column; the
compiled detectors read ``p[DEVIATION_Z]`` from their sensor's row. Built once per state
and cached until the state gains sensors (``DetectionEngine.params``).
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors.config import KIND_CODES, DetectionConfig, KindConfig
from cityagent.detectors.registry_profiles import SensorProfiles

__all__ = ("PARAM_NAMES", "param_matrix", "param_arrays")

#: Column order: every numeric KindConfig field, then the three congestion thresholds.
PARAM_NAMES: tuple[str, ...] = (
    *(f for f in KindConfig.__dataclass_fields__ if f not in ("kind", "field", "congestion_tpi")),
    "tpi_yellow", "tpi_orange", "tpi_red",
)
_COLUMN = {name: i for i, name in enumerate(PARAM_NAMES)}

SCALE_FLOOR = _COLUMN["scale_floor"]
RELATIVE_FLOOR = _COLUMN["relative_floor"]
TIME_OF_DAY = _COLUMN["time_of_day"]
DEVIATION_CONFIRM = _COLUMN["deviation_confirm"]
EXPECTED_INTERVAL_S = _COLUMN["expected_interval_s"]
FREE_FLOW_KMH = _COLUMN["free_flow_kmh"]
WARNING_M = _COLUMN["warning_m"]
GUARANTEED_M = _COLUMN["guaranteed_m"]
RECORD_M = _COLUMN["record_m"]
BLUE_FRACTION = _COLUMN["blue_fraction"]
FLOOR_MPA = _COLUMN["floor_mpa"]
CRITICAL_MPA = _COLUMN["critical_mpa"]
HIGH_MPA = _COLUMN["high_mpa"]
DEVIATION_Z = _COLUMN["deviation_z"]
DEVIATION_WARMUP = _COLUMN["deviation_warmup"]
CUSUM_K = _COLUMN["cusum_k"]
CUSUM_H = _COLUMN["cusum_h"]
SPIKE_Z = _COLUMN["spike_z"]
FLAT_MIN_READINGS = _COLUMN["flat_min_readings"]
FLAT_MAX_FRACTION = _COLUMN["flat_max_fraction"]
FLAT_WARMUP = _COLUMN["flat_warmup"]
FLAT_LEARN_AFTER_S = _COLUMN["flat_learn_after_s"]
QUANTUM_MAX = _COLUMN["quantum_max"]
QUANTUM_MAX_FRACTION = _COLUMN["quantum_max_fraction"]
SILENCE_FACTOR = _COLUMN["silence_factor"]
SILENCE_MIN_S = _COLUMN["silence_min_s"]
BASELINE_RATE = _COLUMN["baseline_rate"]
ANOMALY_RATE_FACTOR = _COLUMN["anomaly_rate_factor"]
CUSUM_RATE = _COLUMN["cusum_rate"]
TREND_K = _COLUMN["trend_k"]
TREND_H = _COLUMN["trend_h"]
TPI_YELLOW = _COLUMN["tpi_yellow"]
TPI_ORANGE = _COLUMN["tpi_orange"]
TPI_RED = _COLUMN["tpi_red"]


def param_matrix(config: DetectionConfig, profiles: SensorProfiles, ids: list[str],
                 kinds: np.ndarray) -> np.ndarray:
    """``(sensors, len(PARAM_NAMES))`` floats: each sensor's kind defaults, then its profile."""
    out = np.full((len(ids), len(PARAM_NAMES)), np.nan)
    for kind, code in KIND_CODES.items():
        rows = kinds == code
        if not rows.any():
            continue
        kc = config.kinds[kind]
        defaults = [float(getattr(kc, name)) for name in PARAM_NAMES[:-3]]
        out[rows] = np.array([*defaults, *kc.congestion_tpi])
    if len(profiles):
        for i, sensor in enumerate(ids):
            for name, value in profiles.get(sensor).items():
                out[i, _COLUMN[name]] = value
    # Derived: the record level defaults to one 警戒-保证 step above 保证.
    missing = np.isnan(out[:, RECORD_M])
    out[missing, RECORD_M] = (2 * out[:, GUARANTEED_M] - out[:, WARNING_M])[missing]
    return out


def param_arrays(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """The matrix as name → column (views), for numpy code outside the kernels."""
    return {name: matrix[:, i] for i, name in enumerate(PARAM_NAMES)}
