"""The map's labels are readable: drilled into any city, at the dashboard's two sizes and in both
languages, no two district labels overlap and every district is labelled, whatever its alerts'
levels (in its district, by its short name there, or on a tag beside it with a line to it);
dark letters lie over no dark ground; and where a label has no room at all (a phone),
the district names itself on hover.

ECharts' ``labelLayout: {hideOverlap: true}`` does nothing for a geo component's labels
(apache/echarts#20600): Jinan's Lixia, Huaiyin, Licheng and Shizhong ran into each other in
English at 1366×768, and so did Qingdao's, Zibo's, Yantai's... The boxes are read back from what
ECharts drew (its zrender display list), whoever placed them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser import test_dashboard as base
from tests.browser.test_dashboard import Dashboard, open_dashboard
from tests.helpers import Pipeline, running_pipeline

chromium = base.chromium  # the fixture: Chromium through playwright, or skip (fail in CI)

pytestmark = [pytest.mark.integration, pytest.mark.browser]

#: Every label ECharts drew on the map: its text and its box in the chart's pixels. A label is a
#: zrender Text whose lines (tspans) are in the display list; a hidden one is not.
LABELS_JS = """() => {
  const chart = echarts.getInstanceByDom(document.querySelector('#map'));
  const texts = new Set();
  for (const el of chart.getZr().storage.getDisplayList(true)) {
    if (el.type === 'tspan' && el.parent && el.parent.type === 'text') texts.add(el.parent);
  }
  return [...texts].map((el) => {
    const r = el.getBoundingRect().clone();
    const m = el.getComputedTransform();
    if (m) r.applyTransform(m);
    return {text: el.style.text, x: r.x, y: r.y, w: r.width, h: r.height,
            fill: el.style.fill, halo: el.style.stroke, halo_px: el.style.lineWidth || 0,
            tag: el.style.backgroundColor || null};
  });
}"""

#: One open alert in each of the given districts, with no position (no dot on the map, which
#: could take the pointer's hover from its district): [[city, district, severity, seq?]]; the
#: same district with a higher seq changes its alert's severity.
INGEST_JS = """(specs) => window.__cityagent.ingest(specs.map(([city, district, sev, seq = 1]) => {
  const now = Date.now();
  const alert = {
    alert_id: `label-${district}`, scope: `district:${district}`, status: 'open', severity: sev,
    kind: 'water_level', family: 'flood', title_zh: `标签测试 ${district}`,
    title_en: `label test ${district}`, reason_zh: '测试', reason_en: 'test', city_code: city,
    city_name: city, district_code: district, district_name: district, zone_ids: [],
    departments: ['water'], departments_zh: [], sensors: [district], sensor_count: 1,
    anomaly_count: 1, lon: null, lat: null, first_seen_ms: now, last_seen_ms: now,
    opened_ms: now, escalation_level: 'district', acknowledged_by: null,
    acknowledged_at_ms: null, seq};
  return {event_id: `label-${district}-${seq}`, type: 'opened', alert_id: alert.alert_id,
          actor: 'system', at_ms: now, alert};
}))"""

SEVERITIES = ["red", "orange", "yellow", "blue"]
QUIET = "#16335e"  # map.js: a region without alerts

#: The chart has taken its element's size: the map is a few pixels shorter drilled in (返回全省
#: beside the title), and the chart resizes in a ResizeObserver, after the level has changed.
SIZED_JS = """(() => {
  const el = document.querySelector('#map');
  const chart = echarts.getInstanceByDom(el);
  return chart.getWidth() === el.clientWidth && chart.getHeight() === el.clientHeight;
})()"""


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with running_pipeline(kafka_bootstrap, tmp_path_factory.mktemp("map-labels"), "ml") as p:
        yield p


@pytest.fixture(scope="module")
def geo(stack: Pipeline) -> dict[str, Any]:
    """The cities, and each city's districts: {code: {zh, en}} by city code, in map order."""
    cities = httpx.get(f"{stack.url}/geo/cities.json", timeout=60).json()["features"]
    out: dict[str, Any] = {}
    for city in cities:
        code = city["properties"]["code"]
        features = httpx.get(f"{stack.url}/geo/{code}.json", timeout=30).json()["features"]
        out[code] = {f["properties"]["code"]: {"zh": f["properties"]["name_zh"],
                                               "en": f["properties"]["name_en"]}
                     for f in features}
    return out


def with_alerts(districts: dict[str, Any]) -> dict[str, str]:
    """Two districts in three have an alert (a label of two lines: the name and the count), of
    every severity in turn; the third has none (a label of one line)."""
    return {code: SEVERITIES[i % 4] for i, code in enumerate(districts) if i % 3 != 2}


def overlapping(labels: list[dict[str, Any]]) -> list[tuple[str, str]]:
    pairs = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            if (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                    and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]):
                pairs.append((a["text"], b["text"]))
    return pairs


def short_name(name: str) -> str:
    """A district's name less its last word or character (map.js ``shortName``): 市北 for 市北区,
    Shibei for Shibei District, the label of a district too small for its name; 莒县 stays."""
    words = name.split(" ")
    if len(words) > 1:
        return " ".join(words[:-1])
    return name[:-1] if len(name) > 2 else name


def label_names(districts: dict[str, Any], lang: str) -> dict[str, str]:
    """What a district's label may say on its first line (its name, or its short name): code."""
    names = {short_name(both[lang]): code for code, both in districts.items()}
    names.update({both[lang]: code for code, both in districts.items()})
    return names


def settled_labels(board: Dashboard, districts: dict[str, Any], alerted: dict[str, str],
                   lang: str) -> list[dict[str, Any]]:
    """The city's labels once the page has drawn its alerts' counts: a label drawn before them
    is smaller, and the page draws the counts after the drill's first picture."""
    names = label_names(districts, lang)
    counted = [name for name, code in names.items() if code in alerted]
    board.page.wait_for_function(
        f"""(counted) => {{
          const labels = ({LABELS_JS})();
          return labels.length > 0 && labels.every((l) => {{
            const lines = l.text.split('\\n');
            return !counted.includes(lines[0]) || lines.length === 2;
          }});
        }}""", arg=counted, timeout=10_000)
    labels = board.page.evaluate(LABELS_JS)
    unknown = [label["text"] for label in labels if label["text"].split("\n")[0] not in names]
    assert unknown == [], f"labels that name no district: {unknown}"
    return labels


def unlabelled(labels: list[dict[str, Any]], districts: dict[str, Any], lang: str) -> list[str]:
    """The districts that no label names."""
    names = label_names(districts, lang)
    shown = {names[label["text"].split("\n")[0]] for label in labels}
    return [both[lang] for code, both in districts.items() if code not in shown]


#: What a reader could misread in the labels (given them and {first line: district code}):
#: a label whose centre is outside its district unless it is on a tag of its district's colour
#: with a line from inside the district to within 3 px of it (a callout); dark letters over the
#: dark background or a district without alerts: 3 or more of 10 points along the name's top
#: and bottom, where such letters are only their halo's outline.
MISREAD_JS = """([labels, names]) => {
  const chart = echarts.getInstanceByDom(document.querySelector('#map'));
  const geo = chart.getModel().getComponent('geo');
  const regions = geo.coordinateSystem.regions;
  const colour = (code) => geo.getRegionModel(code).get(['itemStyle', 'areaColor']);
  const NONE = '#16335e';  // map.js: a district without alerts
  const under = (x, y) => {
    const where = chart.convertFromPixel({geoIndex: 0}, [x, y]);
    const region = where && regions.find((r) => r.contain(where));
    return region ? region.name : null;
  };
  const lines = (chart.getOption().series.find((s) => s.type === 'lines')?.data || [])
    .map((d) => d.coords.map((c) => chart.convertToPixel({geoIndex: 0}, c)));
  const near = ([x, y], l) => Math.hypot(Math.max(l.x - x, 0, x - l.x - l.w),
                                         Math.max(l.y - y, 0, y - l.y - l.h)) <= 3;
  const bad = [];
  for (const l of labels) {
    const rows = l.text.split('\\n');
    const code = names[rows[0]];
    if (l.tag) {
      if (l.tag !== colour(code)) bad.push([l.text, 'tag not of its colour', l.tag]);
      if (!lines.some(([a, b]) => under(...a) === code && near(b, l))) bad.push([l.text, 'tag without a line']);
      continue;
    }
    if (under(l.x + l.w / 2, l.y + l.h / 2) !== code) bad.push([l.text, 'outside its district']);
    if (l.fill !== '#1a1200') continue;
    const row = l.h / rows.length;
    let other = 0;
    for (let i = 0; i < 5; i += 1) {
      for (const y of [l.y + 3, l.y + row - 3]) {
        const code2 = under(l.x + 2 + (i * (l.w - 4)) / 4, y);
        if (!code2 || colour(code2) === NONE) other += 1;
      }
    }
    if (other >= 3) bad.push([l.text, 'dark letters over a dark ground', other]);
  }
  return bad;
}"""


def misread(board: Dashboard, labels: list[dict[str, Any]], districts: dict[str, Any],
            lang: str) -> list[Any]:
    return board.page.evaluate(MISREAD_JS, [labels, label_names(districts, lang)])


#: Page coordinates of a point well inside a district, nearest its label point: ECharts' label
#: point of a concave district (Qingdao's 市南区) can lie in the next one.
INSIDE_JS = """(code) => {
  const chart = echarts.getInstanceByDom(document.querySelector('#map'));
  const region = chart.getModel().getComponent('geo').coordinateSystem.getRegion(code);
  const inside = (x, y) => {
    const c = chart.convertFromPixel({geoIndex: 0}, [x, y]);
    return Boolean(c) && region.contain(c);
  };
  const r = region.getBoundingRect();
  const [x0, y1] = chart.convertToPixel({geoIndex: 0}, [r.x, r.y]);
  const [x1, y0] = chart.convertToPixel({geoIndex: 0}, [r.x + r.width, r.y + r.height]);
  const [cx, cy] = chart.convertToPixel({geoIndex: 0}, region.getCenter());
  let best = null;
  for (let x = Math.min(x0, x1); x <= Math.max(x0, x1); x += 2) {
    for (let y = Math.min(y0, y1); y <= Math.max(y0, y1); y += 2) {
      if (![[0, 0], [-4, 0], [4, 0], [0, -4], [0, 4]].every(([dx, dy]) => inside(x + dx, y + dy))) continue;
      const d = Math.hypot(x - cx, y - cy);
      if (!best || d < best.d) best = {x, y, d};
    }
  }
  const box = document.querySelector('#map').getBoundingClientRect();
  return best && {x: box.left + best.x, y: box.top + best.y};
}"""


def hover_names(board: Dashboard, code: str, name: str) -> None:
    """Hovering the district shows its name: in the tooltip, and its label."""
    page = board.page
    where = page.evaluate(INSIDE_JS, code)
    assert where, f"no point inside {name} to hover"
    page.mouse.move(where["x"], where["y"])
    page.wait_for_function("(name) => document.querySelector('#map').innerText.includes(name)",
                           arg=name, timeout=3_000)
    page.wait_for_function(f"(name) => ({LABELS_JS})().some((l) => l.text.split('\\n')[0] === name)",
                           arg=name, timeout=3_000)
    page.mouse.move(1, 1)


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (1366, 768)])
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_no_two_labels_overlap_and_every_district_is_labelled(
        chromium: Any, stack: Pipeline, geo: dict[str, Any], width: int, height: int,
        lang: str) -> None:
    context, board = open_dashboard(chromium, stack.url, width, height)
    try:
        page = board.page
        specs = [[city, code, sev] for city, districts in geo.items()
                 for code, sev in with_alerts(districts).items()]
        page.evaluate(INGEST_JS, specs)
        page.wait_for_function(f"window.__cityagent.alerts().length >= {len(specs)}",
                               timeout=5_000)
        if lang == "en":
            page.click("#lang")
            page.wait_for_function("document.querySelector('#map-title').textContent"
                                   " === 'Shandong'", timeout=2_000)
        # The province's 16 cities: as they were, each labelled, none overlapping.
        page.wait_for_function(f"({LABELS_JS})().length === 16"
                               f" && ({LABELS_JS})().every((l) => l.text.includes('\\n'))",
                               timeout=10_000)
        province = page.evaluate(LABELS_JS)
        assert overlapping(province) == [], (width, height, lang, "province")

        problems: dict[str, Any] = {}
        for city, districts in geo.items():
            where = page.evaluate(f"window.__cityagent.pixelOf('{city}')")
            page.mouse.click(where["x"], where["y"])
            page.wait_for_function(f"window.__cityagent.mapState().city === '{city}'"
                                   f" && {SIZED_JS}", timeout=5_000)
            page.mouse.move(1, 1)  # no district under the pointer (its hover shows its label)
            labels = settled_labels(board, districts, with_alerts(districts), lang)
            if bad := overlapping(labels):
                problems[city] = bad
            # A label wider than its district spills onto neighbours and the dark background:
            # its letters have a halo unlike their own colour ("Huaiyin District" lost its H).
            if bare := [lab["text"] for lab in labels
                        if lab["halo_px"] < 2 or lab["halo"] in (None, "none", lab["fill"])]:
                problems[f"{city} without a halo"] = bare
            if missing := unlabelled(labels, districts, lang):
                problems[f"{city} unlabelled"] = missing
            if bad := misread(board, labels, districts, lang):
                problems[f"{city} misread"] = bad
            page.click("#back")
            page.wait_for_function("window.__cityagent.mapState().level === 'province'"
                                   f" && {SIZED_JS}", timeout=5_000)
        assert not problems, f"district labels at {width}×{height} ({lang}): {problems}"
        assert board.errors == [] and board.outside == []
    finally:
        context.close()


#: Yantai with an alert in every district, its centre 芝罘区 (Zhifu) less severe than 福山区 and
#: 莱山区 on either side: their labels, placed first, took every place Zhifu's narrow district had
#: in English at 1366×768, though each had room elsewhere. The city's centre must be labelled.
YANTAI = {"370602": "yellow", "370611": "orange", "370612": "red", "370613": "red",
          "370634": "red", "370681": "blue", "370682": "red", "370683": "orange",
          "370684": "red", "370685": "blue", "370686": "yellow", "370687": "orange"}


def open_city(chromium: Any, url: str, size: tuple[int, int], lang: str, city: str,
              alerts: dict[str, str]) -> tuple[Any, Dashboard]:
    """A page of ``size`` in ``lang``, with an alert in each district of ``alerts``
    ({code: severity}), drilled into ``city``, the pointer off the map."""
    context, board = open_dashboard(chromium, url, *size)
    page = board.page
    page.evaluate(INGEST_JS, [[city, code, sev] for code, sev in alerts.items()])
    page.wait_for_function(f"window.__cityagent.alerts().length >= {len(alerts)}", timeout=5_000)
    if lang == "en":
        page.click("#lang")
        page.wait_for_function("document.querySelector('#map-title').textContent"
                               " === 'Shandong'", timeout=2_000)
    where = page.evaluate(f"window.__cityagent.pixelOf('{city}')")
    page.mouse.click(where["x"], where["y"])
    page.wait_for_function(f"window.__cityagent.mapState().city === '{city}' && {SIZED_JS}",
                           timeout=5_000)
    page.mouse.move(1, 1)
    return context, board


def test_a_small_central_district_is_labelled_beside_worse_neighbours(
        chromium: Any, stack: Pipeline, geo: dict[str, Any]) -> None:
    districts = geo["370600"]
    assert set(YANTAI) == set(districts)
    context, board = open_city(chromium, stack.url, (1366, 768), "en", "370600", YANTAI)
    try:
        labels = settled_labels(board, districts, YANTAI, "en")
        shown = {label["text"].split("\n")[0] for label in labels}
        assert "Zhifu District" in shown, sorted(shown)
        assert shown == {names["en"] for names in districts.values()}, sorted(shown)
        assert overlapping(labels) == []
        assert board.errors == [] and board.outside == []
    finally:
        context.close()


#: The map is drawn in its districts' colours ({code: colour}) and nothing on it moves.
DRAWN_JS = """(colors) => window.__cityagent.mapState().regions.every((r) => r.color === colors[r.code])
  && echarts.getInstanceByDom(document.querySelector('#map')).getZr().animation.isFinished()"""

#: Qingdao with every district alerting, at levels drawn at random (seeded), in turn: its two
#: smallest districts, 市南区 and 市北区, found no room for their labels at 1366×768 in 100 of 300
#: such patterns in Chinese and 138 in English, and went unlabelled.
QINGDAO_PATTERNS = 12


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_district_is_labelled_whatever_the_levels(
        chromium: Any, stack: Pipeline, geo: dict[str, Any], lang: str) -> None:
    districts = geo["370200"]
    rng = random.Random(370200)
    patterns = [{code: rng.choice(SEVERITIES) for code in districts}
                for _ in range(QINGDAO_PATTERNS)]
    context, board = open_city(chromium, stack.url, (1366, 768), lang, "370200", patterns[0])
    try:
        page = board.page
        problems: dict[str, Any] = {}
        for seq, pattern in enumerate(patterns, start=1):
            if seq > 1:  # the same alerts, at other levels
                page.evaluate(INGEST_JS, [["370200", code, sev, seq]
                                          for code, sev in pattern.items()])
            page.wait_for_function(DRAWN_JS, arg={code: base.SEVERITY_COLORS[sev]
                                                  for code, sev in pattern.items()},
                                   timeout=5_000)
            labels = settled_labels(board, districts, pattern, lang)
            for what, found in (("overlapping", overlapping(labels)),
                                ("unlabelled", unlabelled(labels, districts, lang)),
                                ("misread", misread(board, labels, districts, lang))):
                if found:
                    problems[f"pattern {seq} {what}"] = found
        assert not problems, f"Qingdao at 1366×768 ({lang}): {problems}"
        assert board.errors == [] and board.outside == []
    finally:
        context.close()


def test_a_district_without_room_for_its_label_names_itself_on_hover(
        chromium: Any, stack: Pipeline, geo: dict[str, Any]) -> None:
    """On a phone (390×844, the map 300-380 px high) Yantai with an alert in every district has
    no room for every label in English, in the districts or beside them: a district without
    its label keeps its colour, and hovering it shows its name in the tooltip and its label."""
    districts = geo["370600"]
    context, board = open_city(chromium, stack.url, (390, 844), "en", "370600", YANTAI)
    try:
        labels = settled_labels(board, districts, YANTAI, "en")
        assert overlapping(labels) == []
        hidden = unlabelled(labels, districts, "en")
        assert hidden, "every label has room on a phone: hover a hidden label elsewhere"
        for code, names in districts.items():
            if names["en"] in hidden:
                hover_names(board, code, names["en"])
        assert board.errors == [] and board.outside == []
    finally:
        context.close()


#: The province's cities in patterns of yellow, orange and none: {code: severity} from the
#: cities in map order (quiet neighbours put dark ground next to the labels).
CITY_PATTERNS = [
    lambda i: ("yellow", "orange")[i % 2] if i % 4 != 3 else None,
    lambda i: ("orange", "yellow")[i % 2] if i % 3 != 1 else None,
    lambda i: "yellow",
    lambda i: "orange" if i % 2 else None,
]


@pytest.mark.parametrize(("width", "height", "lang"),
                         [(1366, 768, "zh"), (1366, 768, "en"), (1920, 1080, "en"),
                          (390, 844, "zh"), (390, 844, "en")])
def test_city_labels_on_yellow_and_orange_read_over_the_dark_ground(
        chromium: Any, stack: Pipeline, geo: dict[str, Any], width: int, height: int,
        lang: str) -> None:
    """The province's city labels keep their places, but their letters follow the districts'
    rule: on a yellow or orange city, dark letters only where none of them lie over the dark
    background or a city without alerts. They were dark on every yellow and orange city, and
    a name spilling over the sea or a quiet neighbour was only its outline."""
    context, board = open_dashboard(chromium, stack.url, width, height)
    try:
        page = board.page
        cities = list(geo)
        if lang == "en":
            page.click("#lang")
            page.wait_for_function("document.querySelector('#map-title').textContent"
                                   " === 'Shandong'", timeout=2_000)
        names = {page.evaluate(f"window.__cityagent.map.name('{code}')"): code for code in cities}
        problems, dark = {}, 0
        for seq, pattern in enumerate(CITY_PATTERNS, start=1):
            levels = {code: pattern(i) for i, code in enumerate(cities)}
            # One alert per city, in its first district, raised or lowered (seq) to the level; a
            # quiet city's is resolved.
            page.evaluate("""(events) => window.__cityagent.ingest(events)""", [
                city_event(code, next(iter(geo[code])), sev, seq) for code, sev in levels.items()])
            page.wait_for_function(DRAWN_JS, arg={code: base.SEVERITY_COLORS[sev] if sev else QUIET
                                                   for code, sev in levels.items()},
                                   timeout=5_000)
            alerted = sum(1 for sev in levels.values() if sev)
            page.wait_for_function(f"({LABELS_JS})().filter((l) => l.text.includes('\\n')).length"
                                   f" === {alerted}", timeout=10_000)
            labels = page.evaluate(LABELS_JS)
            if bad := page.evaluate(MISREAD_JS, [labels, names]):
                problems[seq] = bad
            dark += sum(1 for label in labels if label["fill"] == "#1a1200")
        assert not problems, f"city labels at {width}×{height} ({lang}): {problems}"
        assert dark > 0  # dark letters are still used where they read: on their own colour
        assert board.errors == [] and board.outside == []
    finally:
        context.close()


def city_event(city: str, district: str, sev: str | None, seq: int) -> dict[str, Any]:
    """An alert of ``city`` at ``sev`` (its ``seq``-th event), or its resolution (``sev`` None)."""
    now = int(time.time() * 1000)
    alert = {
        "alert_id": f"city-{city}", "scope": f"city:{city}",
        "status": "resolved" if sev is None else "open", "severity": sev or "blue",
        "kind": "water_level", "family": "flood", "title_zh": f"城市标签 {city}",
        "title_en": f"city label {city}", "reason_zh": "测试", "reason_en": "test",
        "city_code": city, "city_name": city, "district_code": district,
        "district_name": district, "zone_ids": [], "departments": ["water"],
        "departments_zh": [], "sensors": [], "sensor_count": 1, "anomaly_count": 1,
        "lon": None, "lat": None, "first_seen_ms": now, "last_seen_ms": now, "opened_ms": now,
        "escalation_level": "city", "acknowledged_by": None, "acknowledged_at_ms": None,
        "seq": seq}
    return {"event_id": f"city-{city}-{seq}", "type": "resolved" if sev is None else "updated",
            "alert_id": alert["alert_id"], "actor": "system", "at_ms": now, "alert": alert}


def test_a_phone_gives_a_tag_its_short_name_when_the_full_one_has_no_room(
        chromium: Any, stack: Pipeline, geo: dict[str, Any]) -> None:
    """On a phone (390×844), Yantai in English with alerts in two districts of three: 莱山区
    (Laishan District) had no room for its name, its short name, or a tag of its full name
    beside it, and went unlabelled; a tag of its short name (Laishan) fits over the sea."""
    districts = geo["370600"]
    alerted = with_alerts(districts)
    context, board = open_city(chromium, stack.url, (390, 844), "en", "370600", alerted)
    try:
        labels = settled_labels(board, districts, alerted, "en")
        assert unlabelled(labels, districts, "en") == []
        assert "Laishan\n1" in [label["text"] for label in labels if label["tag"]], labels
        assert overlapping(labels) == []
        assert misread(board, labels, districts, "en") == []
        assert board.errors == [] and board.outside == []
    finally:
        context.close()
