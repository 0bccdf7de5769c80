"""The detectors: pure, vectorised over every sensor whose window closed, state in and out.

Each module holds one detector and says what it is for; ``features`` computes what they
share (the window's robust value, the sensor's baseline and scale); ``episodes`` turns
per-window verdicts into start / escalate / end events.
"""
