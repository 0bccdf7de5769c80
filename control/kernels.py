"""What a detection process says as it starts: the detection file's values the environment
capped, and the kernels' compile on a machine's first run.

Why: the first process on a machine compiles the numba kernels (30-70 s, cityagent/detectors/
_jit.py), later ones load them in ~0.1 s. Offline commands (`cityagent replay`, `eval`)
compiled inside their first batch: silent for a minute, and the compile counted in the
detection speed they print ("75 s to detect (4 rows/s)" for 288 rows). A worker compiled
before Faust set up its logging, so the line it logged was never seen: ~60 s of silence.
And ``CITYAGENT_WINDOW_S`` caps the file's ``idle_s`` and ``grace_s`` at its window: the
worker said so, `cityagent eval` ran with the capped values without a word.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from cityagent import rowscore
from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig
from cityagent.detectors.registry_profiles import SensorProfiles

__all__ = ("load_kernels", "warm_kernels", "say_config_notes", "COMPILING")

#: Loading from the cache takes ~0.1 s; past this, it is compiling: say so.
NOTICE_AFTER_S = 1.0
#: Said once loading the kernels takes longer than :data:`NOTICE_AFTER_S`.
COMPILING = ("compiling the detection kernels: the first run on a machine (and after an "
             "upgrade) takes 30-70 s; later runs load them at once")


def say_config_notes(config: DetectionConfig, say: Callable[[str], None]) -> None:
    """Say, one line each, which of the detection file's values the environment capped
    (``DetectionConfig.notes``): the worker, `cityagent eval` and `up`'s workers alike."""
    for note in config.notes:
        say(note)


def warm_kernels(warm_up: Callable[[], float], say: Callable[[str], None],
                 notice_after_s: float | None = None) -> float:
    """Run ``warm_up`` (load, or compile, the kernels; it returns the seconds it took).
    Past ``notice_after_s`` (default :data:`NOTICE_AFTER_S`) ``say`` :data:`COMPILING` at
    once, and the time it took when done; nothing when the kernels load from the cache."""
    after_s = NOTICE_AFTER_S if notice_after_s is None else notice_after_s
    notice = threading.Timer(after_s, say, args=(COMPILING,))
    notice.daemon = True
    notice.start()
    try:
        seconds = warm_up()
    finally:
        notice.cancel()
    if seconds > after_s:
        say(f"compiled the detection kernels in {seconds:.0f} s (cached for later runs)")
    return seconds


def load_kernels(config: DetectionConfig, say: Callable[[str], None],
                 notice_after_s: float | None = None, *, row_scores: bool = False) -> float:
    """Load (or compile) the kernels as :func:`warm_kernels` does; return the seconds.

    ``row_scores``: the replay's per-row score kernel too (``cityagent.rowscore``)."""
    engine = DetectionEngine(config, SensorProfiles())

    def warm_up() -> float:
        return engine.warm_up() + (rowscore.warm_up(engine) if row_scores else 0.0)

    return warm_kernels(warm_up, say, notice_after_s)
