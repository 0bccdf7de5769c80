// The ECharts parts: Shandong's map (cities coloured by their worst alert, drill-down to a city's
// districts and sensors) and the small trend chart of each city.

import { getLang, t } from "./i18n.js";

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

/** Boundaries are public: fetched without the key, cached by the browser. */
async function geojson(path) {
  const res = await fetch(path);
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function labelColor(sev) {
  return sev === "yellow" || sev === "orange" ? "#1a1200" : "#ffffff";
}

/** A halo around a label's letters, in its district's own colour for dark letters: a label
 *  wider than its district spills onto neighbours and the dark background, where dark
 *  letters without it could not be read ("Huaiyin District" lost its H at Jinan's border). */
function labelHalo(sev) {
  const dark = sev === "yellow" || sev === "orange";
  return { textBorderColor: dark ? COLORS[sev] : "rgba(4,12,28,0.85)", textBorderWidth: 2.5 };
}

export class ShandongMap {
  /**
   * ``onDrill(code)`` / ``onBack()`` tell the page the level changed; ``names`` maps codes to
   * ``{zh, en}`` and is filled from the boundaries.
   */
  constructor(el, { onDrill, onBack }) {
    this.el = el;
    this.chart = echarts.init(el, null, { renderer: "canvas" });
    this.onDrill = onDrill;
    this.onBack = onBack;
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
    this.pressed = null;
    this.chart.on("mousedown", (params) => { this.pressed = params.componentType === "geo" ? params.name : null; });
    this.chart.on("mouseup", (params) => {
      if (params.componentType === "geo" && params.name === this.pressed) this.click(params);
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

  click(params) {
    if (params.componentType !== "geo") return;
    if (this.level === "province" && this.names.has(params.name) && this.mayDrill(params.name)) this.onDrill(params.name);
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
      // In a city, placed by placeLabels(): moved within its district, or hidden until hovered.
      const at = this.level === "city" ? this.placed.get(code) || { show: false, offset: [0, 0] } : null;
      return {
        name: code,
        itemStyle: { areaColor: color },
        label: { color: sev ? labelColor(sev) : "#cfe3ff", ...labelHalo(sev), ...at },
        emphasis: { itemStyle: { areaColor: sev ? color : "#24508f" },
          label: { color: sev ? labelColor(sev) : "#ffffff", ...labelHalo(sev),
            ...(at && { show: true, offset: at.offset }) } },
      };
    });
  }

  /** A region's label: its name, and under it its open and acknowledged alerts if any. */
  labelText(code) {
    const c = this.view.counts.get(code);
    const n = c ? c.open + c.acknowledged : 0;
    return n ? `${this.name(code)}\n${n}` : this.name(code);
  }

  /**
   * Where each district's label goes (``this.placed``), so that no two overlap: ECharts'
   * ``labelLayout`` does not act on a geo component's labels (apache/echarts#20600).
   *
   * Greedy, most important first: the worse a district's alert, the earlier; among equals the
   * smaller district, which has the least room to move. A label stays at its district's label
   * point if it can, else it moves to the nearest free place, or one or two labels already
   * placed move to other places of theirs to make room for it (makeRoom); either way its centre is inside
   * its own district (so it cannot be read as a neighbour's: ECharts' label point of a concave
   * district, Qingdao's 市南区, can lie in the next one), and it is inside the chart. A label with no
   * such place is hidden: the district keeps its colour, its hover shows the label and the
   * tooltip names it, and zooming in places the labels again. Returns whether any label moved,
   * appeared or went.
   */
  placeLabels() {
    const before = JSON.stringify([...this.placed]);
    this.placed = new Map();
    const geo = this.chart.getModel()?.getComponent("geo");
    const codes = this.districts.get(this.city);
    if (this.level !== "city" || !geo?.coordinateSystem || !codes) return false;
    const coord = geo.coordinateSystem;
    const width = this.chart.getWidth();
    const height = this.chart.getHeight();
    this.measure.font = `${LABEL_PX.city}px sans-serif`; // ECharts' default family
    const lineHeight = this.measure.measureText("国").width; // as zrender reckons a line
    const items = codes.map((code) => {
      const region = coord.getRegion(code);
      const lines = this.labelText(code).split("\n");
      const box = region.getBoundingRect();
      return {
        code, region,
        rank: RANK[this.view.worst.get(code)] || 0,
        area: box.width * box.height,
        at: this.chart.convertToPixel({ geoIndex: 0 }, region.getCenter()),
        w: Math.max(...lines.map((line) => this.measure.measureText(line).width)) + 2 * LABEL_GAP,
        h: lines.length * lineHeight + 2 * LABEL_GAP,
      };
    }).filter((it) => it.at && Number.isFinite(it.at[0]));
    items.sort((a, b) => b.rank - a.rank || a.area - b.area);
    // A place's centre must be inside its own district, and its box inside the chart. The
    // test is the costly part (a point in a polygon): made only for a place free of others,
    // or for all of a label's places when room has to be made.
    const inside = (it, b) => {
      if (b.x < 0 || b.y < 0 || b.x + b.w > width || b.y + b.h > height) return false;
      const where = this.chart.convertFromPixel({ geoIndex: 0 }, [b.x + b.w / 2, b.y + b.h / 2]);
      return Boolean(where) && it.region.contain(where);
    };
    const spotsOf = (it) => (it.spots ??= it.boxes.filter((b) => inside(it, b)));
    const shown = [];
    for (const it of items) {
      it.boxes = candidates(it.w, it.h).map(([dx, dy]) => ({
        offset: [dx, dy], x: it.at[0] + dx - it.w / 2, y: it.at[1] + dy - it.h / 2, w: it.w, h: it.h,
      }));
      it.spot = it.boxes.find((b) => !shown.some((o) => overlaps(b, o.spot)) && inside(it, b))
        || makeRoom(it, shown, spotsOf);
      if (it.spot) shown.push(it);
    }
    for (const it of items) {
      // A hidden label still shows on hover: inside its district, over whatever is there.
      this.placed.set(it.code, { show: Boolean(it.spot), offset: (it.spot || spotsOf(it)[0])?.offset || [0, 0] });
    }
    return JSON.stringify([...this.placed]) !== before;
  }

  /** Place the district labels again (the chart's size or zoom changed). */
  relayout() {
    if (this.level !== "city" || !this.cities) return;
    this.placeLabels();
    this.chart.setOption({ geo: { regions: this.regionsOption() } });
  }

  /**
   * Draw. ``full``: a new map (or level). Otherwise only what changed: the points always (their
   * own canvas layer, cheap), the regions' colours and labels when they changed — at once when
   * a colour changed, else at most every GEO_MS, as redrawing the polygons is the costly part.
   */
  render(full) {
    const points = this.view.points.slice(0, this.level === "city" ? 5000 : MAX_POINTS);
    const series = [{
      type: "scatter",
      coordinateSystem: "geo",
      geoIndex: 0,
      zlevel: 1,
      large: points.length > 2000,
      symbolSize: (_v, p) => p.data.size,
      itemStyle: { color: (p) => p.data.color, borderColor: "rgba(255,255,255,0.65)", borderWidth: 0.6 },
      data: points.map((pt) => ({ value: [pt.lon, pt.lat], color: pt.color, size: pt.size, name: pt.name, detail: pt.detail })),
    }];
    const colors = [...this.view.worst].sort().join() + (this.allowed ? [...this.allowed].join() : "");
    const labels = [...this.view.counts].map(([code, c]) => `${code}:${c.open + c.acknowledged}`).sort().join() + getLang();
    const now = performance.now();
    clearTimeout(this.geoTimer);
    if (full) {
      // A shown tooltip is re-shown by a timer after each update; a new map replaces the tooltip
      // and the timer then wrote into the old one, gone ("Cannot set properties of null").
      this.chart.dispatchAction({ type: "hideTip" });
      this.chart.setOption(this.fullOption(series), { notMerge: true });
      // The labels are placed in pixels: the new map has to be laid out first.
      if (this.level === "city") this.relayout();
    } else if (this.placeLabels() || colors !== this.colors || (labels !== this.labels && now - this.geoAt >= GEO_MS)) {
      this.chart.setOption({ geo: { regions: this.regionsOption() }, series });
    } else {
      this.chart.setOption({ series });
      if (labels !== this.labels) this.geoTimer = setTimeout(() => this.render(false), GEO_MS);
      return;
    }
    this.colors = colors;
    this.labels = labels;
    this.geoAt = now;
  }

  fullOption(series) {
    const label = (p) => this.labelText(p.name);
    this.placed = new Map(); // the city's labels are shown once placed (render)
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
        // A component's own formatter: the global one below is not used for geo regions.
        tooltip: { show: true, formatter: (p) => this.tooltip({ componentType: "geo", name: p.name }) },
      },
      tooltip: { trigger: "item", confine: true, backgroundColor: "rgba(6,18,40,0.92)", borderColor: EDGE, textStyle: { color: "#d8e6ff" }, formatter: (p) => this.tooltip(p) },
      series,
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
    if (p.data) return `<b>${escapeHtml(p.data.name)}</b>${p.data.detail ? `<br>${escapeHtml(p.data.detail)}` : ""}`;
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

/**
 * Offsets to try for a label of ``w`` x ``h`` px, nearest first: its own place, then steps of
 * an eighth of its width and a quarter of its height, up to its width sideways and twice its
 * height up or down (a quarter and a half missed the room in narrow districts, Yantai's 芝罘区).
 */
function candidates(w, h) {
  const out = [];
  for (let i = -8; i <= 8; i += 1) {
    for (let j = -8; j <= 8; j += 1) out.push([(i * w) / 8, (j * h) / 4]);
  }
  return out.sort((a, b) => Math.hypot(a[0] / w, a[1] / h) - Math.hypot(b[0] / w, b[1] / h));
}

/** Whether two boxes ``{x, y, w, h}`` intersect. */
function overlaps(a, b) {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

/**
 * A place for ``it``, whose places are all taken, made by moving the one or two labels shown
 * there to other places of their own (so they stay shown, inside their districts): Yantai's
 * 芝罘区, the city's centre, lay between 福山区's and 莱山区's labels, which had room elsewhere.
 * Moves the labels it pushes aside (their ``spot``) and returns ``it``'s place, or null.
 */
function makeRoom(it, shown, spotsOf) {
  for (const b of spotsOf(it)) {
    const blockers = shown.filter((o) => overlaps(b, o.spot));
    if (blockers.length > 2) continue;
    const fixed = [b, ...shown.filter((o) => !blockers.includes(o)).map((o) => o.spot)];
    const moves = [];
    for (const other of blockers) {
      const m = spotsOf(other).find((s) => !fixed.some((f) => overlaps(s, f)));
      if (!m) break;
      fixed.push(m);
      moves.push(m);
    }
    if (moves.length === blockers.length) {
      blockers.forEach((other, i) => { other.spot = moves[i]; });
      return b;
    }
  }
  return null;
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
