// The live alert feed: at most MAX_ROWS rows in the DOM, rows reused by alert id and changed only
// when their alert did, so a render after a burst of events touches few nodes.
//
// While the operator's pointer is over the list, or one of its rows has keyboard focus, the feed
// is *held*: rows change in place but none moves, comes or goes, so a click lands on the row it
// was aimed at. What is waiting shows as "N 条新告警" in the header; it is applied when the
// pointer leaves the list, focus leaves it, or the operator clicks that indicator.

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

/** A failed ack in words: what the operator can do about it, by the API's answer. */
function ackReason(status) {
  if (!status) return t("feed.err.network");
  if (status === 403 || status === 404 || status === 409) return t(`feed.err.${status}`);
  return t("feed.err.other", { status });
}

export class Feed {
  /**
   * ``onAck(alertId)`` is called when an operator clicks a row's ack button, ``onRelease()``
   * when a held feed may show what is waiting.
   */
  constructor(list, more, count, waiting, { onAck, onRelease, regionName }) {
    this.list = list;
    this.more = more;
    this.count = count;
    this.waiting = waiting; // the "N new alerts" button
    this.regionName = regionName; // city or district code -> its name in the current language
    this.rows = new Map(); // alert id -> {li, stamp}
    this.shown = []; // alert ids in the order of the list's rows
    this.acking = new Map(); // alert id -> "pending" | {status, detail} of a failed ack
    this.pointer = false;
    this.focused = false;
    list.addEventListener("click", (event) => {
      const button = event.target.closest("button.ack");
      if (button && !button.disabled) onAck(button.closest("li").dataset.alertId);
    });
    const hold = (which, on) => {
      const was = this.held;
      this[which] = on;
      if (was && !this.held) onRelease();
    };
    list.addEventListener("pointerenter", () => hold("pointer", true));
    list.addEventListener("pointerleave", () => hold("pointer", false));
    // Keyboard focus only: a button clicked with the mouse keeps focus, but not the hold.
    list.addEventListener("focusin", (event) => hold("focused", event.target.matches(":focus-visible")));
    list.addEventListener("focusout", (event) => hold("focused", list.contains(event.relatedTarget)));
    waiting.addEventListener("click", () => {
      this.pointer = this.focused = false;
      onRelease();
    });
  }

  /** Rows must not move: the pointer is over the list or one of its buttons has focus. */
  get held() {
    return this.pointer || this.focused;
  }

  /** Show ``items`` (already filtered and sorted); ``fresh``: ids just changed. */
  render(items, fresh) {
    const shown = items.length > MAX_ROWS ? items.slice(0, MAX_ROWS) : items;
    if (this.held && this.shown.length) this.renderHeld(items, shown, fresh);
    else this.renderAll(items, shown, fresh);
  }

  renderAll(items, shown, fresh) {
    const lang = getLang();
    const focus = this.focusedRow();
    const nodes = new Array(shown.length);
    const keep = new Set();
    for (let i = 0; i < shown.length; i += 1) {
      const alert = shown[i];
      nodes[i] = this.row(alert, lang, fresh).li;
      keep.add(alert.alert_id);
    }
    for (const id of this.rows.keys()) if (!keep.has(id)) this.rows.delete(id);
    this.shown = shown.map((a) => a.alert_id);
    if (!nodes.length) {
      const empty = document.createElement("li");
      empty.className = "empty";
      empty.textContent = t("feed.empty");
      this.list.replaceChildren(empty);
    } else if (!sameChildren(this.list, nodes)) {
      this.list.replaceChildren(...nodes);
    }
    this.refocus(focus);
    this.waiting.hidden = true;
    this.counts(items, shown);
  }

  /** Held: update the rows in place, in their order; count what waits to be shown. */
  renderHeld(items, shown, fresh) {
    const lang = getLang();
    const focus = this.focusedRow();
    const now = new Map(items.map((a) => [a.alert_id, a]));
    for (const id of this.shown) {
      const alert = now.get(id);
      const row = this.rows.get(id);
      if (alert) {
        this.row(alert, lang, fresh);
      } else if (row && !row.li.classList.contains("gone")) {
        row.li.classList.add("gone"); // resolved or filtered away: stays, inert, until released
        row.stamp = "gone";
        if (row.li.contains(document.activeElement)) row.li.focus({ preventScroll: true });
        for (const button of row.li.querySelectorAll("button")) button.disabled = true;
      }
    }
    this.refocus(focus);
    const onList = new Set(this.shown);
    const added = shown.reduce((n, a) => n + (onList.has(a.alert_id) ? 0 : 1), 0);
    const moved = !added && shown.some((a, i) => a.alert_id !== this.shown[i]);
    this.waiting.hidden = !added && !moved;
    if (added || moved) this.waiting.textContent = added ? t("feed.waiting", { n: added }) : t("feed.reordered");
    this.counts(items, shown);
  }

  /** The row of ``alert``, made or refilled when the alert changed since it was drawn. */
  row(alert, lang, fresh) {
    const id = alert.alert_id;
    const acking = this.acking.get(id);
    const failed = acking && acking !== "pending" ? `${acking.status}:${acking.detail}` : acking ?? "";
    const stamp = `${alert.seq}|${alert.status}|${alert._at}|${lang}|${failed}`;
    let row = this.rows.get(id);
    if (!row) {
      row = { li: document.createElement("li"), stamp: "" };
      row.li.tabIndex = -1; // focus stays on the row when its button goes (acknowledged)
      this.rows.set(id, row);
    }
    if (row.stamp !== stamp) {
      row.li.classList.remove("gone");
      this.fill(row.li, alert, lang);
      row.stamp = stamp;
    }
    if (fresh.has(id)) flash(row.li);
    return row;
  }

  counts(items, shown) {
    this.count.textContent = t("feed.count", { n: items.length });
    const hidden = items.length - shown.length;
    this.more.hidden = hidden <= 0;
    if (hidden > 0) this.more.textContent = t("feed.more", { n: hidden });
  }

  /** Which row (and whether its ack button) has keyboard focus, to keep it across a render. */
  focusedRow() {
    const active = document.activeElement;
    if (!active || !this.list.contains(active)) return null;
    const li = active.closest("li[data-alert-id]");
    return li ? { id: li.dataset.alertId, button: active.matches("button.ack") } : null;
  }

  refocus(focus) {
    if (!focus) return;
    const row = this.rows.get(focus.id);
    if (!row || !row.li.isConnected) return;
    const button = focus.button ? row.li.querySelector("button.ack:not(:disabled)") : null;
    const target = button || row.li;
    if (document.activeElement !== target) target.focus({ preventScroll: true });
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
    const time = el("time", "", when(a._at));
    time.dateTime = new Date(a._at).toISOString();
    time.title = t("feed.changed");
    act.append(time);
    const state = this.acking.get(a.alert_id);
    const failed = state && state !== "pending" ? state : null;
    if (a.status === "open") {
      const label = state === "pending" ? t("feed.acking") : failed ? t("feed.retry") : t("feed.ack");
      const button = el("button", "ack", label);
      button.type = "button";
      button.disabled = state === "pending";
      button.setAttribute("aria-label", `${label}: ${title}`);
      act.append(button);
    } else {
      const st = el("span", "st", t(`status.${a.status}`));
      if (a.acknowledged_by) st.title = a.acknowledged_by;
      act.append(st);
    }
    const meta = el("span", "meta", [place, depts, sensors].filter(Boolean).join(" · "));
    li.replaceChildren(badge, ttl, act, meta);
    if (failed && a.status === "open") {
      const err = el("span", "err");
      err.setAttribute("role", "alert");
      err.append(el("b", "", t("feed.ackFailed", { msg: ackReason(failed.status) })));
      if (failed.detail) err.append(el("small", "", failed.detail));
      li.append(err);
    }
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
