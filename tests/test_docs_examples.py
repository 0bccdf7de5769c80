"""The commands and requests the docs show exist: every ``cityagent`` option they write is one
of its parser's, and every ``curl`` example asks for a route (and method) the API has.

A user copies these lines; an option renamed or a route moved in the code, and left in the
docs, fails here rather than at their terminal. Parsing only: nothing is started.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.main import create_app
from cityagent.settings import Settings
from control.cli import build_parser
from sensors_sim.cli import build_parser as build_sim_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: ``cityagent SUB`` (not ``cityagent worker:``, a log line's prefix), or the simulator's module.
COMMAND = re.compile(r"\b(?:cityagent ([a-z]+)\b(?!:)|python -m (sensors_sim)\b)")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def commands(text: str) -> Iterator[tuple[int, str, str]]:
    """(line, subcommand, the command's text) for each command the Markdown ``text`` writes:
    in a code span, up to its end; in a fenced block, the line (less a ``#`` comment) and the
    lines it continues on (a trailing ``\\``, or an indented ``[--option]`` synopsis line)."""
    fenced = False
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        for match in COMMAND.finditer(line):
            rest = line[match.start():]
            if fenced:
                rest = _uncommented(rest)
                following = number
                while following < len(lines) and (
                        rest.rstrip().endswith("\\")
                        or re.match(r"\s+\[--", lines[following])):
                    rest += " " + _uncommented(lines[following])
                    following += 1
            else:
                rest = rest.split("`", 1)[0]
            yield number, match.group(1) or "sim", rest


def _uncommented(line: str) -> str:
    return re.sub(r"\s#\s.*", "", line)


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def parsers() -> dict[str, set[str]]:
    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    known = {name: options(parser) for name, parser in sub.choices.items()}
    known["sim"] = options(build_sim_parser())
    return known


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cityagent_option_the_docs_write_exists(path: Path) -> None:
    known = parsers()
    wrong = []
    for number, command, text in commands(path.read_text("utf-8")):
        if command not in known:
            wrong.append(f"{number}: no command 'cityagent {command}'")
            continue
        for option in OPTION.findall(text):
            if option not in known[command]:
                wrong.append(f"{number}: cityagent {command} has no option {option}")
    assert wrong == []


CURL = re.compile(r"^\s*(?:\w+=\$\()?curl\b")
URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost):8000(/[^\s'\"?)]*)?")


def curl_requests(text: str) -> Iterator[tuple[int, str, str]]:
    """(line, method, path) of each ``curl`` of a fenced block, its ``\\`` lines joined."""
    fenced = False
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not (fenced and CURL.match(line)):
            continue
        start = number
        while line.rstrip().endswith("\\") and number < len(lines):
            line = line.rstrip()[:-1] + " " + lines[number]
            number += 1
        line = line.split(" | ", 1)[0]  # what curl's output is piped into is not curl's
        url = URL.search(line)
        if url is None:
            continue
        method = re.search(r"-X\s+([A-Z]+)", line)
        sends = re.search(r"\s(?:-d|--data(?:-binary|-urlencode)?)\s", line)
        if method:
            verb = method.group(1)
        else:
            verb = "GET" if " -G" in line or not sends else "POST"
        yield start, verb, url.group(1) or "/"


def test_the_request_parser_reads_methods_paths_and_continuations() -> None:
    text = ("```sh\ncurl -sS -X POST http://127.0.0.1:8000/v1/readings \\\n  -d @x\n"
            "curl -sS -G http://127.0.0.1:8000/v1/alerts -d status=open\n"
            "curl http://127.0.0.1:8000/v1/zones -d '{}'\n"
            "e=$(curl -s http://127.0.0.1:8000/v1/zones/z \\\n  | tr -d '\\r')\n```\n"
            "curl http://127.0.0.1:8000/outside-a-block\n")
    assert list(curl_requests(text)) == [
        (2, "POST", "/v1/readings"), (4, "GET", "/v1/alerts"), (5, "POST", "/v1/zones"),
        (6, "GET", "/v1/zones/z")]
    assert [(n, c, OPTION.findall(t)) for n, c, t in commands(
        "`cityagent up --simulate` and `cityagent worker: x`\n```\n"
        "cityagent audit --since 1d \\\n  --until 2d   # --not-this\n"
        "cityagent replay FILE [--scores OUT.csv]\n        [--window S]\n```\n")] == [
        (1, "up", ["--simulate"]), (3, "audit", ["--since", "--until"]),
        (5, "replay", ["--scores", "--window"])]


def api_routes() -> list[tuple[re.Pattern[str], set[str]]]:
    """(path pattern, methods) of the OpenAPI document, and the dashboard's page and index."""
    app = create_app(Settings(api_keys="admin:a", kafka="127.0.0.1:9"))
    paths = {path: {m.upper() for m in ops} for path, ops in app.openapi()["paths"].items()}
    paths |= {"/": {"GET"}, "/v1": {"GET"}}
    return [(re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)) + "$"), methods)
            for path, methods in paths.items()]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_curl_example_asks_for_a_route_the_api_has(path: Path) -> None:
    routes = api_routes()
    wrong = []
    for number, method, url_path in curl_requests(path.read_text("utf-8")):
        matching = [methods for pattern, methods in routes if pattern.match(url_path)]
        if not matching:
            wrong.append(f"{number}: no route for {url_path}")
        elif not any(method in methods for methods in matching):
            wrong.append(f"{number}: {url_path} does not take {method}")
    assert wrong == []


#: An ``Idempotency-Key`` header of a shell example, its value a ``$(command)`` or a variable.
KEY_HEADER = re.compile(r"Idempotency-Key: (?:\$\((?P<command>.*?)\)\"|\$(?P<var>\w+))")


def key_commands(text: str) -> list[tuple[int, str]]:
    """(line, command) that makes each Idempotency-Key of the Markdown's fenced blocks: the
    header's own ``$(...)``, or the one assigned to the variable it sends."""
    found, assigned, fenced = [], {}, False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced, assigned = not fenced, {}
            continue
        if not fenced:
            continue
        if match := re.match(r"\s*(\w+)=\$\((.*)\)(?:\s+#.*)?$", line):
            assigned[match.group(1)] = match.group(2)
        for header in KEY_HEADER.finditer(line):
            command = header.group("command") or assigned.get(header.group("var"))
            assert command is not None, f"{number}: ${header.group('var')} is assigned nowhere"
            found.append((number, command))
    return found


def test_the_key_parser_reads_inline_commands_and_variables() -> None:
    text = ("```sh\nK=$(python3 -c 'print(1)')  # once\ncurl -H \"Idempotency-Key: $K\" \\\n"
            "  -H \"Idempotency-Key: $(python3 -c 'print(f(2))')\"\n"
            "curl -H \"Idempotency-Key: $(uuidgen)\"\n```\n")
    assert key_commands(text) == [(3, "python3 -c 'print(1)'"),
                                  (4, "python3 -c 'print(f(2))'"), (5, "uuidgen")]


def test_every_idempotency_key_the_docs_make_is_a_key_wherever_cityagent_runs() -> None:
    """``$(uuidgen)`` printed nothing where uuidgen is not installed (Debian without
    uuid-runtime, this machine): curl then left the header out, and the request went unkeyed
    without a word. The docs' commands must print a key with what CityAgent needs anyway."""
    import subprocess
    import sys

    from api.idempotency import valid_key

    made = [(path.name, number, command) for path in DOCS
            for number, command in key_commands(path.read_text("utf-8"))]
    assert made, "no example sends an Idempotency-Key any more"
    for name, number, command in made:
        assert command.startswith("python3 -c "), f"{name}:{number}: {command}"
        printed = subprocess.run([sys.executable, "-c", command.split(" ", 2)[2].strip("'")],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
        assert valid_key(printed), f"{name}:{number}: {command} printed {printed!r}"


#: docs/readings.md's table of refusals: the start of each row's input cell, and the reading
#: (the water_level sensor '1001' in 历下区) changed as that row says.
READING = {"sensor_id": "1001", "kind": "water_level", "ts": "2026-11-22T08:30:00+08:00",
           "lon": 117.02, "lat": 36.66, "level_m": 2.4}
_NO_LEVEL = {k: v for k, v in READING.items() if k != "level_m"}
_TRAFFIC = {**_NO_LEVEL, "kind": "traffic", "speed_kmh": 60.0, "flow_vph": 900.0,
            "occupancy_pct": 10.0}
REFUSALS: dict[str, list[dict]] = {
    '`"level_m": "2.4"`': [{**READING, "level_m": "2.4"}],
    "no `level_m`": [_NO_LEVEL],
    "`speed_kmh` on": [{**READING, "speed_kmh": 40.0}],
    "`levle_m`": [{**_NO_LEVEL, "levle_m": 2.4}],
    '`"ts": "2026-11-22T08:30:00"`': [{**READING, "ts": "2026-11-22T08:30:00"}],
    "lon/lat outside Shandong": [{**READING, "lon": 110}],
    "lon and lat swapped": [{**READING, "lon": 36.66, "lat": 117.02}],
    '`"lon": 200`': [{**READING, "lon": 200}],
    "a `traffic` reading under": [_TRAFFIC],
    "`ts` more than 5 min": [{**READING, "ts": 1795307400 + 8 * 3600}],
}


def test_the_reasons_readings_md_quotes_are_the_apis() -> None:
    """Each row's reason, with its ``…`` as anything, is the reason the API gives (the
    future row lacked the '(CITYAGENT_FUTURE_TOLERANCE_S)' the API names)."""
    import numpy as np

    from api.ingest import check_items
    from cityagent.detectors.config import KIND_CODES
    from cityagent.regions import default_regions

    rows = re.findall(r"^\| (.+?) \| `([^`]+)`[^|]*\|$", (ROOT / "docs" / "readings.md"
                                                          ).read_text("utf-8"), re.M)
    quoted = {start: [reason for cell, reason in rows if cell.startswith(start)]
              for start in REFUSALS}
    assert all(len(reasons) == 1 for reasons in quoted.values()), quoted
    regions = default_regions()

    def water_level(ids: list[str]) -> np.ndarray:
        return np.full(len(ids), KIND_CODES["water_level"])

    for start, items in REFUSALS.items():
        pattern = re.escape(quoted[start][0]).replace("…", ".*")
        for item in items:
            checked = check_items([item], regions, now_ms=1795307400_000,
                                  known_kinds=water_level)
            [rejection] = checked.rejected
            assert re.fullmatch(pattern, rejection.reason), (start, rejection.reason)


def test_every_option_with_a_default_says_it_in_its_help() -> None:
    """``cityagent bench --help`` said "runs; the median is reported", not that it runs 3."""
    silent = []
    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in [*sub.choices.items(), ("sim", build_sim_parser())]:
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, [], "==SUPPRESS=="):
                if "default" not in (action.help or ""):
                    silent.append(f"cityagent {name} {action.option_strings[-1]}")
    assert silent == []
