// The ECharts parts: Shandong's map (cities coloured by their worst alert, drill-down to a city's
// districts and sensors) and the small trend chart of each city.

import { getLang, t } from "./i18n.js";
import { placeLabels } from "./labels.js";

const echarts = window.echarts;

export const SEVERITIES = ["blue", "yellow", "orange", "red"];
export const RANK = { blue: 1, yellow: 2, orange: 3, red: 4 };
export const COLORS = { blue: "#1e90ff", yellow: "#ffd400", orange: "#ff8c00", red: "#ff2d2d" };
const NONE = "#16335e";
const OUTSIDE = "#0a1426"; // a city outside the key's scope: dark, not clickable
const EDGE = "#4aa8ff";
export const SENSOR_COLORS = { ok: "#2fd47f", reporting: "#2fd47f", silent: "#7f95b8" };
const MAX_POINTS = 600;
const GEO_MS = 1500;
const LABEL_PX = { province: 13, city: 12 };
const LABEL_GAP = 2; // px kept clear around a district's label
const RELAYOUT_MS = 150; // after the last zoom or drag step, the labels are placed again
const TAG_PAD = [1, 3]; // px around a callout's name on its tag (vertical, horizontal)

/** Boundaries are public: fetched without the key, cached by the browser. */
async function geojson(path) {
  const res = await fetch(path);
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

/**
 * A label's letters: dark on yellow and orange, white elsewhere, each with a 2.5 px halo (dark
 * letters: in the district's colour; white ones: dark). ``overDark``: some of the letters lie
 * over the dark background or a district without alerts, where dark letters are only their
 * halo's outline ("Laoshan District" over the sea): then white with a dark halo, which reads
 * over any colour. (Over red or blue, dark letters read as well as on their own colour.)
 */
function labelStyle(sev, overDark) {
  const dark = (sev === "yellow" || sev === "orange") && !overDark;
  return { color: dark ? "#1a1200" : "#ffffff", textBorderColor: dark ? COLORS[sev] : "rgba(4,12,28,0.85)",
    textBorderWidth: 2.5 };
}

export class ShandongMap {
  /**
   * ``onDrill(code)`` / ``onBack()`` tell the page the level changed; ``names`` maps codes to
   * ``{zh, en}`` and is filled from the boundaries.
   */
  constructor(el, { onDrill, onBack, onAlert }) {
    this.el = el;
    this.chart = echarts.init(el, null, { renderer: "canvas" });
    this.onDrill = onDrill;
    this.onBack = onBack;
    this.onAlert = onAlert;
    this.level = "province";
    this.city = null;
    this.names = new Map();
    this.districts = new Map(); // city code -> [{code, name}]
    this.view = { worst: new Map(), counts: new Map(), points: [] };
    this.allowed = null; // the cities the key may see (a Set), or null: all
    this.colors = this.labels = null;
    this.geoAt = 0;
    this.geoTimer = 0;
    this.placed = new Map(); // district code -> {show, offset: [dx, dy]} of its label
    this.roamTimer = 0;
    this.measure = document.createElement("canvas").getContext("2d");
    // A click is a press and a release on the same region. ECharts drops a click whose press
    // and release are on different elements, and every update draws the regions anew (every
    // 400 ms while alerts come in): a click with an update between was lost.
    // The same for a dot: matched by what it stands for, not by its element.
    this.pressed = null;
    this.chart.on("mousedown", (params) => { this.pressed = pressKey(params); });
    this.chart.on("mouseup", (params) => {
      if (this.pressed && pressKey(params) === this.pressed) this.click(params);
      this.pressed = null;
    });
    // Zooming in makes room for hidden labels, zooming out takes it: place them again.
    this.chart.on("georoam", () => {
      clearTimeout(this.roamTimer);
      this.roamTimer = setTimeout(() => this.relayout(), RELAYOUT_MS);
    });
    new ResizeObserver(() => {
      this.chart.resize();
      this.relayout();
    }).observe(el);
  }

  async load() {
    const fc = await geojson("geo/cities.json");
    for (const f of fc.features) {
      const p = f.properties;
      this.names.set(p.code, { zh: p.name_zh, en: p.name_en });
      // Every district's names too, so that an alert's district can be named at once.
      for (const [code, names] of Object.entries(p.districts || {})) this.names.set(code, names);
    }
    this.cities = fc.features.map((f) => f.properties.code);
    echarts.registerMap("shandong", fc);
    this.render(true);
  }

  name(code) {
    const n = this.names.get(code);
    return n ? n[getLang()] : code;
  }

  /**
   * A city drills down. Drilled in, an alert's dot, or a sensor's dot of an alert (one of the
   * sensors it lists), opens that alert; another sensor's dot only shows its tooltip (ECharts
   * shows it on a click too: a tap on a phone). On the province, an alert's dot drills into its
   * city, as a click beside it.
   */
  click(params) {
    const city = params.componentType === "geo" ? params.name : params.data?.city;
    if (this.level === "province") {
      if (this.names.has(city) && this.mayDrill(city)) this.onDrill(city);
      return;
    }
    if (params.componentType !== "series" || params.seriesId !== "points") return;
    if (params.data?.alertId) {
      this.chart.dispatchAction({ type: "hideTip" });
      this.onAlert(params.data.alertId);
    }
  }

  mayDrill(code) {
    return !this.allowed || this.allowed.has(code);
  }

  /** The cities of a scoped key (a Set), or null; the others are greyed and not drilled into. */
  setScope(allowed) {
    this.allowed = allowed;
    if (this.cities) this.render(true);
  }

  async drill(code) {
    if (!this.districts.has(code)) {
      const fc = await geojson(`geo/${code}.json`);
      echarts.registerMap(`city-${code}`, fc);
      for (const f of fc.features) this.names.set(f.properties.code, { zh: f.properties.name_zh, en: f.properties.name_en });
      this.districts.set(code, fc.features.map((f) => f.properties.code));
    }
    this.level = "city";
    this.city = code;
    this.view = { worst: new Map(), counts: new Map(), points: [] };
    this.render(true);
  }

  back() {
    this.level = "province";
    this.city = null;
    this.view = { worst: new Map(), counts: new Map(), points: [] };
    this.render(true);
  }

  /**
   * New figures: ``worst`` and ``counts`` by region code (cities or districts), ``points``
   * as [{lon, lat, color, size, name, detail}].
   */
  update(view) {
    this.view = view;
    this.render(false);
  }

  regionsOption() {
    const codes = this.level === "province" ? this.cities : this.districts.get(this.city);
    return (codes || []).map((code) => {
      if (this.level === "province" && !this.mayDrill(code)) {
        return { name: code, itemStyle: { areaColor: OUTSIDE, borderColor: "#1d3558" }, label: { color: "#3f5677" },
          emphasis: { itemStyle: { areaColor: OUTSIDE }, label: { color: "#5d7496" } } };
      }
      const sev = this.view.worst.get(code);
      const color = sev ? COLORS[sev] : NONE;
      // In a city, placed by placeLabels(): moved within its district, or on a tag of its colour
      // beside it (a callout), or hidden until hovered. On the province, where ECharts puts it.
      const at = this.level === "city" ? this.placed.get(code) || { show: false, offset: [0, 0] } : null;
      const overDark = (at || this.placed.get(code))?.overDark;
      const tag = at?.callout ? { backgroundColor: color, borderColor: EDGE, borderWidth: 1, borderRadius: 2, padding: TAG_PAD } : {};
      return {
        name: code,
        itemStyle: { areaColor: color },
        label: { ...labelStyle(sev, overDark), ...(!sev && { color: "#cfe3ff" }), ...tag,
          ...(at && { show: at.show, offset: at.offset }) },
        emphasis: { itemStyle: { areaColor: sev ? color : "#24508f" },
          label: { ...labelStyle(sev, overDark), ...tag,
            ...(at && { show: true, offset: at.offset }) } },
      };
    });
  }

  /**
   * A region's label: its name, and under it its open and acknowledged alerts if any.
   * ``short``: the name without its last word or character (市北 for 市北区, Shibei for Shibei
   * District), for a district too small for its name; 莒县 and Ju County are left whole.
   */
  labelText(code, short = false) {
    const c = this.view.counts.get(code);
    const n = c ? c.open + c.acknowledged : 0;
    const name = short ? shortName(this.name(code)) : this.name(code);
    return n ? `${name}\n${n}` : name;
  }

  /**
   * Where each district's label goes (``this.placed``; see labels.js): in its district, at its
   * full name or else its short one, or on a tag beside it with a line to it, so that no two
   * overlap. Returns whether any label moved, appeared, went or changed its form.
   */
  placeLabels() {
    const before = JSON.stringify([...this.placed]);
    const geo = this.chart.getModel()?.getComponent("geo");
    if (this.level === "province") return geo?.coordinateSystem ? this.cityLabels(geo.coordinateSystem, before) : false;
    this.placed = new Map();
    const codes = this.districts.get(this.city);
    if (this.level !== "city" || !geo?.coordinateSystem || !codes) return false;
    const coord = geo.coordinateSystem;
    const regions = codes.map((code) => coord.getRegion(code)).filter(Boolean);
    this.measure.font = `${LABEL_PX.city}px sans-serif`; // ECharts' default family
    const lineHeight = this.measure.measureText("国").width; // as zrender reckons a line
    const size = (text, pad = [0, 0]) => {
      const lines = text.split("\n").map((line) => this.measure.measureText(line).width);
      return { w: Math.max(...lines) + 2 * (LABEL_GAP + pad[1]), h: lines.length * lineHeight + 2 * (LABEL_GAP + pad[0]), lines };
    };
    const items = regions.map((region) => {
      const code = region.name;
      const box = region.getBoundingRect();
      const short = this.labelText(code, true);
      return {
        code, region,
        rank: RANK[this.view.worst.get(code)] || 0,
        area: box.width * box.height,
        at: this.chart.convertToPixel({ geoIndex: 0 }, region.getCenter()),
        full: size(this.labelText(code)),
        short: short !== this.labelText(code) ? size(short) : null,
        tag: size(this.labelText(code), TAG_PAD),
        shortTag: short !== this.labelText(code) ? size(short, TAG_PAD) : null,
      };
    }).filter((it) => it.at && Number.isFinite(it.at[0]));
    const lonLat = (x, y) => this.chart.convertFromPixel({ geoIndex: 0 }, [x, y]);
    const width = this.chart.getWidth();
    const height = this.chart.getHeight();
    this.placed = placeLabels(items, {
      width, height, gap: LABEL_GAP,
      // A place's centre must be inside its own district (so it cannot be read as a neighbour's:
      // ECharts' label point of a concave district, Qingdao's 市南区, can lie in the next one),
      // and its box inside the chart.
      inside: (it, b) => {
        if (b.x < 0 || b.y < 0 || b.x + b.w > width || b.y + b.h > height) return false;
        const where = lonLat(b.x + b.w / 2, b.y + b.h / 2);
        return Boolean(where) && it.region.contain(where);
      },
      pointsIn: (it) => this.pointsIn(it.region, it.at),
      // Whether a tag there covers some district (its centre, corners or edges' middles).
      onLand: (b) => [0, 0.5, 1].some((fx) => [0, 0.5, 1].some((fy) => {
        const where = lonLat(b.x + fx * b.w, b.y + fy * b.h);
        return Boolean(where) && regions.some((r) => r.contain(where));
      })),
    });
    for (const it of items) {
      const at = this.placed.get(it.code);
      at.overDark = !at.callout && this.overDark(it, at, lineHeight, regions);
      // The lines are drawn in the map's degrees, so that they move with it when dragged.
      if (at.callout) at.callout = { from: lonLat(...at.callout.from), to: lonLat(...at.callout.to) };
    }
    return JSON.stringify([...this.placed]) !== before;
  }

  /**
   * The province's city labels stay where ECharts puts them (they do not overlap at the
   * supported sizes); only their letters follow the districts' rule: on a yellow or orange city,
   * white with a dark halo when some of them lie over the dark background or a city without
   * alerts (日照市 and Weihai over the sea, Dongying over Binzhou on a phone), else dark.
   * Worked out again only when a label's text or colour, or the map's size, changed.
   */
  cityLabels(coord, before) {
    const key = [...this.cities.map((code) => `${this.labelText(code)}:${this.view.worst.get(code) || ""}`),
      this.chart.getWidth(), this.chart.getHeight(), this.allowed && [...this.allowed].join()].join("|");
    if (key === this.cityLabelsKey) return false;
    this.cityLabelsKey = key;
    this.placed = new Map();
    const regions = this.cities.map((code) => coord.getRegion(code)).filter(Boolean);
    this.measure.font = `${LABEL_PX.province}px sans-serif`;
    const lineHeight = this.measure.measureText("国").width;
    for (const region of regions) {
      const sev = this.view.worst.get(region.name);
      if (sev !== "yellow" && sev !== "orange") continue; // white letters already
      const at = this.chart.convertToPixel({ geoIndex: 0 }, region.getCenter());
      const lines = this.labelText(region.name).split("\n").map((line) => this.measure.measureText(line).width);
      const it = { region, at, full: { lines } };
      this.placed.set(region.name, { overDark: this.overDark(it, { offset: [0, 0] }, lineHeight, regions) });
    }
    return JSON.stringify([...this.placed]) !== before;
  }

  /**
   * Whether some of a placed label's letters lie over the dark background or a district without
   * alerts. Tried at each line's ends, quarters and middle, at the top and bottom of its letters;
   * two points at least, as a district can hold a speck of another (Qingdao's 城阳区 one of
   * 即墨区, under its label).
   */
  overDark(it, at, lineHeight, regions) {
    const widths = it[at.short ? "short" : "full"].lines;
    const x = it.at[0] + at.offset[0];
    const top = it.at[1] + at.offset[1] - (widths.length * lineHeight) / 2;
    let other = 0;
    widths.forEach((w, i) => [-0.5, -0.25, 0, 0.25, 0.5].forEach((f) => [2, lineHeight - 2].forEach((dy) => {
      const dx = f * w;
      const where = this.chart.convertFromPixel({ geoIndex: 0 }, [x + dx, top + i * lineHeight + dy]);
      if (where && it.region.contain(where)) return;
      const under = where && regions.find((r) => r.contain(where));
      if (!under || !this.view.worst.get(under.name)) other += 1;
    })));
    return other >= 2;
  }

  /**
   * Points inside ``region``, in pixels, nearest ``at`` first, those 3 px from its border before
   * the others: where a callout's line may start. Searched on a 2 px grid over the region's box,
   * as its label point can be outside it (a concave district) and it can be a thin strip
   * (市南区); lazily, as the first point under no label is the one taken.
   */
  *pointsIn(region, at) {
    const toPixel = (p) => this.chart.convertToPixel({ geoIndex: 0 }, p);
    const r = region.getBoundingRect();
    const [x0, y1] = toPixel([r.x, r.y]);
    const [x1, y0] = toPixel([r.x + r.width, r.y + r.height]);
    const inside = (x, y) => {
      const where = this.chart.convertFromPixel({ geoIndex: 0 }, [x, y]);
      return Boolean(where) && region.contain(where);
    };
    const grid = [];
    for (let x = Math.min(x0, x1); x <= Math.max(x0, x1); x += 2) {
      for (let y = Math.min(y0, y1); y <= Math.max(y0, y1); y += 2) grid.push([x, y, Math.hypot(x - at[0], y - at[1])]);
    }
    grid.sort((a, b) => a[2] - b[2]);
    const within = grid.filter(([x, y]) => inside(x, y));
    for (const [x, y] of within) {
      if ([[-3, 0], [3, 0], [0, -3], [0, 3]].every(([dx, dy]) => inside(x + dx, y + dy))) yield [x, y];
    }
    for (const [x, y] of within) yield [x, y];
  }

  /** Place the district labels again (the chart's size or zoom changed). */
  relayout() {
    if (!this.cities) return;
    this.cityLabelsKey = null;
    if (!this.placeLabels() && this.level === "province") return;
    this.chart.setOption({ geo: { regions: this.regionsOption() }, series: [this.calloutSeries()] });
  }

  /**
   * Draw. ``full``: a new map (or level). Otherwise only what changed: the points always (their
   * own canvas layer, cheap), the regions' colours and labels when they changed — at once when
   * a colour changed, else at most every GEO_MS, as redrawing the polygons is the costly part.
   */
  render(full) {
    const points = this.view.points.slice(0, this.level === "city" ? 5000 : MAX_POINTS);
    const dots = {
      type: "scatter", // first: state() counts its points
      id: "points",
      coordinateSystem: "geo",
      geoIndex: 0,
      zlevel: 1,
      large: points.length > 2000,
      symbolSize: (_v, p) => p.data.size,
      itemStyle: { color: (p) => p.data.color, borderColor: "rgba(255,255,255,0.65)", borderWidth: 0.6 },
      data: points.map((pt) => ({ value: [pt.lon, pt.lat], color: pt.color, size: pt.size, name: pt.name, detail: pt.detail,
        alertId: pt.alertId, city: pt.city })),
    };
    const colors = [...this.view.worst].sort().join() + (this.allowed ? [...this.allowed].join() : "");
    const labels = [...this.view.counts].map(([code, c]) => `${code}:${c.open + c.acknowledged}`).sort().join() + getLang();
    const now = performance.now();
    clearTimeout(this.geoTimer);
    if (full) {
      // A shown tooltip is re-shown by a timer after each update; a new map replaces the tooltip
      // and the timer then wrote into the old one, gone ("Cannot set properties of null").
      this.chart.dispatchAction({ type: "hideTip" });
      this.placed = new Map(); // the city's labels are shown once placed (relayout)
      this.chart.setOption(this.fullOption([dots, this.calloutSeries()]), { notMerge: true });
      // The labels are placed in pixels: the new map has to be laid out first.
      this.relayout();
    } else if (this.placeLabels() || colors !== this.colors || (labels !== this.labels && now - this.geoAt >= GEO_MS)) {
      this.chart.setOption({ geo: { regions: this.regionsOption() }, series: [dots, this.calloutSeries()] });
    } else {
      this.chart.setOption({ series: [dots] }); // merged by id: the callouts stay
      if (labels !== this.labels) this.geoTimer = setTimeout(() => this.render(false), GEO_MS);
      return;
    }
    this.colors = colors;
    this.labels = labels;
    this.geoAt = now;
  }

  fullOption(series) {
    const label = (p) => this.labelText(p.name, this.placed.get(p.name)?.short);
    return {
      geo: {
        map: this.level === "province" ? "shandong" : `city-${this.city}`,
        roam: this.level === "city",
        layoutCenter: ["50%", "52%"],
        layoutSize: "96%",
        aspectScale: 0.85,
        selectedMode: false,
        itemStyle: { areaColor: NONE, borderColor: EDGE, borderWidth: 1, shadowColor: "rgba(54,197,255,0.5)", shadowBlur: 12 },
        label: { show: true, formatter: label, fontSize: LABEL_PX[this.level], color: "#cfe3ff", textShadowColor: "rgba(0,0,0,0.5)", textShadowBlur: 2 },
        emphasis: { label: { show: true, formatter: label }, itemStyle: { areaColor: "#24508f" } },
        regions: this.regionsOption(),
        // A component's own formatter: the global one below is not used for geo regions. The
        // dots drawn on the map take it too (ECharts asks a series' coordinate system before the
        // global tooltip): a sensor's dot said 最高级别: 无 as if it were a district.
        tooltip: { show: true, formatter: (p) => this.tooltip(p) },
      },
      tooltip: { trigger: "item", confine: true, backgroundColor: "rgba(6,18,40,0.92)", borderColor: EDGE, textStyle: { color: "#d8e6ff" }, formatter: (p) => this.tooltip(p) },
      series,
    };
  }

  /** The callouts' lines: from a point in the district to its label's tag, in the map's degrees. */
  calloutSeries() {
    const lines = this.level === "city" ? [...this.placed.values()].filter((at) => at.callout) : [];
    return {
      type: "lines", id: "callouts", coordinateSystem: "geo", geoIndex: 0, silent: true, animation: false,
      symbol: ["circle", "none"], symbolSize: 4,
      lineStyle: { color: "#eaf3ff", width: 1.2, opacity: 1, shadowColor: "rgba(0,0,0,0.9)", shadowBlur: 2 },
      data: lines.map((at) => ({ coords: [at.callout.from, at.callout.to] })),
    };
  }

  tooltip(p) {
    if (p.componentType === "geo") {
      if (this.level === "province" && !this.mayDrill(p.name)) return `<b>${escapeHtml(this.name(p.name))}</b><br>${t("scope.outside")}`;
      const c = this.view.counts.get(p.name) || { open: 0, acknowledged: 0 };
      const sev = this.view.worst.get(p.name);
      const sum = this.view.summaries?.get(p.name);
      const sensors = sum?.sensors
        ? `<br>${t("map.sensors")} ${formatNumber(sum.sensors.reporting)} / ${formatNumber(sum.sensors.total)}`
          + ` · ${t("kpi.rate")} ${formatNumber(sum.readings_per_s)}`
        : "";
      return `<b>${this.name(p.name)}</b><br>${t("map.worst")}: ${sev ? t(`sev.${sev}`) : t("sev.none")}`
        + `<br>${t("map.open")} ${c.open} · ${t("map.acked")} ${c.acknowledged}${sensors}`;
    }
    if (p.data) return [`<b>${escapeHtml(p.data.name)}</b>`, ...(p.data.detail || []).map(escapeHtml)].join("<br>");
    return "";
  }

  /** For tests: the regions drawn and their fill, read back from the ECharts model. */
  state() {
    const geo = this.chart.getModel().getComponent("geo");
    const regions = geo.coordinateSystem.regions.map((r) => ({
      code: r.name,
      name: this.name(r.name),
      color: geo.getRegionModel(r.name).get(["itemStyle", "areaColor"]),
    }));
    const series = this.chart.getModel().getSeriesByIndex(0);
    return { level: this.level, city: this.city, map: geo.get("map"), regions, points: series ? series.getData().count() : 0,
      scope: this.allowed ? [...this.allowed] : null };
  }

  /** Pixel position of a region's label point (for tests that click on a city). */
  pixelOf(code) {
    const geo = this.chart.getModel().getComponent("geo");
    const region = geo.coordinateSystem.getRegion(code);
    const [x, y] = this.chart.convertToPixel({ geoIndex: 0 }, region.getCenter());
    const box = this.el.getBoundingClientRect();
    return { x: box.left + x, y: box.top + y };
  }
}

/** What a press is on, to match it with its release: a region, an alert's dot or a sensor's. */
function pressKey(params) {
  if (params.componentType === "geo") return `geo:${params.name}`;
  if (params.seriesId === "points" && params.data) return `dot:${params.data.alertId || ""}:${params.data.name}`;
  return null;
}

/** A name without its last word (Shibei District) or, of three characters or more, its last (市北区). */
function shortName(name) {
  const words = name.split(" ");
  if (words.length > 1) return words.slice(0, -1).join(" ");
  return [...name].length > 2 ? [...name].slice(0, -1).join("") : name;
}

export function escapeHtml(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

const TREND_FONT = "11px sans-serif"; // the small charts' titles (ECharts' default family)
const TITLE_PAD = 5; // ECharts' default padding of a title

/** One chart of 16 small line charts: a city's trend each (4 × 4). */
export class Trends {
  constructor(el) {
    this.el = el;
    this.chart = echarts.init(el, null, { renderer: "canvas" });
    this.measure = document.createElement("canvas").getContext("2d");
    this.measure.font = TREND_FONT;
    new ResizeObserver(() => {
      this.chart.resize();
      if (this.last) this.update(...this.last); // the titles' room changed
    }).observe(el);
  }

  /** ``cities``: [{code, name, worst, points: [[t_ms, value]...]}] */
  update(cities, metric) {
    this.last = [cities, metric];
    const layout = `${cities.map((c) => c.code).join()}|${metric}`;
    const title = [];
    const series = [];
    // A title has its column, less the gap to the next one: a long name gives way (Zaozhua… 12),
    // never the figure, which ran past the panel's edge or into the next title.
    const cols = Math.min(4, Math.max(cities.length, 1));
    const room = this.chart.getWidth() * (1 / cols - 0.01) - TITLE_PAD - 2;
    cities.forEach((c) => {
      const color = c.worst ? COLORS[c.worst] : "#36c5ff";
      const last = c.points.length ? c.points[c.points.length - 1][1] : null;
      const figure = ` ${last == null ? "—" : formatNumber(last, metric)}`;
      const name = echarts.format.truncateText(c.name,
        Math.max(0, room - this.measure.measureText(figure).width), TREND_FONT, "…");
      title.push({ text: `${name}${figure}`, textStyle: { color: c.worst ? color : "#9fb6d8" } });
      series.push({
        lineStyle: { color },
        areaStyle: { color: new echarts.graphic.LinearGradient(0, 0, 0, 1, [
          { offset: 0, color: `${color}99` }, { offset: 1, color: `${color}05` }]) },
        data: c.points,
      });
    });
    if (layout !== this.layout) {
      this.layout = layout;
      this.chart.setOption(this.frame(cities.length, title, series), { notMerge: true });
    } else {
      this.chart.setOption({ title, series }); // merged by index: only text, colours and data
    }
  }

  /**
   * The grid of small charts, 4 columns (fewer for a key scoped to 1-3 cities, whose charts
   * then share the panel's width), built once per set of cities and metric.
   */
  frame(count, titles, lines) {
    const cols = Math.min(4, Math.max(count, 1));
    const rows = Math.ceil(count / cols) || 1;
    const w = 100 / cols;
    const h = 100 / rows;
    const title = [];
    const grid = [];
    const xAxis = [];
    const yAxis = [];
    const series = [];
    for (let i = 0; i < count; i += 1) {
      const col = i % cols;
      const row = Math.floor(i / cols);
      title.push({ ...titles[i], left: `${col * w + 1}%`, top: `${row * h}%`,
        textStyle: { fontSize: 11, fontWeight: 400, ...titles[i].textStyle } });
      grid.push({ left: `${col * w + 1.5}%`, width: `${w - 3}%`, top: `${row * h + 8}%`, height: `${h - 11}%` });
      xAxis.push({ type: "time", gridIndex: i, show: false });
      yAxis.push({ type: "value", gridIndex: i, show: false, min: 0 });
      series.push({ type: "line", xAxisIndex: i, yAxisIndex: i, showSymbol: false, smooth: 0.3,
        silent: true, ...lines[i], lineStyle: { width: 1.2, ...lines[i].lineStyle } });
    }
    return { title, grid, xAxis, yAxis, series, animation: false };
  }
}

export function formatNumber(v, metric) {
  if (v == null || Number.isNaN(v)) return "—";
  if (metric === "traffic_index") return v.toFixed(1);
  if (v >= 10000) return getLang() === "zh" ? `${(v / 10000).toFixed(1)}万` : `${Math.round(v / 1000)}k`;
  return Math.round(v).toLocaleString(getLang() === "zh" ? "zh-CN" : "en");
}
