// The live alert feed: at most MAX_ROWS rows in the DOM, rows reused by alert id and changed only
// when their alert did, so a render after a burst of events touches few nodes.

import { deptName, getLang, t } from "./i18n.js";

export const MAX_ROWS = 200;

const TIME = new Intl.DateTimeFormat("zh-CN", {
  timeZone: "Asia/Shanghai", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});
const DAY = new Intl.DateTimeFormat("zh-CN", { timeZone: "Asia/Shanghai", month: "2-digit", day: "2-digit" });

export function shanghaiTime(ms) {
  return TIME.format(ms);
}

function when(ms) {
  const today = DAY.format(Date.now());
  const day = DAY.format(ms);
  return day === today ? TIME.format(ms) : `${day} ${TIME.format(ms)}`;
}

export class Feed {
  /** ``onAck(alertId)`` is called when an operator clicks a row's ack button. */
  constructor(list, more, count, { onAck, regionName }) {
    this.list = list;
    this.more = more;
    this.count = count;
    this.regionName = regionName; // city or district code -> its name in the current language
    this.rows = new Map(); // alert id -> {li, stamp}
    this.acking = new Map(); // alert id -> "pending" | error text
    list.addEventListener("click", (event) => {
      const button = event.target.closest("button.ack");
      if (button) onAck(button.closest("li").dataset.alertId);
    });
  }

  /** Show ``items`` (already filtered and sorted, newest first); ``fresh``: ids just changed. */
  render(items, fresh) {
    const lang = getLang();
    const shown = items.length > MAX_ROWS ? items.slice(0, MAX_ROWS) : items;
    const nodes = new Array(shown.length);
    const keep = new Set();
    for (let i = 0; i < shown.length; i += 1) {
      const alert = shown[i];
      const id = alert.alert_id;
      const stamp = `${alert.seq}|${alert.status}|${lang}|${this.acking.get(id) ?? ""}`;
      let row = this.rows.get(id);
      if (!row) {
        row = { li: document.createElement("li"), stamp: "" };
        this.rows.set(id, row);
      }
      if (row.stamp !== stamp) {
        this.fill(row.li, alert, lang);
        row.stamp = stamp;
      }
      if (fresh.has(id)) flash(row.li);
      nodes[i] = row.li;
      keep.add(id);
    }
    for (const id of this.rows.keys()) if (!keep.has(id)) this.rows.delete(id);
    if (!nodes.length) {
      const empty = document.createElement("li");
      empty.className = "empty";
      empty.textContent = t("feed.empty");
      this.list.replaceChildren(empty);
    } else if (!sameChildren(this.list, nodes)) {
      this.list.replaceChildren(...nodes);
    }
    this.count.textContent = t("feed.count", { n: items.length });
    const hidden = items.length - shown.length;
    this.more.hidden = hidden <= 0;
    if (hidden > 0) this.more.textContent = t("feed.more", { n: hidden });
  }

  fill(li, a, lang) {
    li.dataset.alertId = a.alert_id;
    li.dataset.severity = a.severity;
    li.dataset.status = a.status;
    li.dataset.city = a.city_code;
    const title = (lang === "en" ? a.title_en : a.title_zh) || a.title_zh || a.alert_id;
    const place = (lang === "en"
      ? [a.city_code && this.regionName(a.city_code), a.district_code && this.regionName(a.district_code)]
      : [a.city_name, a.district_name]).filter(Boolean).join(" · ");
    const depts = (a.departments || []).map(deptName).join(lang === "en" ? ", " : "、");
    const sensors = a.sensor_count > 1 ? t("feed.sensors", { n: a.sensor_count }) : (a.sensors || [])[0] || "";
    const badge = el("span", "badge", t(`sev.${a.severity}`));
    const ttl = el("span", "ttl", title);
    ttl.title = `${title}\n${lang === "en" ? a.reason_en : a.reason_zh}`;
    const act = el("span", "act");
    act.append(el("time", "", when(a.last_seen_ms)));
    const state = this.acking.get(a.alert_id);
    if (a.status === "open") {
      const button = el("button", "ack", state === "pending" ? t("feed.acking") : t("feed.ack"));
      button.type = "button";
      button.disabled = state === "pending";
      if (state && state !== "pending") button.title = t("feed.ackFailed", { msg: state });
      act.append(button);
    } else {
      const st = el("span", "st", t(`status.${a.status}`));
      if (a.acknowledged_by) st.title = a.acknowledged_by;
      act.append(st);
    }
    const meta = el("span", "meta", [place, depts, sensors].filter(Boolean).join(" · "));
    li.replaceChildren(badge, ttl, act, meta);
  }
}

const FLASH = [{ filter: "brightness(2.2)" }, { filter: "brightness(1)" }];

/** Highlight a changed row (an animation, no forced layout, so bursts stay cheap). */
function flash(li) {
  if (li.animate) li.animate(FLASH, { duration: 1600, easing: "ease-out" });
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function sameChildren(parent, nodes) {
  const children = parent.children;
  if (children.length !== nodes.length) return false;
  for (let i = 0; i < nodes.length; i += 1) if (children[i] !== nodes[i]) return false;
  return true;
}
