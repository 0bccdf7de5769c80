// One alert, opened from the feed (its title): the whole title and reason, where, who handles
// it, its sensors and times, and its history from GET /v1/alerts/{id}: who acknowledged,
// assigned, commented (the comments' text is only there) and resolved it, and when.
//
// The feed's row has room for one line of each; at 1366×768 a storm's title, its departments
// and a comment are cut short, and a comment made before the page was opened shows only as
// "备注 1 条". The panel is a modal <dialog>: Esc or 关闭 closes it and focus goes back to
// the row's title. While it is open, the alert's events fetch it again (at most every
// REFRESH_MS), so it follows the alert live.

import { api } from "./api.js";
import { alertPlace, shanghaiTime } from "./feed.js";
import { deptName, getLang, t, tn } from "./i18n.js";

const REFRESH_MS = 1500;
const TIMEOUT_MS = 8000;
const DAY = new Intl.DateTimeFormat("zh-CN", { timeZone: "Asia/Shanghai", month: "2-digit", day: "2-digit" });

function stamp(ms) {
  return ms ? `${DAY.format(ms)} ${shanghaiTime(ms)}` : "—";
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** An actor in words: 系统 for the engine, 张三（prov-duty） (English: 张三 (prov-duty)) for
 * NAME@KEY_ID, else the key id. */
function actorName(actor) {
  if (!actor || actor === "system") return t("detail.system");
  const at = actor.lastIndexOf("@");
  if (at <= 0) return actor;
  const [name, key] = [actor.slice(0, at), actor.slice(at + 1)];
  return getLang() === "en" ? `${name} (${key})` : `${name}（${key}）`;
}

/**
 * The history, newest first, with each run of sensor changes (``updated``: a member's episode
 * began, escalated or ended; a storm has hundreds) folded into one line with its count and
 * time span, so that the operators' entries stay in sight.
 */
export function historyLines(history) {
  const lines = [];
  for (const item of [...history].reverse()) {
    const last = lines[lines.length - 1];
    if (item.type === "updated" && last?.type === "updated") {
      last.count += 1;
      last.fromMs = item.at_ms;
    } else {
      lines.push({ ...item, count: 1, fromMs: item.at_ms });
    }
  }
  return lines;
}

/** The engine's own words in an event's detail, in the page's language (an operator's text
 * stays as written). */
function systemDetail(line) {
  if (line.actor !== "system" || !line.detail) return line.detail;
  if (line.type === "resolved" && line.detail === "sensors normal") return t("detail.autoResolved");
  if (line.type === "escalated" && ["city", "province"].includes(line.detail)) {
    return t(`detail.escalatedTo.${line.detail}`);
  }
  return line.detail;
}

export class AlertDetail {
  /** ``regionName(code)``: a city's or district's name in the current language. */
  constructor(dialog, { regionName }) {
    this.dialog = dialog;
    this.regionName = regionName;
    this.body = dialog.querySelector(".detail-body");
    this.id = null;
    this.doc = null; // the last GET /v1/alerts/{id} answer
    this.error = null;
    this.opener = null; // the element to give focus back to
    this.fromMap = false; // opened from the map: focus does not go to its row
    this.timer = 0;
    this.loading = 0; // bumps with every fetch: a late answer for another alert is dropped
    dialog.querySelector(".detail-close").addEventListener("click", () => this.close());
    dialog.addEventListener("close", () => this.closed());
    dialog.addEventListener("click", (event) => { // a click on the backdrop closes it
      if (event.target === dialog) this.close();
    });
  }

  get openId() {
    return this.dialog.open ? this.id : null;
  }

  /**
   * ``fromMap``: opened by a dot on the map; closing it does not put focus on the alert's row in
   * the feed (a focused row holds the feed).
   */
  open(id, alert, { fromMap = false } = {}) {
    this.opener = document.activeElement;
    this.fromMap = fromMap;
    this.id = id;
    this.doc = alert ? { alert, history: null, history_complete: true } : null;
    this.error = null;
    this.render();
    if (!this.dialog.open) this.dialog.showModal();
    this.dialog.querySelector(".detail-close").focus();
    this.fetch();
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }

  closed() {
    clearTimeout(this.timer);
    this.timer = 0;
    this.loading += 1;
    const id = this.id;
    this.id = null;
    // Back to the row's title (the row may have been redrawn meanwhile: find it again).
    const row = id && !this.fromMap && document.querySelector(`#feed li[data-alert-id="${CSS.escape(id)}"] button.ttl`);
    const target = row || (this.opener?.isConnected ? this.opener : null);
    target?.focus({ preventScroll: true });
  }

  /** An event of the open alert came: fetch it again, at most every REFRESH_MS. */
  changed(id) {
    if (id !== this.openId || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = 0;
      this.fetch();
    }, REFRESH_MS);
  }

  async fetch() {
    const id = this.id;
    const token = ++this.loading;
    try {
      const doc = await api(`v1/alerts/${encodeURIComponent(id)}`, { timeoutMs: TIMEOUT_MS });
      if (token !== this.loading) return;
      this.doc = doc;
      this.error = null;
    } catch (error) {
      if (token !== this.loading) return;
      this.error = error.status === 404 ? t("feed.err.404")
        : error.timeoutMs ? t("feed.err.timeout", { s: error.timeoutMs / 1000 })
          : error.status ? t("feed.err.other", { status: error.status }) : t("feed.err.network");
    }
    this.render();
  }

  render() {
    const lang = getLang();
    const alert = this.doc?.alert;
    const head = this.dialog.querySelector(".detail-head");
    const badge = head.querySelector(".badge");
    const title = head.querySelector("h2");
    this.dialog.querySelector(".detail-close").textContent = t("detail.close");
    if (!alert) {
      badge.hidden = true;
      title.textContent = this.id || "";
    } else {
      badge.hidden = false;
      badge.textContent = t(`sev.${alert.severity}`);
      this.dialog.dataset.severity = alert.severity;
      title.textContent = (lang === "en" ? alert.title_en : alert.title_zh) || alert.title_zh || alert.alert_id;
    }
    const nodes = [];
    if (this.error) {
      const err = el("p", "detail-error", t("detail.failed", { msg: this.error }));
      err.setAttribute("role", "alert");
      nodes.push(err);
    }
    if (alert) nodes.push(this.facts(alert, lang));
    if (this.doc?.history) {
      nodes.push(el("h3", "", t("detail.history")), this.history(this.doc.history));
      if (!this.doc.history_complete) nodes.push(el("p", "detail-note", t("detail.incomplete")));
    } else if (!this.error) {
      nodes.push(el("p", "detail-note", t("detail.loading")));
    }
    this.body.replaceChildren(...nodes);
  }

  facts(a, lang) {
    const dl = el("dl", "facts");
    const add = (key, value) => {
      if (!value) return;
      dl.append(el("dt", "", t(key)), el("dd", "", value));
    };
    const sep = lang === "en" ? ", " : "、";
    let status = t(`status.${a.status}`);
    if (a.status === "acknowledged" && a.acknowledged_by) {
      status += ` · ${actorName(a.acknowledged_by)} ${stamp(a.acknowledged_at_ms)}`;
    }
    if (a.status === "resolved") {
      status += ` · ${actorName(a.resolved_by)} ${stamp(a.resolved_at_ms)}`;
    }
    add("detail.status", status);
    add("detail.reason", lang === "en" ? a.reason_en : a.reason_zh);
    add("detail.place", alertPlace(a, lang, this.regionName, Infinity)); // every district
    add("detail.depts", (a.departments || []).map(deptName).join(sep));
    if (a.assigned_to) add("detail.assigned", a.assigned_to);
    const listed = a.sensors || [];
    let sensors = listed.join(sep);
    if (a.sensor_count > listed.length) sensors += ` ${t("detail.sensorsMore", { n: a.sensor_count })}`;
    if (a.active_sensor_count === 0 && a.status !== "resolved") sensors += ` — ${t("feed.recovered")}`;
    else if (a.active_sensor_count > 0 && a.active_sensor_count < a.sensor_count) { // as the row
      sensors += ` — ${t("feed.sensorsActive", { n: a.sensor_count, active: a.active_sensor_count })}`;
    }
    add("detail.sensors", sensors);
    add("detail.firstSeen", stamp(a.first_seen_ms));
    add("detail.lastSeen", stamp(a.last_seen_ms));
    add("detail.opened", stamp(a.opened_ms));
    return dl;
  }

  history(history) {
    const list = el("ol", "history");
    for (const line of historyLines(history)) {
      const li = el("li", "");
      li.dataset.type = line.type;
      const when = line.count > 1 && line.fromMs !== line.at_ms
        ? `${stamp(line.fromMs)} – ${shanghaiTime(line.at_ms)}` : stamp(line.at_ms);
      const what = line.count > 1 ? tn("detail.updates", line.count) : t(`ev.${line.type}`);
      li.append(el("time", "", when), el("b", "", what));
      if (line.type !== "updated" || line.count === 1) li.append(el("span", "who", actorName(line.actor)));
      const detail = line.type === "updated" && line.count === 1 ? line.sensor_id : systemDetail(line);
      if (detail && line.count === 1) li.append(el("q", "", detail));
      list.append(li);
    }
    return list;
  }
}
