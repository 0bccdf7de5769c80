"""Argument types shared by the command-line tools: clear messages for bad numbers."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ("positive_int", "non_negative_int", "port_number", "positive_float",
           "non_negative_float", "seconds_between", "positive_int_at_most")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number; got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive; got {value}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 1-65535: `up --port 70000` ended in an OverflowError traceback from bind()."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port, 1 to 65535; got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more; got {value}")
    return value


def _number(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number; got {text}")
    if value < 0 or (value == 0 and not allow_zero):
        raise argparse.ArgumentTypeError(
            f"must be {'0 or more' if allow_zero else 'positive'}; got {text}"
        )
    return value


def positive_float(text: str) -> float:
    return _number(text, allow_zero=False)


def non_negative_float(text: str) -> float:
    return _number(text, allow_zero=True)


def seconds_between(low: float, high: float):
    """A duration in seconds within [low, high]: ``--window 1e16`` overflowed the window
    arithmetic (64-bit milliseconds), and 0.0004 s became a window of 0 ms."""
    def parse(text: str) -> float:
        value = _number(text, allow_zero=low == 0)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must lie between {low:g} and {high:,.0f} seconds; got {text}")
        return value

    parse.__name__ = "seconds"  # argparse names the type in its messages
    return parse


def positive_int_at_most(most: int, why: Callable[[int], str] | None = None,
                         name: str = "count") -> Callable[[str], int]:
    """A whole number from 1 to ``most``; beyond, ``why(value)`` (what so many would cost,
    or why there is no use for more) is said in brackets. Counts without a bound ran
    machines out of memory (10^9 bench sensors) or for hours without a word."""
    def parse(text: str) -> int:
        value = positive_int(text)
        if value > most:
            reason = f" ({why(value)})" if why else ""
            raise argparse.ArgumentTypeError(f"must be at most {most:,}{reason}; got {text}")
        return value

    parse.__name__ = name  # argparse names the type in its messages
    return parse
