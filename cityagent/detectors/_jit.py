"""Compiled scalar kernels: numba's ``njit`` with a cache that never goes stale, and helpers.

Why compiled: a closed window costs each detector a few arithmetic operations, but as numpy
calls over a batch the fixed cost of ~300 calls (~1.4 ms a batch) was most of the time. The
detectors are therefore written as scalar functions over one sensor's state row and run in
one compiled loop over the batch (still one call per batch, state in and state out).

Why a cache directory of our own: numba's on-disk cache checks only the file that defines a
function, not the files of the functions it calls, so a change to a detector would leave a
stale compiled judge behind. The cache lives in a directory named after a hash of every
kernel source file, so any change compiles afresh. ``NUMBA_CACHE_DIR`` still wins when set.
Directories of other sources that no process has used for a month are removed.

The helpers follow numpy's rules for NaN (``np.maximum``, ``np.clip`` and ``np.nan_to_num``
propagate or replace it the same way), so the kernels give the numbers the numpy code did.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numba

__all__ = ("njit", "fmax", "fmin", "clip", "nan_to_num", "KERNEL_SOURCES", "prune_stale_caches")

_HERE = Path(__file__).resolve().parent
#: Every file whose functions are compiled into the kernels (the cache key hashes them all).
KERNEL_SOURCES: tuple[Path, ...] = (
    *sorted(_HERE.glob("*.py")),
    _HERE.parent / "windows.py",
    _HERE.parent / "state.py",
    _HERE.parent / "rowscore.py",
)


#: A cache directory of other kernel sources left untouched this long is removed.
STALE_CACHE_S = 30 * 24 * 3600.0


def _cache_dir() -> str:
    digest = hashlib.blake2b(digest_size=8)
    for path in KERNEL_SOURCES:
        try:
            digest.update(path.read_bytes())
        except OSError:
            continue
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for root in (base, tempfile.gettempdir()):
        path = os.path.join(root, "cityagent", f"numba-{numba.__version__}-{digest.hexdigest()}")
        try:
            os.makedirs(path, exist_ok=True)
            if os.access(path, os.W_OK):
                os.utime(path)  # in use: its age counts from now
                prune_stale_caches(Path(path))
                return path
        except OSError:
            continue
    return ""


def prune_stale_caches(current: Path, max_age_s: float = STALE_CACHE_S) -> list[Path]:
    """Remove the ``numba-*`` directories beside ``current`` unused for ``max_age_s``.

    Every change to the kernel sources (an upgrade, a checkout of another version) makes a
    new directory of ~7 MB and leaves the old one behind; without this they pile up. A
    directory is touched each time a process picks it, so only versions nobody has started
    for a month go. A process still running an old version has its kernels loaded already
    and does not read the directory again. Returns what was removed; errors are ignored (a
    directory another process removes first, or one this user may not remove).
    """
    removed = []
    cutoff = time.time() - max_age_s
    for other in current.parent.glob("numba-*"):
        try:
            if other == current or not other.is_dir() or other.stat().st_mtime >= cutoff:
                continue
            shutil.rmtree(other)
            removed.append(other)
        except OSError:
            continue
    return removed


if not os.environ.get("NUMBA_CACHE_DIR"):
    numba.config.CACHE_DIR = _cache_dir()

#: Compiled with numpy's error model (x / 0 is inf or NaN, as in the numpy code, never an
#: exception), cached on disk (only the first process on a machine pays the compile), and
#: inlined into the caller: the kernels call many small functions per window, and a call
#: that passes a state's ~30 arrays costs more in reference counting than the work.
#:
#: Without numba's reference counting (``_nrt=False``, numba's own switch, used in its issue
#: #2350 for this very cost): every array a kernel touches belongs to the Python caller, who
#: holds it for the call, so counting references to it (and to each row view and tuple of
#: columns the detectors make, one atomic call each, ~10 per window that numba's pruning
#: leaves in branching code) is pure cost — it was 70 % of the judging time. The price: a
#: kernel cannot allocate or return an array (it fails to compile if it tries), so buffers
#: are passed in (``windows._admit``'s ``keep``, the ``Events`` buffer).
njit = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always", _nrt=False)


@njit
def fmax(a: float, b: float) -> float:
    """``np.maximum`` of two scalars: NaN if either is NaN."""
    if a != a or b != b:
        return math.nan
    return a if a >= b else b


@njit
def fmin(a: float, b: float) -> float:
    """``np.minimum`` of two scalars: NaN if either is NaN."""
    if a != a or b != b:
        return math.nan
    return a if a <= b else b


@njit
def clip(value: float, low: float, high: float) -> float:
    """``np.clip`` of a scalar: NaN stays NaN."""
    return fmin(fmax(value, low), high)


@njit
def nan_to_num(value: float) -> float:
    """``np.nan_to_num`` of a scalar: NaN → 0, ±inf → the largest finite float."""
    if value != value:
        return 0.0
    if value == math.inf:
        return 1.7976931348623157e308
    if value == -math.inf:
        return -1.7976931348623157e308
    return value
