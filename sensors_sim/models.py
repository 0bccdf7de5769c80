"""Normal behaviour of each kind of sensor: pure numpy, vectorised over the fleet, no clock.

Every model is built once from the fleet (per-sensor parameters drawn from its own seeded
generator) and then asked for the values of all its sensors at an event time. Models with
memory (the slow drift of water levels) advance a state from one call to the next, so the
same seed and the same sequence of tick times always give the same values.

Local time is China Standard Time (UTC+8, no daylight saving). The assumptions behind each
model are documented in ``docs/simulator.md``; the normal values of every model stay inside
:data:`NORMAL_RANGES`, which never reach the domain levels of ``cityagent/data/detection.toml``
(pressure between the 0.14 MPa floor and the 0.80 MPa high limit, water below each gauge's blue
level, no road near the congestion index of 9.5), so a quiet fleet raises no level alert.
"""

from __future__ import annotations

import numpy as np

__all__ = (
    "NORMAL_RANGES",
    "COASTAL_CITIES",
    "WATER_SITES",
    "PONDING_LEVELS",
    "ROAD_CLASSES",
    "local_hours",
    "weekday",
    "traffic_demand",
    "water_demand",
    "TrafficModel",
    "WaterLevelModel",
    "PressureModel",
    "traffic_index",
    "congestion_band",
)

#: Normal value ranges per field (what an un-injected sensor may report).
NORMAL_RANGES: dict[str, tuple[float, float]] = {
    "speed_kmh": (12.0, 120.0),
    "flow_vph": (0.0, 6500.0),
    "occupancy_pct": (0.0, 60.0),
    "level_m": (0.0, 3.4),  # street/underpass sensors read ~0 m when dry
    "pressure_mpa": (0.25, 0.48),
}

#: Prefecture cities on the Bohai / Yellow Sea coast: their gauges see a tide.
COASTAL_CITIES: frozenset[int] = frozenset(
    {370200, 370600, 371000, 371100, 370500, 370700, 371600}  # 青岛 烟台 威海 日照 东营 潍坊 滨州
)

#: Sites of water-level sensors and their share of the fleet's water-level sensors: river
#: gauges, and street and underpass waterlogging (积水) sensors that are dry most of the time.
WATER_SITES: dict[str, float] = {"river": 0.5, "street": 0.3, "underpass": 0.2}
_SITE_NAMES = tuple(WATER_SITES)

#: 警戒 (warning) and 保证 (guaranteed) water depths, m, of street and underpass sensors.
#: Illustrative values in the spirit of Chinese urban waterlogging guidance (15 cm on a street
#: stops cyclists and pedestrians, 27 cm is where a car's exhaust floods, 50 cm closes an
#: underpass); not any one city's official figures.
PONDING_LEVELS: dict[str, tuple[float, float]] = {"street": (0.15, 0.30),
                                                   "underpass": (0.27, 0.50)}

#: Rain response: the fraction of a storm's window at which a site's level peaks (underpasses
#: fill fastest, streets next, rivers lag the most).
RAIN_PEAK: dict[str, float] = {"river": 0.35, "street": 0.25, "underpass": 0.2}

#: Road classes: (share of segments, free-flow speed range km/h, lanes, capacity veh/h/lane).
ROAD_CLASSES: dict[str, tuple[float, tuple[float, float], int, float]] = {
    "expressway": (0.2, (80.0, 110.0), 3, 1900.0),
    "arterial": (0.4, (46.0, 60.0), 3, 900.0),
    "secondary": (0.4, (39.0, 46.0), 2, 600.0),
}
_ROAD_NAMES = tuple(ROAD_CLASSES)

_MS_PER_HOUR = 3_600_000
_CST_OFFSET_MS = 8 * _MS_PER_HOUR
_M2_HOURS = 12.42  # principal lunar semidiurnal tide
_S2_HOURS = 12.0  # principal solar semidiurnal tide
_EFFECTIVE_VEHICLE_KM = 0.0065  # vehicle length plus detector length, for occupancy


def local_hours(ts_ms: int) -> float:
    """Hour of the day in China Standard Time, as a float in [0, 24)."""
    return ((int(ts_ms) + _CST_OFFSET_MS) % (24 * _MS_PER_HOUR)) / _MS_PER_HOUR


def weekday(ts_ms: int) -> int:
    """Day of the week in China Standard Time: 0 Monday ... 6 Sunday."""
    days = (int(ts_ms) + _CST_OFFSET_MS) // (24 * _MS_PER_HOUR)
    return int((days + 3) % 7)  # 1970-01-01 was a Thursday


def _bump(hour: float, centre: float, width: float) -> float:
    d = (hour - centre + 12.0) % 24.0 - 12.0  # wrap around midnight
    return float(np.exp(-0.5 * (d / width) ** 2))


def traffic_demand(ts_ms: int) -> float:
    """Road demand as a fraction of capacity, 0-1: weekday double rush hours, weekend hump."""
    h = local_hours(ts_ms)
    if weekday(ts_ms) < 5:
        level = (0.08 + 0.45 * _bump(h, 13.0, 4.5) + 0.5 * _bump(h, 7.9, 0.9)
                 + 0.55 * _bump(h, 18.0, 1.1))
    else:
        level = 0.08 + 0.62 * _bump(h, 14.5, 4.0) + 0.1 * _bump(h, 20.0, 1.5)
    return float(min(level, 1.0))


def water_demand(ts_ms: int) -> float:
    """Drinking-water demand, 0-1: low at 03:00, peaks around 07:30 and 19:30."""
    h = local_hours(ts_ms)
    level = 0.05 + 0.55 * _bump(h, 13.0, 5.0) + 0.45 * _bump(h, 7.5, 1.3) + 0.5 * _bump(h, 19.5, 1.6)
    return float(min(level, 1.0))


def traffic_index(speed_kmh: np.ndarray, free_flow_kmh: np.ndarray) -> np.ndarray:
    """The 0-10 traffic performance index from the speed's shortfall against free flow."""
    ratio = np.clip(np.asarray(speed_kmh) / np.asarray(free_flow_kmh), 0.0, 1.0)
    return np.clip((1.0 - ratio) / 0.7 * 10.0, 0.0, 10.0)


_BANDS = ("畅通", "基本畅通", "轻度拥堵", "中度拥堵", "严重拥堵")


def congestion_band(index: float) -> str:
    """The congestion band of a traffic performance index (0-2 畅通 ... 8-10 严重拥堵)."""
    return _BANDS[min(int(max(index, 0.0) // 2), 4)]


class TrafficModel:
    """Road-segment detectors: speed from demand on a speed-flow curve, flow, occupancy."""

    SPEED_NOISE = 0.02  # relative standard deviation of a speed reading

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        shares = np.array([ROAD_CLASSES[c][0] for c in _ROAD_NAMES])
        self.road_class = rng.choice(len(_ROAD_NAMES), size=n, p=shares / shares.sum())
        low = np.array([ROAD_CLASSES[c][1][0] for c in _ROAD_NAMES])[self.road_class]
        high = np.array([ROAD_CLASSES[c][1][1] for c in _ROAD_NAMES])[self.road_class]
        self.free_flow = rng.uniform(low, high)
        self.lanes = np.array([ROAD_CLASSES[c][2] for c in _ROAD_NAMES])[self.road_class]
        self.capacity = np.array([ROAD_CLASSES[c][3] for c in _ROAD_NAMES])[self.road_class]
        #: How close this segment comes to capacity at peak demand (busy vs quiet roads).
        self.load = rng.uniform(0.5, 0.97, n)

    def road_class_names(self) -> np.ndarray:
        return np.array(_ROAD_NAMES)[self.road_class]

    def values(self, ts_ms: int, rng: np.random.Generator,
               extra_demand: np.ndarray | float = 0.0) -> dict[str, np.ndarray]:
        n = self.free_flow.size
        x = np.clip(traffic_demand(ts_ms) * self.load * (1.0 + extra_demand)
                    + rng.normal(0.0, 0.02, n), 0.0, 1.0)
        # Speed falls slowly at first, fast near capacity; never below 35 % of free flow.
        speed = self.free_flow * (1.0 - 0.65 * x**3) * (1.0 + rng.normal(0.0, self.SPEED_NOISE, n))
        speed = np.clip(speed, np.maximum(0.35 * self.free_flow, 13.0), self.free_flow * 1.05)
        flow_lane = self.capacity * x
        occupancy = 100.0 * flow_lane / speed * _EFFECTIVE_VEHICLE_KM
        return {
            "speed_kmh": speed,
            "flow_vph": np.clip(flow_lane * self.lanes, 0.0, None),
            "occupancy_pct": np.clip(occupancy, 0.0, 55.0),
        }


class WaterLevelModel:
    """River gauges: base level + slow mean-reverting drift + tide on the coast + noise.

    Street and underpass waterlogging sensors read a water depth of ~0 m when dry (half-normal
    noise, never below 0, well below their 警戒 depth); only a rainstorm raises them.
    """

    DRIFT_SD_M = 0.12  # stationary standard deviation of the drift
    DRIFT_TAU_H = 6.0  # its correlation time
    NOISE_M = 0.01  # standard deviation of a river gauge's reading
    DRY_NOISE_M = 0.008  # scale of a dry street/underpass sensor's reading

    def __init__(self, n: int, city_codes: np.ndarray, rng: np.random.Generator) -> None:
        self.base = rng.uniform(0.8, 1.9, n)
        coastal = np.isin(city_codes, list(COASTAL_CITIES))
        self.tide_amp = np.where(coastal, rng.uniform(0.1, 0.5, n), 0.0)
        self.tide_phase = rng.uniform(0.0, 2 * np.pi, n)
        #: 警戒 (warning) and 保证 (guaranteed) levels, m: under the defaults of detection.toml.
        self.warning = np.round(rng.uniform(3.5, 3.95, n), 2)
        self.guaranteed = np.round(self.warning + rng.uniform(0.6, 1.0, n), 2)
        self.guaranteed = np.minimum(self.guaranteed, 4.95)
        self._drift = rng.normal(0.0, self.DRIFT_SD_M, n)
        # Drawn last, so the river parameters above do not depend on it.
        shares = np.array(list(WATER_SITES.values()))
        self.site = rng.choice(len(_SITE_NAMES), size=n, p=shares / shares.sum())
        self.river = self.site == 0
        for code, name in enumerate(_SITE_NAMES[1:], start=1):
            rows = self.site == code
            self.warning[rows], self.guaranteed[rows] = PONDING_LEVELS[name]
        ponding = ~self.river
        self.base[ponding] = 0.0  # dry
        self.tide_amp[ponding] = 0.0
        self._drift[ponding] = 0.0
        self._last_ts: int | None = None

    def site_names(self) -> np.ndarray:
        return np.array(_SITE_NAMES)[self.site]

    def rain_peak(self) -> np.ndarray:
        """Per sensor: the fraction of a storm's window at which its level peaks."""
        return np.array([RAIN_PEAK[name] for name in _SITE_NAMES])[self.site]

    def values(self, ts_ms: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        n = self.base.size
        if self._last_ts is not None and ts_ms > self._last_ts:
            # Exact Ornstein-Uhlenbeck step: the same statistics whatever the tick spacing.
            a = np.exp(-(ts_ms - self._last_ts) / (self.DRIFT_TAU_H * _MS_PER_HOUR))
            self._drift = a * self._drift + rng.normal(0.0, self.DRIFT_SD_M * np.sqrt(1 - a * a), n)
            self._drift[~self.river] = 0.0
        if self._last_ts is None or ts_ms > self._last_ts:
            self._last_ts = ts_ms
        hours = ts_ms / _MS_PER_HOUR
        tide = self.tide_amp * (np.sin(2 * np.pi * hours / _M2_HOURS + self.tide_phase)
                                + 0.3 * np.sin(2 * np.pi * hours / _S2_HOURS + self.tide_phase))
        drift = np.clip(self._drift, -3 * self.DRIFT_SD_M, 3 * self.DRIFT_SD_M)
        noise = rng.normal(0.0, self.NOISE_M, n)
        level = np.where(self.river, self.base + drift + tide / 1.3 + noise,
                         np.abs(noise) * (self.DRY_NOISE_M / self.NOISE_M))
        return {"level_m": level}


class PressureModel:
    """Junction pressure in a metered area: high at night, 0.28-0.35 MPa at daytime demand."""

    NOISE_MPA = 0.003  # standard deviation of a reading

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.night = rng.uniform(0.39, 0.44, n)  # little demand, little head loss
        self.peak = rng.uniform(0.28, 0.31, n)  # at peak demand
        self.transient_p = 0.002  # chance a reading catches a short pump/valve transient

    def values(self, ts_ms: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        n = self.night.size
        d = water_demand(ts_ms)
        # Head loss follows demand (calibrated: 0.28-0.35 MPa by day, ~0.4 MPa at night).
        pressure = self.night - (self.night - self.peak) * d + rng.normal(0.0, self.NOISE_MPA, n)
        transient = rng.random(n) < self.transient_p
        if transient.any():
            pressure[transient] += rng.uniform(-0.03, 0.04, int(transient.sum()))
        return {"pressure_mpa": pressure}
