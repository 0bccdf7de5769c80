// 一屏观全省: the dashboard's state and its rendering.
//
// Alert events (from the stream, or window.__cityagent.ingest in tests) are queued and applied
// once per animation frame; the feed, map and tiles are redrawn from the state at most every
// FEED_MS / MAP_MS / KPI_MS, so a burst of hundreds of events costs one render, not hundreds.

import {
  EventStream, api, clearKey, getKey, getOperator, newRequestKey, onUnauthorized, setKey, setOperator,
} from "./api.js";
import { AlertDetail } from "./detail.js";
import { alertDistricts, Feed, shanghaiTime } from "./feed.js";
import { DEPARTMENTS, deptName, getLang, onLangChange, setLang, t } from "./i18n.js";
import { COLORS, RANK, SENSOR_COLORS, ShandongMap, Trends, formatNumber } from "./map.js";

const $ = (selector) => document.querySelector(selector);

const FEED_MS = 200;
const MAP_MS = 400;
const KPI_MS = 250;
const TRENDS_MS = 2000;
const SITUATION_MS = 5000;
const SITUATION_TIMEOUT_MS = 8000; // a situation call that takes longer counts as failed
const COMMAND_TIMEOUT_MS = 15000; // an ack, resolve, assign or comment call that takes longer failed
const APPLY_WAIT_MS = 30000; // a command accepted (202) whose event has not come by then: say so
const ME_TIMEOUT_MS = 8000;
const ME_RETRY_MS = 5000; // GET /v1/me again after a failure other than 404
const PROBE_MS = 30000;
const SAMPLE_MS = 10000;
const TREND_KEEP = 360; // local samples: an hour at SAMPLE_MS
const PAGE = 1000;
const MAX_PAGES = 20;

const state = {
  alerts: new Map(), // unresolved alerts by id (open or acknowledged)
  gone: new Map(), // resolved alerts: id -> seq, so that an older snapshot does not revive one
  pending: [], // alert events not applied yet
  fresh: new Set(), // ids changed since the last feed render
  dirty: { feed: true, map: true, kpi: true, trends: true },
  last: { feed: 0, map: 0, kpi: 0, trends: 0 },
  filters: { city: "", dept: "", sev: "" }, // sev: the least severity shown
  drillFilter: false, // the city filter was set by drilling down (and goes with it)
  listed: false,
  hasSituation: false,
  probed: false, // the page knows whether the situation service exists (no note before that)
  situation: null,
  situationOkMs: 0, // when /v1/situation last answered (0: not yet)
  situationFailed: false, // its last poll failed: the tiles are stale
  scope: null, // the cities the key may see (a Set), or null: the whole province
  me: null, // GET /v1/me: the key's role and what it may do (null: unknown, e.g. an older API)
  citySituation: null,
  streamAliveMs: 0,
  localTrend: new Map(), // city code -> [[t_ms, unresolved alerts]], without the situation service
  metric: "open_alerts",
  timers: new Map(), // name -> timeout id: one pending timer per job
  generation: 0, // bumps when the page stops (a new key): late answers of the old one are dropped
  flushes: 0,
  costs: {}, // the longest render of each part, ms (for tests and tuning)
  renders: {}, // how often each part was drawn (for tests: a burst is one render, not hundreds)
  version: 0, // bumps with every applied change; summaries are cached by it
};

let stream = null;
let map = null;
let trends = null;
let feed = null;
let detail = null;

// -- applying events ----------------------------------------------------------------------------

function markAll() {
  state.dirty.feed = state.dirty.map = state.dirty.kpi = state.dirty.trends = true;
  state.version += 1;
}

function applyEvent(event) {
  const alert = event && event.alert;
  if (!alert || !alert.alert_id) return; // suppressed anomalies carry no alert
  const id = alert.alert_id;
  const known = state.alerts.get(id);
  const goneSeq = state.gone.get(id);
  if ((known && known.seq > alert.seq) || (goneSeq !== undefined && goneSeq >= alert.seq)) return;
  feed.settle(event.type, alert);
  detail.changed(id);
  if (alert.status === "resolved") {
    remember(id, alert.seq);
    if (known) {
      state.alerts.delete(id);
      markAll();
    }
    return;
  }
  // A restatement says "still open, unchanged" (the worker republishes a quiet alert daily so
  // that the alerts topic keeps it): it neither moves the alert up nor marks it new.
  const restated = event.type === "restated";
  alert._at = restated ? (known ? known._at : listedAt(alert)) : (event.at_ms || alert.last_seen_ms);
  // The snapshot counts comments; the latest one's text comes only with its event.
  alert._comment = event.type === "commented" && event.detail
    ? { text: event.detail, by: event.actor } : known?._comment;
  state.alerts.set(id, alert);
  if (!restated) state.fresh.add(id);
  markAll();
}

function listedAt(alert) {
  return Math.max(alert.last_seen_ms || 0, alert.acknowledged_at_ms || 0, alert.opened_ms || 0);
}

function mergeListed(alert) {
  const id = alert.alert_id;
  const known = state.alerts.get(id);
  const goneSeq = state.gone.get(id);
  if ((known && known.seq >= alert.seq) || (goneSeq !== undefined && goneSeq >= alert.seq)) return;
  alert._at = listedAt(alert);
  alert._comment = known?._comment;
  state.alerts.set(id, alert);
}

function remember(id, seq) {
  state.gone.set(id, seq);
  if (state.gone.size > 50000) {
    let drop = 10000;
    for (const key of state.gone.keys()) {
      state.gone.delete(key);
      if (--drop === 0) break;
    }
  }
}

// -- the render loop ----------------------------------------------------------------------------

let frame = 0;
let fallback = 0;
let later = 0;
let laterAt = Infinity;

function schedule() {
  if (frame) return;
  frame = requestAnimationFrame(flush);
  fallback = setTimeout(flush, 600); // animation frames pause in a hidden tab
}

function flush() {
  cancelAnimationFrame(frame);
  clearTimeout(fallback);
  frame = 0;
  state.flushes += 1;
  const events = state.pending;
  state.pending = [];
  for (const event of events) applyEvent(event);
  const now = performance.now();
  let wait = Infinity;
  for (const [part, every, draw] of [["feed", FEED_MS, renderFeed], ["kpi", KPI_MS, renderKpis],
    ["map", MAP_MS, renderMap], ["trends", TRENDS_MS, renderTrends]]) {
    if (!state.dirty[part]) continue;
    const due = state.last[part] + every - now;
    if (due <= 0) {
      state.dirty[part] = false;
      state.last[part] = now;
      draw();
      const took = performance.now() - now;
      state.costs[part] = Math.max(state.costs[part] || 0, took);
      state.renders[part] = (state.renders[part] || 0) + 1;
    } else {
      wait = Math.min(wait, due);
    }
  }
  // Come back when the next part is due (sooner than an already planned return, if need be).
  if (wait !== Infinity && now + wait < laterAt) {
    clearTimeout(later);
    laterAt = now + wait;
    later = setTimeout(() => { laterAt = Infinity; schedule(); }, wait);
  }
}

let summaryCache = { version: -1 };

/** Worst severity and counts by city and by district, and by severity: one pass over the alerts. */
function summary() {
  if (summaryCache.version === state.version) return summaryCache;
  const byCity = new Map();
  const byDistrict = new Map();
  const total = { open: { blue: 0, yellow: 0, orange: 0, red: 0 }, acknowledged: 0, cities: new Map() };
  const add = (groups, code, alert) => {
    let g = groups.get(code);
    if (!g) groups.set(code, g = { open: 0, acknowledged: 0, worst: null, bySeverity: { blue: 0, yellow: 0, orange: 0, red: 0 } });
    if (alert.status === "open") {
      g.open += 1;
      g.bySeverity[alert.severity] = (g.bySeverity[alert.severity] || 0) + 1;
    } else {
      g.acknowledged += 1;
    }
    if (!g.worst || RANK[alert.severity] > RANK[g.worst]) g.worst = alert.severity;
  };
  for (const alert of state.alerts.values()) {
    add(byCity, alert.city_code, alert);
    // In every district of its sensors: a city-wide flood colours each district it reaches.
    for (const code of alertDistricts(alert)) add(byDistrict, code, alert);
  }
  summaryCache = { version: state.version, byCity, byDistrict, total };
  return summaryCache;
}

function renderFeed() {
  const { city, dept, sev } = state.filters;
  const least = sev ? RANK[sev] : 0;
  const items = [];
  for (const alert of state.alerts.values()) {
    if (city && alert.city_code !== city) continue;
    if (dept && !(alert.departments || []).includes(dept)) continue;
    if (RANK[alert.severity] < least) continue;
    items.push(alert);
  }
  items.sort(byUrgency);
  feed.listed = state.listed;
  feed.total = state.alerts.size;
  feed.render(items, state.fresh);
  state.fresh = new Set();
}

/**
 * The feed's order: the most severe first (红 橙 黄 蓝), open before acknowledged within a
 * severity, then the most recent change (``_at``, the time the feed shows), then the id.
 */
function byUrgency(a, b) {
  return (RANK[b.severity] - RANK[a.severity])
    || ((a.status === "open" ? 0 : 1) - (b.status === "open" ? 0 : 1))
    || (b._at - a._at)
    || (a.alert_id < b.alert_id ? -1 : 1);
}

function renderMap() {
  const s = summary();
  const points = [];
  if (map.level === "province") {
    const worst = new Map([...s.byCity].map(([code, g]) => [code, g.worst]));
    const alerts = [...state.alerts.values()].filter((a) => Number.isFinite(a.lon))
      .sort((a, b) => RANK[b.severity] - RANK[a.severity]).slice(0, 600);
    for (const a of alerts) points.push(alertPoint(a, 4));
    const summaries = new Map((state.situation?.cities || []).map((c) => [c.code, c]));
    map.update({ worst, counts: s.byCity, points, summaries });
    return;
  }
  const code = map.city;
  const worst = new Map();
  const counts = new Map();
  for (const district of map.districts.get(code) || []) {
    const g = s.byDistrict.get(district);
    if (g) {
      worst.set(district, g.worst);
      counts.set(district, g);
    }
  }
  const alertOf = sensorAlerts(code);
  for (const sensor of state.citySituation?.sensors || []) {
    if (!Number.isFinite(sensor.lon)) continue;
    const level = sensorLevel(sensor);
    const color = level ? COLORS[level] : SENSOR_COLORS[sensor.status] || SENSOR_COLORS.ok;
    const alert = alertOf.get(sensor.sensor_id);
    points.push({ lon: sensor.lon, lat: sensor.lat, color, size: level ? 7 : 4, name: sensor.sensor_id,
      detail: sensorLines(sensor, level, alert), alertId: alert?.alert_id });
  }
  for (const a of state.alerts.values()) {
    if (a.city_code === code && Number.isFinite(a.lon)) points.push(alertPoint(a, 9));
  }
  const summaries = new Map((state.citySituation?.districts || []).map((d) => [d.code, d]));
  map.update({ worst, counts, points, summaries });
}

function alertPoint(a, base) {
  const en = getLang() === "en";
  return { lon: a.lon, lat: a.lat, color: COLORS[a.severity] || COLORS.blue,
    size: base + RANK[a.severity] * (base > 5 ? 2 : 1.5),
    name: alertTitle(a),
    // Drilled in, a click opens it (on the province, a click on a dot drills into its city).
    detail: [`${t(`status.${a.status}`)} · ${(en ? a.reason_en : a.reason_zh) || ""}`, ...(base > 5 ? [t("map.openAlert")] : [])],
    alertId: a.alert_id, city: a.city_code };
}

function alertTitle(a) {
  return (getLang() === "en" ? a.title_en : a.title_zh) || a.alert_id;
}

/**
 * The unresolved alerts of a city by the sensors they list, the worst (then the latest) when a
 * sensor is in several. An alert lists its first 20 sensors (``max_sensors_listed``): a storm's
 * other members are not known here, and show as sensors.
 */
function sensorAlerts(city) {
  const out = new Map();
  for (const a of state.alerts.values()) {
    if (a.city_code !== city) continue;
    for (const id of a.sensors || []) {
      const other = out.get(id);
      if (!other || RANK[a.severity] > RANK[other.severity]
          || (RANK[a.severity] === RANK[other.severity] && a._at > other._at)) out.set(id, a);
    }
  }
  return out;
}

/**
 * A sensor dot's tooltip, a line each: kind and district; latest reading and its time; state
 * (reporting or silent, over 警戒 or 保证); and the alert it is in, which a click opens.
 */
function sensorLines(sensor, level, alert) {
  const kind = word(`sensor.kind.${sensor.kind}`, sensor.kind);
  const place = sensor.district_code ? cityName(sensor.district_code) : "";
  const reading = readingText(sensor.kind, sensor.latest);
  const status = [word(`sensor.status.${sensor.status}`, sensor.status)];
  if (level === "orange") status.push(t("legend.overGuaranteed"));
  else if (level === "yellow") status.push(t("legend.overWarning"));
  const lines = [[kind, place].filter(Boolean).join(" · "),
    reading ? t("sensor.latest", { v: reading + (sensor.ts_ms ? ` · ${shanghaiTime(sensor.ts_ms)}` : "") }) : t("sensor.noReading"),
    t("sensor.state", { v: status.join(" · ") })];
  if (alert) lines.push(t("sensor.alert", { v: alertTitle(alert) }), t("sensor.open"));
  return lines;
}

/** A word of i18n.js, or ``raw`` when it has none (a kind or status the page does not know). */
function word(key, raw) {
  const text = t(key);
  return text === key ? raw : text;
}

const UNITS = { level_m: "m", pressure_mpa: "MPa", speed_kmh: "km/h", flow_vph: "veh/h", occupancy_pct: "%" };
const DIGITS = { level_m: 2, pressure_mpa: 3, speed_kmh: 0, flow_vph: 0, occupancy_pct: 0 };

/** A reading's values with their units: 水位 5.60 m; 42 km/h · 1,200 veh/h · 35 %. */
function readingText(kind, latest) {
  if (!latest || typeof latest !== "object") return "";
  return Object.entries(latest).filter(([, v]) => v != null).slice(0, 3).map(([k, v]) => {
    if (typeof v !== "number") return `${k} ${v}`;
    const digits = DIGITS[k] ?? 2;
    const text = v.toLocaleString(getLang() === "zh" ? "zh-CN" : "en", { minimumFractionDigits: digits, maximumFractionDigits: digits });
    return UNITS[k] ? `${text} ${UNITS[k]}` : `${k} ${text}`;
  }).join(" · ");
}

/** A gauge over 保证 is orange, over 警戒 yellow (when the registry gives its levels). */
function sensorLevel(sensor) {
  const level = sensor.latest?.level_m;
  if (sensor.status !== "reporting" || level == null) return null;
  if (sensor.guaranteed_level_m != null && level >= sensor.guaranteed_level_m) return "orange";
  if (sensor.warning_level_m != null && level >= sensor.warning_level_m) return "yellow";
  return null;
}

/** The cities on the map the key may see: all 16, or its scope's. */
function visibleCities() {
  return (map?.cities || []).filter((code) => !state.scope || state.scope.has(code));
}

/** A city's or district's name in the current language (the code until the map has loaded). */
function cityName(code) {
  return map ? map.name(code) : code;
}

function renderKpis() {
  const s = summary();
  const city = map.level === "city" ? map.city : null;
  let open = s.total.open;
  let acknowledged = 0;
  if (city) {
    const g = s.byCity.get(city);
    open = g ? g.bySeverity : { blue: 0, yellow: 0, orange: 0, red: 0 };
    acknowledged = g ? g.acknowledged : 0;
  } else {
    open = { blue: 0, yellow: 0, orange: 0, red: 0 };
    for (const g of s.byCity.values()) {
      for (const sev of Object.keys(open)) open[sev] += g.bySeverity[sev] || 0;
      acknowledged += g.acknowledged;
    }
  }
  // Until the alerts are listed, their counts are unknown, not 0.
  for (const sev of Object.keys(open)) setText(`#kpi-alerts [data-n="${sev}"]`, state.listed ? String(open[sev]) : "—");
  setText("#kpi-alerts .acked", state.listed ? String(acknowledged) : "—");

  const sum = situationSummary(city);
  const sensors = sum?.sensors;
  setText("#kpi-sensors .v", sensors ? formatNumber(sensors.reporting) : "—");
  setText("#kpi-sensors .silent", sensors ? formatNumber(sensors.silent) : "—");
  setText("#kpi-rate .v", sum ? formatNumber(sum.readings_per_s) : "—");
  const ind = sum?.indicators || {};
  setText("#kpi-traffic .v", ind.traffic_index == null ? "—" : Number(ind.traffic_index).toFixed(1));
  $("#kpi-traffic .v").dataset.band = ind.traffic_index == null ? "" : trafficBand(ind.traffic_index);
  setText("#kpi-gauges .v", ind.gauges_over_warning == null ? "—" : formatNumber(ind.gauges_over_warning));
  setText("#kpi-gauges .guaranteed", ind.gauges_over_guaranteed == null ? "—" : formatNumber(ind.gauges_over_guaranteed));
  const pc = ind.pressure_compliance;
  const pct = pc == null ? null : (pc <= 1 ? pc * 100 : pc);
  setText("#kpi-pressure .v", pct == null ? "—" : `${pct.toFixed(1)}%`);
  $("#kpi-pressure .bar i").style.width = pct == null ? "0" : `${Math.max(0, Math.min(100, pct))}%`;
  $("#kpi-note").hidden = state.hasSituation || !state.probed;
  renderKpiTitle();
  renderAsOf();
  renderStale();
  renderLegend(); // the sensors' legend waits for the situation service's probe
}

/**
 * The tiles' title: the province, the drilled city or the key's scope. Its element carries
 * data-i18n (so a page opened in English says Province from the start), which a language change
 * sets to the province's word: the change calls this at once, in the same frame.
 */
function renderKpiTitle() {
  const city = map.level === "city" ? map.city : null;
  setText("#kpi-title", city ? `${cityName(city)}${t("kpi.city") ? t("kpi.city") : ""}`
    : state.scope ? t("kpi.scoped", { names: scopeNames() }) : t("kpi.title"));
}

/** The cities of a scoped key, by name: "济南市、青岛市", or the first three and how many. */
function scopeNames() {
  const names = [...state.scope].map(cityName);
  const sep = getLang() === "en" ? ", " : "、";
  return names.length > 3 ? t("scope.many", { names: names.slice(0, 3).join(sep), n: names.length })
    : names.join(sep) || t("scope.none");
}

/** The header says so when the situation figures stopped coming (the alerts may still be live). */
function renderStale() {
  const stale = state.hasSituation && state.situationFailed;
  $("#stale").hidden = !stale;
  $(".kpis").classList.toggle("stale", stale);
  if (stale) {
    setText("#stale b", state.situationOkMs
      ? t("situation.stale", { time: shanghaiTime(state.situationOkMs) }) : t("situation.failed"));
  }
}

/**
 * The cities the key may see (a Set), or null: the whole province. ``GET /v1/me`` states the
 * key's scope, so the map and the tiles are scoped as soon as it answers, whether the situation
 * service answers or not (an API just started, or failing). A key scoped by sensor-id prefix
 * also sees the cities its sensors are in, which only ``/v1/situation`` lists: those are added
 * once it answers (until then such a key without cities of its own is shown the province).
 * Without /v1/me (an older API, or the call failed) the situation's list is all the page has.
 */
function keyScope() {
  const listed = state.situation ? listedCities(state.situation) : undefined; // undefined: unknown
  const scope = state.me?.scope;
  if (scope === undefined) return listed ?? null;
  if (scope === null) return null;
  const cities = new Set(scope.cities || []);
  if (!scope.sensor_prefixes?.length) return cities;
  if (listed === undefined) return cities.size ? cities : null;
  if (listed === null) return null;
  for (const code of listed) cities.add(code);
  return cities;
}

/** The cities /v1/situation lists (null: all of them, the province). */
function listedCities(situation) {
  const codes = (situation.cities || []).map((c) => c.code);
  if (!map?.cities || codes.length >= map.cities.length) return null;
  return new Set(codes);
}

function setScope(scope) {
  const key = (s) => (s ? [...s].sort().join() : "");
  if (key(scope) === key(state.scope)) return;
  state.scope = scope;
  map.setScope(scope);
  $("#scope").hidden = !scope;
  renderLegend();
  renderScope();
  fillFilters();
  markAll();
  schedule();
}

/** The legend names the dark colour of the cities outside a scoped key's, where they are drawn. */
function renderLegend() {
  $("#legend-outside").hidden = !state.scope || map.level !== "province";
  // Drilled in, the sensors are drawn (from the situation) in the alert colours: say what they mean.
  $("#sensor-legend").hidden = map.level !== "city" || !state.hasSituation;
}

function renderScope() {
  if (state.scope) $("#scope").textContent = t("scope.label", { names: scopeNames() });
}

/** The 0-10 traffic performance index in its five bands: 畅通 … 严重拥堵. */
function trafficBand(index) {
  return index < 2 ? "free" : index < 4 ? "light" : index < 6 ? "mild" : index < 8 ? "moderate" : "heavy";
}

function setText(selector, text) {
  const node = $(selector);
  if (node.textContent !== text) node.textContent = text;
}

function situationSummary(city) {
  if (!state.situation) return null;
  if (!city) return state.situation.province || null;
  if (state.citySituation?.city?.code === city) return state.citySituation.city;
  return (state.situation.cities || []).find((c) => c.code === city) || null;
}

function renderAsOf() {
  const ms = state.situation?.as_of_ms || Date.parse(state.situation?.as_of || "") || state.streamAliveMs;
  setText("#asof", ms ? shanghaiTime(ms) : t("clock.nodata"));
}

function renderTrends() {
  if (!map?.cities) return;
  const s = summary();
  const metric = state.metric;
  const cities = visibleCities().map((code) => {
    const sit = (state.situation?.cities || []).find((c) => c.code === code);
    let points = [];
    if (sit?.trend?.length && sit.trend.some((p) => p[metric] != null)) {
      points = sit.trend.filter((p) => p[metric] != null).map((p) => [p.t_ms, p[metric]]);
    } else if (metric === "open_alerts") {
      const g = s.byCity.get(code);  // the samples so far, and now
      points = [...(state.localTrend.get(code) || []), [Date.now(), g ? g.open + g.acknowledged : 0]];
    }
    return { code, name: cityName(code), worst: s.byCity.get(code)?.worst || null, points };
  });
  trends.update(cities, metric);
}

function sample() {
  const s = summary();
  const now = Date.now();
  for (const code of map?.cities || []) {
    const g = s.byCity.get(code);
    const series = state.localTrend.get(code) || [];
    series.push([now, g ? g.open + g.acknowledged : 0]);
    if (series.length > TREND_KEEP) series.splice(0, series.length - TREND_KEEP);
    state.localTrend.set(code, series);
  }
  renderTrends();
}

// -- talking to the API -------------------------------------------------------------------------

let listing = 0;

async function loadAlerts() {
  const token = ++listing;
  const found = [];
  try {
    let cursor = null;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const query = new URLSearchParams([["status", "open"], ["status", "acknowledged"], ["limit", String(PAGE)]]);
      if (cursor) query.set("cursor", cursor);
      const doc = await api(`v1/alerts?${query}`);
      if (token !== listing) return;
      found.push(...doc.alerts);
      cursor = doc.next_cursor;
      if (!cursor) break;
    }
  } catch (error) {
    if (error.status === 401 || token !== listing) return;
    console.warn("listing alerts:", error.message);
    after("list", () => { if (token === listing) loadAlerts(); }, 5000);
    return;
  }
  for (const alert of found) mergeListed(alert);
  state.listed = true;
  markAll();
  schedule();
  sample();
  document.body.dataset.ready = "1";
}

/**
 * After ``event: reset`` the page's alerts may be stale: events since its id were lost, or the id
 * was of an alerts topic since recreated (a broker that restarted empty), whose alerts, and their
 * seqs, are gone. Merging the list into them would keep alerts resolved meanwhile, and ignore a
 * new alert whose seq is below the old one's: the list replaces them. The reset comes before any
 * event of its connection, so what is pending is older than the list too.
 */
function relist() {
  state.alerts.clear();
  state.gone.clear();
  state.pending = [];
  state.listed = false;
  markAll();
  loadAlerts();
}

/** Run ``fn`` in ``ms`` (replacing the job's pending timer), unless the page stopped meanwhile. */
function after(job, fn, ms) {
  clearTimeout(state.timers.get(job));
  const generation = state.generation;
  state.timers.set(job, setTimeout(() => { if (generation === state.generation) fn(); }, ms));
}

/** Whether the API has the situation routes yet (they came later than the alerts). */
async function probeSituation() {
  const generation = state.generation;
  try {
    const res = await fetch("openapi.json", { cache: "no-store" });
    const doc = res.ok ? await res.json() : { paths: {} };
    if (generation !== state.generation) return;
    state.hasSituation = Boolean(doc.paths && doc.paths["/v1/situation"]);
    state.probed = true;
    if (state.hasSituation) {
      pollSituation();
    } else {
      state.situation = null;
      after("probe", probeSituation, PROBE_MS);
    }
    state.dirty.kpi = true;
    schedule();
  } catch (error) {
    console.warn("situation probe:", error.message);
    after("probe", probeSituation, PROBE_MS);
  }
}

/** A GET that gives up (AbortError) after ``ms``. */
async function getWithin(path, ms) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ms);
  try {
    return await api(path, { signal: controller.signal });
  } finally {
    clearTimeout(timer);
  }
}

async function pollSituation() {
  if (!state.hasSituation || !getKey()) return;
  const generation = state.generation;
  try {
    const situation = await getWithin("v1/situation", SITUATION_TIMEOUT_MS);
    if (generation !== state.generation) return;
    state.situation = situation;
    state.situationOkMs = Date.now();
    state.situationFailed = false;
    setScope(keyScope());
    if (map.level === "city") await loadCitySituation(map.city);
    state.dirty.kpi = true;
    state.dirty.map = true;
    renderTrends();
    schedule();
  } catch (error) {
    if (error.status === 401) return;
    if (error.status === 404) {
      state.hasSituation = false;
      probeSituation();
      return;
    }
    if (generation !== state.generation) return;
    console.warn("situation:", error.message);
    state.situationFailed = true;
    state.dirty.kpi = true;
    schedule();
  }
  after("situation", pollSituation, SITUATION_MS);
}

async function loadCitySituation(code) {
  if (!state.hasSituation) return;
  try {
    const doc = await getWithin(`v1/situation/${code}`, SITUATION_TIMEOUT_MS);
    if (map.level === "city" && map.city === code) state.citySituation = doc;
  } catch (error) {
    if (error.status !== 401) console.warn(`situation of ${code}:`, error.message);
  }
}

function setLive(which) {
  const live = $("#live");
  live.dataset.state = which;
  live.querySelector("b").textContent = t(`live.${which}`);
  live.querySelector("b").dataset.i18n = `live.${which}`;
}

/**
 * Who the key is (GET /v1/me): a key that may not act (a viewer: a wall screen, a leader's
 * tablet) gets the feed without buttons, and the header says 只读; a scoped key's map and tiles
 * show its cities (keyScope). When the call fails (an API from before /v1/me answers 404) the
 * page stays as it was: every key may try to act, and the scope comes from the situation.
 */
async function loadMe() {
  const generation = state.generation;
  let me = null;
  try {
    me = await api("v1/me", { timeoutMs: ME_TIMEOUT_MS });
  } catch (error) {
    if (error.status === 401 || generation !== state.generation) return;
    console.warn("GET /v1/me:", error.message);
    // An API from before /v1/me answers 404, and will go on doing so; a timeout, a lost
    // connection or a 5xx (an API restarting) may pass: ask again, or a viewer key would keep
    // the buttons and a scoped key the province until the key changes or the page reloads.
    if (error.status !== 404) after("me", loadMe, ME_RETRY_MS);
  }
  if (generation === state.generation) setMe(me);
}

function setMe(me) {
  state.me = me;
  setScope(keyScope());
  const readOnly = Boolean(me && Array.isArray(me.may) && !me.may.includes("act"));
  $("#readonly").hidden = !readOnly;
  feed.setMayAct(!readOnly);
  state.last.feed = 0;
  redrawFeed();
}

function startLive() {
  stopLive();
  delete document.body.dataset.ready; // set again once this key's alerts are listed
  state.alerts.clear();
  state.gone.clear();
  state.pending = [];
  state.listed = false;
  state.hasSituation = false;
  state.probed = false;
  state.situation = null;
  state.situationOkMs = 0;
  state.situationFailed = false;
  setMe(null); // and with it the scope: nothing known of this key yet
  markAll();
  stream = new EventStream("v1/alerts/stream?heartbeat_s=10", {
    onOpen: (resumed) => { if (!resumed) loadAlerts(); },
    onEvent: (name, data) => {
      if (name === "alert") {
        state.pending.push(data);
        schedule();
      } else if (name === "reset") {
        relist();
      }
    },
    onState: setLive,
    onAlive: () => { state.streamAliveMs = Date.now(); },
  });
  stream.start();
  loadMe();
  probeSituation();
  const tick = () => { sample(); after("sample", tick, SAMPLE_MS); };
  after("sample", tick, SAMPLE_MS);
}

function stopLive() {
  detail?.close(); // the next key may not see it
  stream?.stop();
  stream = null;
  listing += 1;
  state.generation += 1;
  for (const timer of state.timers.values()) clearTimeout(timer);
  state.timers.clear();
}

// -- the operator key ---------------------------------------------------------------------------

/**
 * Ask for a key. ``cancellable`` (更换密钥 with a working key): the page goes on with the current
 * key until another one is accepted, and Esc or 取消 keeps it. Otherwise the page stops first.
 */
function askKey(messageKey, { cancellable = false } = {}) {
  if (!cancellable) {
    stopLive();
    setLive("off");
  }
  const dialog = $("#key-dialog");
  dialog.dataset.cancellable = cancellable ? "1" : "";
  $("#key-cancel").hidden = !cancellable;
  $("#key-error").textContent = messageKey ? t(messageKey) : "";
  // With a working key the dialog also changes only the name (the next shift at a shared key):
  // an empty key field keeps the key.
  const input = $("#key-input");
  input.required = !cancellable;
  input.dataset.i18nPlaceholder = cancellable ? "key.placeholderKeep" : "key.placeholder";
  input.placeholder = t(input.dataset.i18nPlaceholder);
  $("#operator-input").value = getOperator(); // the shift's name stays when the key changes
  if (!dialog.open) dialog.showModal();
  $("#key-input").focus();
}

function cancelKey() {
  const dialog = $("#key-dialog");
  if (!dialog.dataset.cancellable) return;
  $("#key-input").value = "";
  $("#key-error").textContent = "";
  dialog.close();
}

async function submitKey(event) {
  event.preventDefault();
  const input = $("#key-input");
  const key = input.value.trim();
  const dialog = $("#key-dialog");
  if (!key && dialog.dataset.cancellable) { // the name only: the key and the live feed stay
    setOperator($("#operator-input").value.trim());
    $("#key-error").textContent = "";
    dialog.close();
    return;
  }
  const error = $("#key-error");
  if (!key) { // only spaces: say so (the field's own check takes only an empty one)
    error.textContent = t("key.empty");
    input.focus();
    return;
  }
  error.textContent = t("key.checking");
  try {
    await api("v1/alerts?limit=1", { key });
  } catch (e) {
    error.textContent = t(e.status === 401 ? "key.invalid" : e.status === 403 ? "key.forbidden" : "key.unreachable");
    return;
  }
  setKey(key);
  setOperator($("#operator-input").value.trim());
  feed.forgetCommands();
  input.value = "";
  error.textContent = "";
  $("#key-dialog").close();
  startLive();
}

// -- acting -------------------------------------------------------------------------------------

/**
 * Send an operator's command (ack, resolve, assign, comment). The row is pending until the
 * alert's event comes back on the stream (Feed.settle); a failure, a timeout included, stays
 * in the row with 重试. The same request again (a retry) reuses its Idempotency-Key, so a call
 * that timed out after the API took it is applied once.
 *
 * A 202 means the command is on the commands topic, not that the alerting worker applied it:
 * if its event has not come back within APPLY_WAIT_MS (the worker is busy, or down), the row
 * says so and offers 重试 (the API answers a retry with the first 202 and publishes nothing;
 * the worker applies the command once it runs). The event, whenever it comes, settles the row.
 */
async function command(id, action, body) {
  const before = feed.commands.get(id);
  if (before?.pending) return;
  const same = before && before.action === action && JSON.stringify(before.body) === JSON.stringify(body);
  const key = same ? before.key : newRequestKey();
  const pending = { action, body, key, pending: true };
  feed.commands.set(id, pending);
  redrawFeed();
  try {
    await api(`v1/alerts/${encodeURIComponent(id)}/${action}`,
      { method: "POST", body, requestKey: key, timeoutMs: COMMAND_TIMEOUT_MS });
  } catch (error) {
    if (feed.commands.get(id)?.key !== key) return; // settled meanwhile, or another command
    feed.commands.set(id, { action, body, key, status: error.status || 0,
      detail: error.timeoutMs ? "" : error.message, timeoutMs: error.timeoutMs || 0 });
    redrawFeed();
    return;
  }
  setTimeout(() => {
    if (feed.commands.get(id) !== pending) return; // its event came (or another command)
    feed.commands.set(id, { action, body, key, status: 202, detail: "", timeoutMs: 0,
      waitedMs: APPLY_WAIT_MS });
    redrawFeed();
  }, APPLY_WAIT_MS);
}

function redrawFeed() {
  state.dirty.feed = true;
  state.version += 1;
  schedule();
}

// -- drill-down ---------------------------------------------------------------------------------

async function drill(code) {
  if (state.scope && !state.scope.has(code)) return; // the map does not offer it either
  await map.drill(code);
  state.citySituation = null;
  $("#back").hidden = false;
  renderLegend();
  $("#map-title").textContent = cityName(code);
  $("#map-title").removeAttribute("data-i18n");
  // The feed follows the map: the drilled city, whatever city it was filtered to before.
  state.filters.city = code;
  $("#f-city").value = code;
  state.drillFilter = true;
  state.last.feed = 0;
  markAll();
  schedule();
  await loadCitySituation(code);
  state.dirty.map = state.dirty.kpi = true;
  schedule();
}

function back() {
  if (map.level === "province") return;
  map.back();
  state.citySituation = null;
  $("#back").hidden = true;
  renderLegend();
  $("#map-title").dataset.i18n = "map.title";
  $("#map-title").textContent = t("map.title");
  if (state.drillFilter) {
    state.filters.city = "";
    $("#f-city").value = "";
    state.drillFilter = false;
  }
  markAll();
  schedule();
}

// -- page furniture -----------------------------------------------------------------------------

/** A held feed may show what waited: the pointer left it, or the operator asked. */
function releaseFeed() {
  state.dirty.feed = true;
  state.last.feed = 0;
  schedule();
}

function fillFilters() {
  const citySelect = $("#f-city");
  const deptSelect = $("#f-dept");
  citySelect.replaceChildren(new Option(t("feed.allCities"), ""),
    ...visibleCities().map((code) => new Option(cityName(code), code)));
  citySelect.value = state.filters.city;
  deptSelect.replaceChildren(new Option(t("feed.allDepts"), ""),
    ...Object.keys(DEPARTMENTS).map((code) => new Option(deptName(code), code)));
  deptSelect.value = state.filters.dept;
  const sevSelect = $("#f-sev");
  sevSelect.replaceChildren(new Option(t("feed.allSevs"), ""),
    ...["red", "orange", "yellow"].map((sev) => new Option(t(`feed.sev.${sev}`), sev)));
  sevSelect.value = state.filters.sev;
}

const FILTERS_STORE = "cityagent.filters";

/**
 * The department and severity filters outlive a reload (a department's dispatcher sets 水务局
 * once per console, not after every reload); the city filter follows the map, which starts on
 * the province.
 */
function loadFilters() {
  try {
    const saved = JSON.parse(localStorage.getItem(FILTERS_STORE) || "{}");
    if (Object.hasOwn(DEPARTMENTS, saved.dept)) state.filters.dept = saved.dept;
    if (["red", "orange", "yellow"].includes(saved.sev)) state.filters.sev = saved.sev;
  } catch { /* storage blocked or not JSON: no filter */ }
}

function saveFilters() {
  const { dept, sev } = state.filters;
  try { localStorage.setItem(FILTERS_STORE, JSON.stringify({ dept, sev })); } catch { /* blocked */ }
}

const DATE = new Intl.DateTimeFormat("zh-CN", { timeZone: "Asia/Shanghai", year: "numeric", month: "2-digit", day: "2-digit" });

function tick() {
  const now = Date.now();
  $("#clock").textContent = `${DATE.format(now)} ${shanghaiTime(now)}`;
  renderAsOf();
}

async function main() {
  setLang(getLang());
  tick();
  setInterval(tick, 1000);
  feed = new Feed($("#feed"), $("#feed-more"), $("#feed-count"), $("#feed-new"),
    { onCommand: command, onRelease: releaseFeed, regionName: cityName,
      isResolved: (id) => state.gone.has(id),
      onDetail: (id) => detail.open(id, state.alerts.get(id)) });
  detail = new AlertDetail($("#alert-detail"), { regionName: cityName });
  map = new ShandongMap($("#map"), { onDrill: drill, onBack: back,
    onAlert: (id) => state.alerts.has(id) && detail.open(id, state.alerts.get(id), { fromMap: true }) });
  trends = new Trends($("#trends"));
  window.__cityagent = {
    /** Apply alert events as if they came from the stream (tests, demos). */
    ingest(events) {
      for (const event of events) state.pending.push(event);
      schedule();
    },
    /** The alerts the page holds (open and acknowledged). */
    alerts: () => [...state.alerts.values()],
    mapState: () => map.state(),
    pixelOf: (code) => map.pixelOf(code),
    stats: () => ({ alerts: state.alerts.size, rows: $("#feed").querySelectorAll("li[data-alert-id]").length,
      pending: state.pending.length, flushes: state.flushes, costs: { ...state.costs }, renders: { ...state.renders }, listed: state.listed, situation: state.hasSituation,
      held: feed.held, scope: state.scope ? [...state.scope] : null, me: state.me }),
    map,
    trends,
  };

  $("#lang").addEventListener("click", () => setLang(getLang() === "zh" ? "en" : "zh"));
  $("#change-key").addEventListener("click", () => askKey(null, { cancellable: Boolean(getKey()) }));
  $("#key-form").addEventListener("submit", submitKey);
  $("#key-cancel").addEventListener("click", cancelKey);
  $("#key-dialog").addEventListener("cancel", (event) => {
    event.preventDefault(); // Esc: only a cancellable dialog closes, and keeps the current key
    cancelKey();
  });
  $("#back").addEventListener("click", back);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("#key-dialog").open && !$("#alert-detail").open) back();
  });
  $("#f-city").addEventListener("change", (event) => {
    state.filters.city = event.target.value;
    state.drillFilter = false;
    state.dirty.feed = true;
    state.last.feed = 0;
    schedule();
  });
  for (const [select, filter] of [["#f-dept", "dept"], ["#f-sev", "sev"]]) {
    $(select).addEventListener("change", (event) => {
      state.filters[filter] = event.target.value;
      saveFilters();
      state.dirty.feed = true;
      state.last.feed = 0;
      schedule();
    });
  }
  for (const tab of document.querySelectorAll(".tabs button")) {
    tab.addEventListener("click", () => {
      state.metric = tab.dataset.metric;
      for (const other of document.querySelectorAll(".tabs button")) other.setAttribute("aria-selected", String(other === tab));
      renderTrends();
    });
  }
  onLangChange(() => {
    renderKpiTitle(); // applyI18n has just set it to the province's word
    fillFilters();
    map.render(true);
    setLive($("#live").dataset.state);
    if (map.level === "city") $("#map-title").textContent = cityName(map.city);
    renderScope();
    if (detail.openId) detail.render();
    markAll();
    state.last.feed = state.last.map = state.last.kpi = 0;
    schedule();
    renderTrends();
  });
  onUnauthorized(() => {
    clearKey();
    askKey("key.expired");
  });

  await map.load();
  loadFilters();
  fillFilters();
  renderTrends();
  schedule();
  if (getKey()) startLive();
  else askKey();
}

main().catch((error) => {
  console.error("dashboard failed to start:", error);
});
