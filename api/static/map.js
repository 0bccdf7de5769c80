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

/** Boundaries are public: fetched without the key, cached by the browser. */
async function geojson(path) {
  const res = await fetch(path);
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function labelColor(sev) {
  return sev === "yellow" || sev === "orange" ? "#1a1200" : "#ffffff";
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
    this.chart.on("click", (params) => this.click(params));
    new ResizeObserver(() => this.chart.resize()).observe(el);
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
      return {
        name: code,
        itemStyle: { areaColor: color },
        label: { color: sev ? labelColor(sev) : "#cfe3ff" },
        emphasis: { itemStyle: { areaColor: sev ? color : "#24508f" }, label: { color: sev ? labelColor(sev) : "#ffffff" } },
      };
    });
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
      this.chart.setOption(this.fullOption(series), { notMerge: true });
    } else if (colors !== this.colors || (labels !== this.labels && now - this.geoAt >= GEO_MS)) {
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
    const label = (p) => {
      const c = this.view.counts.get(p.name);
      const n = c ? c.open + c.acknowledged : 0;
      return n ? `${this.name(p.name)}\n${n}` : this.name(p.name);
    };
    return {
      geo: {
        map: this.level === "province" ? "shandong" : `city-${this.city}`,
        roam: this.level === "city",
        layoutCenter: ["50%", "52%"],
        layoutSize: "96%",
        aspectScale: 0.85,
        selectedMode: false,
        itemStyle: { areaColor: NONE, borderColor: EDGE, borderWidth: 1, shadowColor: "rgba(54,197,255,0.5)", shadowBlur: 12 },
        label: { show: true, formatter: label, fontSize: this.level === "province" ? 13 : 12, color: "#cfe3ff", textShadowColor: "rgba(0,0,0,0.5)", textShadowBlur: 2 },
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
