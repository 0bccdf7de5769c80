"""`cityagent replay FILE`: the detection code offline over a file of past readings.

Reads a CSV (``timestamp,value`` for one series, or ``sensor_id,kind,timestamp,...``) or JSON
lines, runs it through the same ``DetectionEngine`` the worker runs (``cityagent.replay``),
and reports what it found: a summary (stdout; ``--json`` for one JSON object), the anomaly
events (a table of the first few, or all of them as JSON lines with ``--anomalies``) and one
causal anomaly score per input row (``--scores``). Progress goes to stderr on big files. Bad
input exits 2 with one line naming the file and line; no stack trace.

The detection settings are the workers' unless told otherwise: ``--config``, ``--window`` and
``--grace`` win, else ``CITYAGENT_DETECTION``, ``CITYAGENT_WINDOW_S`` and
``CITYAGENT_GRACE_S`` (and ``CITYAGENT_FORGET_AFTER_S``) as the workers read them, else the
packaged file, the auto window and no grace. One line on stderr says which it used and from
where: a replay of production history on a worker host ran with the packaged settings, not
the workers', without a word.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from control.args import seconds_between
from control.kernels import load_kernels, say_config_notes

__all__ = ("add_arguments", "build_parser", "choose_settings", "main", "run_replay",
           "ReplaySettings")

_TABLE_ROWS = 10
#: Longest --window or --grace: a year.
_YEAR_S = 366 * 86_400.0


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("file", type=Path, metavar="FILE",
                        help="CSV (timestamp,value or sensor_id,kind,timestamp,...) or JSON "
                             "lines; .gz is read too")
    parser.add_argument("--scores", type=Path, metavar="OUT.csv",
                        help="write row,timestamp,sensor_id,value,score: one line per input "
                             "row, in input order")
    parser.add_argument("--anomalies", type=Path, metavar="OUT.jsonl",
                        help="write every anomaly event as JSON lines (default: print the "
                             "first few)")
    parser.add_argument("--window", type=seconds_between(0.001, _YEAR_S), metavar="SECONDS",
                        help="tumbling window size (default: CITYAGENT_WINDOW_S, as the "
                             "workers; else the settings file's 60 s, for generic series at "
                             "least the median interval between readings)")
    parser.add_argument("--grace", type=seconds_between(0, _YEAR_S), metavar="SECONDS",
                        help="grace after a window's end before it is judged (default: "
                             "CITYAGENT_GRACE_S; else 0: the rows are replayed in time order, "
                             "so nothing is late)")
    parser.add_argument("--config", type=Path, metavar="TOML",
                        help="detection settings (default: CITYAGENT_DETECTION, as the "
                             "workers; else the packaged detection.toml); "
                             "CITYAGENT_FORGET_AFTER_S overrides its [state] forget_after_s, "
                             "as in the workers")
    parser.add_argument("--registry", type=Path, metavar="FILE",
                        help="sensor registry (.csv or .json) with per-sensor levels/intervals")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as one JSON object")
    return parser


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(
        prog="cityagent replay",
        description="Run the anomaly detectors offline over a CSV or JSON-lines file; write a "
                    "causal score per row and the anomaly events.",
    ))


def run_replay(args: argparse.Namespace) -> int:
    """Run ``cityagent replay`` with parsed arguments; CityAgentError on bad input."""
    from cityagent.detectors.registry_profiles import SensorProfiles
    from cityagent.replay import (
        auto_window_s,
        read_replay_file,
        replay,
        summarize,
        write_anomalies,
        write_scores,
    )
    targets = {flag: path for flag, path in (("--scores", args.scores),
                                             ("--anomalies", args.anomalies)) if path}
    try:
        outputs = _Outputs(args.file, targets)
    except _BadOutput as exc:
        _fail(str(exc))
        return 2
    try:
        chosen = choose_settings(args)
        config = chosen.config
        profiles = SensorProfiles.load(chosen.registry, config) if chosen.registry else None
        load_kernels(config, _fail, row_scores=True)  # compiling is not detecting: not in "took ... to detect"
        started = time.perf_counter()
        inp = read_replay_file(args.file, config, progress=_progress)
        read_s = time.perf_counter() - started
        if len(inp) == 0:
            _fail(f"{args.file}: no data rows after the header")
            return 2
        window_s = chosen.window_s if chosen.window_s is not None else auto_window_s(inp, config)
        chosen.check(window_s)
        _fail(chosen.line(window_s))
        result = replay(inp, window_s=window_s, grace_s=chosen.grace_s, config=config,
                        profiles=profiles, progress=_progress)
        try:
            if args.scores:
                write_scores(outputs.part("--scores"), inp, result, progress=_progress)
            if args.anomalies:
                write_anomalies(outputs.part("--anomalies"), result.anomalies,
                                placed=inp.placed_sensors())
            outputs.commit()
        except OSError as exc:
            _fail(f"cannot write {exc.filename}: {exc.strerror or exc}")
            return 2
    finally:
        outputs.discard()
    summary = summarize(inp, result)
    summary["read_s"] = round(read_s, 3)
    summary["forget_after_s"] = config.forget_after_ms / 1000
    summary["settings_from"] = chosen.sources
    if args.scores:
        summary["scores_file"] = str(args.scores)
    if args.anomalies:
        summary["anomalies_file"] = str(args.anomalies)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print(format_summary(summary))
        if not args.anomalies and result.anomalies:
            print()
            print(format_anomalies(result.anomalies, _TABLE_ROWS))
    return 0


@dataclass(frozen=True)
class ReplaySettings:
    """The detection settings a replay uses, and where each came from (``sources``: a flag,
    a ``CITYAGENT_*`` variable, ``auto``, ``default``, ``packaged`` or ``settings file``)."""

    config: Any  # DetectionConfig
    path: Path | None  # the settings file; None: the packaged one
    window_s: float | None  # None: auto (cityagent.replay.auto_window_s)
    grace_s: float
    sources: dict[str, str]
    #: Variables set in the environment that a flag overrode: variable -> its value.
    overridden: dict[str, str]
    #: The sensor registry (per-sensor levels and intervals); None: none.
    registry: Path | None = None

    def check(self, window_s: float) -> None:
        """ConfigError naming where the grace and the window came from if it exceeds it."""
        from cityagent.errors import ConfigError

        if self.grace_s > window_s:
            raise ConfigError(
                f"the grace ({self.grace_s:g} s, {self.sources['grace_s']}) must lie between 0 "
                f"and the window ({window_s:g} s, {self.sources['window_s']})")

    def line(self, window_s: float) -> str:
        """``settings: window 60 s (auto), grace 0 s (default), ...``: what the replay uses."""
        def said(key: str, text: str) -> str:
            source = self.sources[key]
            over = _FLAG_VAR.get(source)
            if over in self.overridden:
                source += f" over {over}={self.overridden[over]}"
            return f"{text} ({source})"

        where = str(self.path) if self.path else "cityagent/data/detection.toml"
        forget_s = self.config.forget_after_ms / 1000
        return ("settings: " + ", ".join((
            said("window_s", f"window {window_s:g} s"),
            said("grace_s", f"grace {self.grace_s:g} s"),
            said("forget_after_s", f"forget_after_s {forget_s:.12g} s"),
            said("config", f"detection settings {where}"),
            *([said("registry", f"sensor registry {self.registry}")] if self.registry else []))))


#: Each flag and the workers' variable it wins over.
_FLAG_VAR = {"--config": "CITYAGENT_DETECTION", "--window": "CITYAGENT_WINDOW_S",
             "--grace": "CITYAGENT_GRACE_S", "--registry": "CITYAGENT_SENSOR_REGISTRY"}


def choose_settings(args: argparse.Namespace,
                    environ: Mapping[str, str] | None = None) -> ReplaySettings:
    """The flags, else the workers' variables (checked as the workers check them), else
    replay's defaults; the settings file loaded as the workers load it, and its notes said.

    ConfigError (naming the variable, file or flag) when something is wrong.
    """
    from cityagent.detectors.config import DetectionConfig
    from cityagent.settings import detection_settings_from_env

    env = detection_settings_from_env(environ)
    raw = os.environ if environ is None else environ
    sources: dict[str, str] = {}
    overridden = {var: raw[var].strip() for flag, var in _FLAG_VAR.items()
                  if getattr(args, flag[2:]) is not None and raw.get(var, "").strip()}

    def pick(key: str, flag: str, given: Any, from_env: Any, fallback: Any, otherwise: str):
        if given is not None:
            sources[key] = flag
            return given
        if from_env is not None:
            sources[key] = _FLAG_VAR[flag]
            return from_env
        sources[key] = otherwise
        return fallback

    path = pick("config", "--config", args.config, env.detection_path, None, "packaged")
    window_s = pick("window_s", "--window", args.window, env.window_s, None, "auto")
    grace_s = pick("grace_s", "--grace", args.grace, env.grace_s, 0.0, "default")
    registry = pick("registry", "--registry", args.registry, env.registry_path, None, "none")
    sources["forget_after_s"] = ("CITYAGENT_FORGET_AFTER_S" if env.forget_after_s is not None
                                 else "settings file")
    chosen = ReplaySettings(None, path, window_s, grace_s, sources, overridden, registry)
    if window_s is not None:
        chosen.check(window_s)
    # As the workers load it: a window of CITYAGENT_WINDOW_S caps the file's idle wait, and
    # say_config_notes says so as the worker does (the grace is replay's own, capped never).
    by_env = window_s if sources["window_s"] == "CITYAGENT_WINDOW_S" else None
    config = DetectionConfig.load(path, window_s=by_env,
                                  grace_s=grace_s if by_env is not None else None,
                                  forget_after_s=env.forget_after_s)
    say_config_notes(config, _fail)
    return replace(chosen, config=config)


class _BadOutput(Exception):
    pass


class _Outputs:
    """The output files, written to temporaries beside them and renamed over them at the end.

    So a path that cannot be written fails before minutes of reading and detecting, not after;
    a run that fails or is interrupted (Ctrl-C) leaves no half-written file that looks whole;
    and an output path that is the input file is refused (it was overwritten with the scores).
    """

    def __init__(self, source: Path, targets: dict[str, Path]) -> None:
        self._targets = targets
        self._parts: dict[str, Path] = {}
        seen: dict[Path, str] = {}
        for flag, target in targets.items():
            if target.is_dir():
                raise _BadOutput(f"{flag} {target} is a directory; give a file name")
            if target.exists() and source.exists() and os.path.samefile(target, source):
                raise _BadOutput(f"{flag} {target} is the input file; it would be overwritten")
            resolved = target.resolve()
            if resolved in seen:
                raise _BadOutput(f"{seen[resolved]} and {flag} name the same file {target}")
            seen[resolved] = flag
        try:
            for flag, target in targets.items():
                fd, part = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                            suffix=".part")
                os.close(fd)
                self._parts[flag] = Path(part)
                os.chmod(part, 0o666 & ~_umask())  # as open() would have made it
        except OSError as exc:
            self.discard()
            # The folder, not the temporary's name (.x.csv.2k3j.part) the user never gave.
            raise _BadOutput(f"cannot write {flag} {target}: {target.parent}: "
                             f"{exc.strerror or exc}") from None

    def part(self, flag: str) -> Path:
        return self._parts[flag]

    def commit(self) -> None:
        for flag, part in list(self._parts.items()):
            os.replace(part, self._targets[flag])
            del self._parts[flag]

    def discard(self) -> None:
        for part in self._parts.values():
            with contextlib.suppress(OSError):
                part.unlink()
        self._parts.clear()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _count(n: int, word: str) -> str:
    """``1 row``, ``2 rows``, ``1,200 rows``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def format_summary(s: dict[str, Any]) -> str:
    kinds = ", ".join(f"{k} {n:,}" for k, n in s["kinds"].items())
    by_detector = ", ".join(f"{d} {n}" for d, n in s["episodes_by_detector"].items())
    rate = s["rows"] / s["elapsed_s"] if s["elapsed_s"] > 0 else 0.0
    lines = [
        f"replayed   {s['file']} ({s['format']}): {_count(s['rows'], 'row')}, "
        f"{_count(s['sensors'], 'sensor')} ({kinds})",
        f"event time {s['first']} .. {s['last']}"
        + ("  (all in 1970: read as row numbers, not clock times)"
           if s.get("times_are_row_numbers") else ""),
        f"windows    {s['window_s']:g} s, grace {s['grace_s']:g} s: {s['windows']:,} judged; "
        f"late readings {s['late']:,}",
        *([f"repeated   {_count(s['repeated_times'], 'row')} with the time of an earlier row of "
           "their sensor (all replayed)"] if s.get("repeated_times") else []),
        f"anomalies  {_count(s['episodes'], 'episode')}"
        + (f" ({by_detector})" if by_detector else "")
        + f", {_count(s['anomalies'], 'event')} (start/escalate/end)",
        f"scores     max {s['score_max']:.3f}; {_count(s['rows_scored_above_0_5'], 'row')} at "
        "0.5 or more"
        + (f"; {_count(s['rows_before_warm'], 'row')} before their sensor's baseline was learned "
           "(deviation_warmup windows) and score only on domain levels (0 for generic series)"
           if s.get("rows_before_warm") else ""),
        f"took       {s['elapsed_s']:.2f} s to detect ({rate:,.0f} rows/s), "
        f"{s.get('read_s', 0.0):.2f} s to read",
    ]
    if s["ignored_columns"]:
        lines.append(f"ignored    columns {', '.join(s['ignored_columns'])}")
    if "scores_file" in s:
        lines.append(f"scores  -> {s['scores_file']}")
    if "anomalies_file" in s:
        lines.append(f"events  -> {s['anomalies_file']}")
    return "\n".join(lines)


def format_anomalies(anomalies: list, limit: int) -> str:
    from cityagent.readings import format_ts

    head = ("window start", "sensor", "detector", "phase", "severity", "reason", "observed",
            "expected", "score")
    rows = [head]
    for a in anomalies[:limit]:
        rows.append((format_ts(a.window_start_ms)[:19].replace("T", " "), a.sensor_id,
                     a.detector, a.phase, a.severity, a.reason, f"{a.observed:.6g}",
                     f"{a.expected:.6g}", f"{a.score:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if len(anomalies) > limit:
        text.append(f"... {len(anomalies) - limit:,} more events; write them all with "
                    "--anomalies OUT.jsonl")
    return "\n".join(text)


def _progress(stage: str, done: int, total: int) -> None:
    if stage == "read":
        print(f"cityagent replay: read {done:,} rows ...", file=sys.stderr, flush=True)
    elif stage == "write":
        print(f"cityagent replay: wrote {done:,} of {total:,} scores ({done / total:.0%})",
              file=sys.stderr, flush=True)
    else:
        print(f"cityagent replay: replayed {done:,} of {total:,} rows ({done / total:.0%})",
              file=sys.stderr, flush=True)


def _fail(message: str) -> None:
    print(f"cityagent replay: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """``python -m control.replay``: the same as ``cityagent replay``."""
    from cityagent.errors import CityAgentError

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run_replay(args)
    except CityAgentError as exc:
        _fail(str(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())
