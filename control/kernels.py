"""Load the detection kernels up front, saying so when that is the first run's compile.

Why: the first process on a machine compiles the numba kernels (30-70 s, cityagent/detectors/
_jit.py), later ones load them in ~0.1 s. Offline commands (`cityagent replay`, `eval`)
compiled inside their first batch: silent for a minute, and the compile counted in the
detection speed they print ("75 s to detect (4 rows/s)" for 288 rows).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from cityagent import rowscore
from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig
from cityagent.detectors.registry_profiles import SensorProfiles

__all__ = ("load_kernels",)

#: Loading from the cache takes ~0.1 s; past this, it is compiling: say so.
NOTICE_AFTER_S = 1.0


def load_kernels(config: DetectionConfig, say: Callable[[str], None],
                 notice_after_s: float = NOTICE_AFTER_S, *, row_scores: bool = False) -> float:
    """Load (or compile) the kernels; ``say`` a line if it takes long; return the seconds.

    ``row_scores``: the replay's per-row score kernel too (``cityagent.rowscore``)."""
    notice = threading.Timer(notice_after_s, say, args=(
        "compiling the detection kernels: the first run on a machine (and after an upgrade) "
        "takes 30-70 s; later runs load them at once",))
    notice.daemon = True
    notice.start()
    try:
        engine = DetectionEngine(config, SensorProfiles())
        seconds = engine.warm_up()
        if row_scores:
            seconds += rowscore.warm_up(engine)
    finally:
        notice.cancel()
    if seconds > notice_after_s:
        say(f"compiled the detection kernels in {seconds:.0f} s (cached for later runs)")
    return seconds
