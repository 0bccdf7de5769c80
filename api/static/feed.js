// The live alert feed: at most MAX_ROWS rows in the DOM, rows reused by alert id and changed only
// when their alert did, so a render after a burst of events touches few nodes.
//
// While the operator's pointer is over the list, or one of its rows has keyboard focus, the feed
// is *held*: rows change in place but none moves, comes or goes, so a click lands on the row it
// was aimed at. What is waiting shows as "N 条新告警" in the header; it is applied when the
// pointer leaves the list, focus leaves it, or the operator clicks that indicator.
//
// Each row acts on its alert: 确认 (ack) at once, and behind 更多 (a toggle, so a keyboard and a
// touch screen reach it as well as a mouse) 解决 (resolve), 指派 (assign: an inline form) and
// 备注 (comment). A command is pending until its event comes back on the stream; a failure
// stays in the row, in words, until the alert changes, and so does a command the API accepted
// (202) whose event has not come back in time (the alerting worker may be busy or down).
// A read-only key (a viewer: GET /v1/me says it may not act) gets rows without buttons.

import { DEPARTMENTS, deptName, getLang, t, tn } from "./i18n.js";

export const MAX_ROWS = 200;
/** A row names up to this many districts of an alert; more are counted (济南市 · 12 个区县). */
export const PLACE_DISTRICTS = 3;

const TIME = new Intl.DateTimeFormat("zh-CN", {
  timeZone: "Asia/Shanghai", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});
const DAY = new Intl.DateTimeFormat("zh-CN", { timeZone: "Asia/Shanghai", month: "2-digit", day: "2-digit" });

/**
 * Every district of an alert's sensors: ``district_codes`` (the opener's first), or its one
 * ``district_code`` in an event written before the list existed.
 */
export function alertDistricts(a) {
  const codes = Array.isArray(a.district_codes) && a.district_codes.length
    ? a.district_codes : [a.district_code];
  return codes.filter(Boolean);
}

/**
 * Where an alert is, in ``lang``: its city, then its district, or its districts (up to
 * ``most`` named, more counted). ``regionName(code)`` names a city or district in the page's
 * language. A city-wide flood's row said only its opening sensor's district (济南市 · 莱芜区
 * for a flood over all 12 of Jinan's districts).
 */
export function alertPlace(a, lang, regionName, most = PLACE_DISTRICTS) {
  const codes = alertDistricts(a);
  const city = lang === "en" ? a.city_code && regionName(a.city_code) : a.city_name;
  let where;
  if (codes.length > most) where = t("feed.districts", { n: codes.length });
  else if (codes.length > 1) where = codes.map(regionName).join(lang === "en" ? ", " : "、");
  else where = lang === "en" ? a.district_code && regionName(a.district_code) : a.district_name;
  return [city, where].filter(Boolean).join(" · ");
}

export function shanghaiTime(ms) {
  return TIME.format(ms);
}

function when(ms) {
  const today = DAY.format(Date.now());
  const day = DAY.format(ms);
  return day === today ? TIME.format(ms) : `${day} ${TIME.format(ms)}`;
}

/** The actions a row offers, and the alert event that shows each one was applied. */
export const EVENT_OF = { ack: "acknowledged", resolve: "resolved", assign: "assigned", comment: "commented" };

/** A failed command in words: what the operator can do about it, by the API's answer. */
function reason(failed) {
  if (failed.status === 202) return t("feed.err.unapplied", { s: failed.waitedMs / 1000 });
  if (failed.timeoutMs) return t("feed.err.timeout", { s: failed.timeoutMs / 1000 });
  const { status, action } = failed;
  if (!status) return t("feed.err.network");
  if (status === 403 || status === 409) return t(`feed.err.${status}.${action}`);
  if (status === 404) return t("feed.err.404");
  return t("feed.err.other", { status });
}

export class Feed {
  /**
   * ``onCommand(alertId, action, body)`` is called when an operator acts on a row (ack,
   * resolve, assign, comment), ``onRelease()`` when a held feed may show what is waiting,
   * ``isResolved(alertId)`` tells a resolved alert from one filtered away, ``onDetail(alertId)``
   * opens an alert's details (its title is a button).
   */
  constructor(list, more, count, waiting, { onCommand, onRelease, regionName, isResolved, onDetail }) {
    this.list = list;
    this.more = more;
    this.count = count;
    this.waiting = waiting; // the "N new alerts" button
    this.regionName = regionName; // city or district code -> its name in the current language
    this.isResolved = isResolved;
    this.onCommand = onCommand;
    this.onDetail = onDetail;
    // Until the alerts are listed the feed says it is loading: "no alerts" then would be a
    // claim the page cannot make (an API slow to list, or not answering).
    this.listed = false;
    this.total = 0; // the alerts held, whatever the filters
    this.rows = new Map(); // alert id -> {li, stamp, alert}
    this.shown = []; // alert ids in the order of the list's rows
    // alert id -> {action, body, key, pending} | {action, body, key, status, detail, timeoutMs}
    // (status 202 with waitedMs: accepted, but its event did not come back within waitedMs)
    this.commands = new Map();
    this.mayAct = true; // false for a read-only key: no 确认, no 更多 and its tools
    this.open = null; // the alert id whose row shows its tools (解决 指派 备注)
    this.editor = null; // {id, action, form}: the open assign or comment form
    this.pointer = false;
    this.focused = false;
    list.addEventListener("click", (event) => this.clicked(event));
    list.addEventListener("submit", (event) => this.submitted(event));
    list.addEventListener("keydown", (event) => this.escape(event));
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

  /** A read-only key's rows have no buttons (GET /v1/me: the key may not act); the caller
   * renders the feed again. */
  setMayAct(mayAct) {
    if (this.mayAct === mayAct) return;
    this.mayAct = mayAct;
    if (!mayAct) {
      if (this.editor) this.closeEditor(false);
      this.open = null;
    }
  }

  /** Another key took over: the rows' commands (pending, failed, waiting for their event)
   * were the previous key's, and a 重试 under this key would be another request. */
  forgetCommands() {
    this.commands.clear();
    if (this.editor) this.closeEditor(false);
    this.open = null;
  }

  /** Rows must not move: the pointer is over the list or one of its buttons has focus. */
  get held() {
    return this.pointer || this.focused;
  }

  /**
   * An alert event came: clear its row's command once the event shows it applied (or the alert
   * was resolved, or, for an ack, acknowledged by anyone), so 提交中 or a failure goes.
   */
  settle(type, alert) {
    const command = this.commands.get(alert.alert_id);
    if (!command) return;
    if (type === EVENT_OF[command.action] || alert.status === "resolved"
        || (command.action === "ack" && alert.status !== "open")) {
      this.commands.delete(alert.alert_id);
    }
  }

  // -- acting -----------------------------------------------------------------------------------

  clicked(event) {
    const button = event.target.closest("button[data-act]");
    if (!button || button.disabled) return;
    const li = button.closest("li[data-alert-id]");
    const id = li.dataset.alertId;
    const act = button.dataset.act;
    const failed = this.failed(id);
    if (act === "detail") {
      this.onDetail(id);
    } else if (act === "more") {
      this.toggleTools(id);
    } else if (act === "cancel") {
      this.closeEditor(true);
    } else if (act === "fill") {
      const input = li.querySelector("form.edit input");
      input.value = button.dataset.value;
      input.focus();
    } else if ((act === "assign" || act === "comment") && !(failed && failed.action === act)) {
      this.openEditor(id, act);
    } else {
      // ack and resolve at once; a failed assign or comment sends the same request again.
      const body = failed && failed.action === act ? failed.body : {};
      this.onCommand(id, act, body);
    }
  }

  submitted(event) {
    event.preventDefault();
    const editor = this.editor;
    if (!editor || event.target !== editor.form) return;
    const input = editor.form.querySelector("input");
    const value = input.value.trim();
    if (!value) {
      input.focus();
      return;
    }
    const body = editor.action === "assign" ? { assignee: value } : { text: value };
    this.closeEditor(false);
    this.onCommand(editor.id, editor.action, body);
    this.focusAct(editor.id, editor.action);
  }

  /** Esc closes the open form, then the open tools, and keeps focus in the row. */
  escape(event) {
    if (event.key !== "Escape" || (!this.editor && !this.open)) return;
    event.stopPropagation(); // the page's Esc goes back from a drilled map
    event.preventDefault();
    if (this.editor) {
      this.closeEditor(true);
    } else {
      const id = this.open;
      this.open = null;
      this.redraw(id);
      this.focusAct(id, "more");
    }
  }

  toggleTools(id) {
    const was = this.open;
    if (this.editor) this.closeEditor(false);
    this.open = was === id ? null : id;
    if (was && was !== id) this.redraw(was);
    this.redraw(id);
  }

  openEditor(id, action) {
    if (this.editor) this.closeEditor(false);
    const row = this.rows.get(id);
    if (!row) return;
    this.editor = { id, action, form: this.editorForm(row.alert, action) };
    this.redraw(id);
    this.editor.form.querySelector("input").focus();
  }

  /** Close the open form; ``refocus``: put focus back on the button that opened it. */
  closeEditor(refocus) {
    const editor = this.editor;
    if (!editor) return;
    this.editor = null;
    const inside = editor.form.contains(document.activeElement);
    editor.form.remove();
    this.redraw(editor.id);
    if (refocus || inside) this.focusAct(editor.id, editor.action);
  }

  /** Focus a row's button (or the row when the button is disabled or gone). */
  focusAct(id, act) {
    const row = this.rows.get(id);
    if (!row || !row.li.isConnected) return;
    const target = row.li.querySelector(`button[data-act="${act}"]:not(:disabled)`) || row.li;
    target.focus({ preventScroll: true });
  }

  /** The inline assign or comment form (it stays the same node while its row is redrawn). */
  editorForm(alert, action) {
    const form = el("form", "edit");
    form.noValidate = true;
    const label = el("label", "");
    const input = el("input", "");
    input.type = "text";
    input.maxLength = action === "assign" ? 200 : 2000; // api/schemas.py AlertAssign, AlertComment
    input.autocomplete = "off";
    input.enterKeyHint = "send";
    if (action === "assign" && alert.assigned_to) input.value = alert.assigned_to;
    label.append(el("span", ""), input);
    form.append(label);
    if (action === "assign" && alert.departments?.length) {
      // One tap per department the alert is routed to; recorded by its Chinese name.
      const chips = el("span", "chips");
      for (const code of alert.departments) {
        const chip = el("button", "chip");
        chip.type = "button";
        chip.dataset.act = "fill";
        chip.dataset.code = code;
        chip.dataset.value = DEPARTMENTS[code]?.zh || code;
        chips.append(chip);
      }
      form.append(chips);
    }
    const submit = el("button", "go");
    submit.type = "submit";
    const cancel = el("button", "cancel");
    cancel.type = "button";
    cancel.dataset.act = "cancel";
    form.append(submit, cancel);
    this.labelForm(form, alert, action);
    return form;
  }

  /** The form's words in the current language (again when the language changes). */
  labelForm(form, alert, action) {
    const lang = getLang();
    if (form.dataset.lang === lang) return;
    form.dataset.lang = lang;
    const input = form.querySelector("input");
    form.querySelector("label span").textContent = t(`feed.${action}Label`);
    input.placeholder = t(action === "assign" ? "feed.assignHint" : "feed.commentHint");
    input.setAttribute("aria-label", `${t(`feed.${action}Label`)}: ${this.title(alert, lang)}`);
    for (const chip of form.querySelectorAll(".chip")) chip.textContent = deptName(chip.dataset.code);
    form.querySelector(".go").textContent = t("feed.submit");
    form.querySelector(".cancel").textContent = t("feed.cancel");
  }

  /** The row's failed command, if its last one failed. */
  failed(id) {
    const command = this.commands.get(id);
    return command && !command.pending ? command : null;
  }

  // -- rendering --------------------------------------------------------------------------------

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
    if (this.open && !keep.has(this.open)) this.open = null;
    if (this.editor && !keep.has(this.editor.id)) this.editor = null;
    this.shown = shown.map((a) => a.alert_id);
    if (!nodes.length) {
      const empty = document.createElement("li");
      empty.className = "empty";
      // Filtered to nothing: say the others exist, not that there are none.
      empty.textContent = !this.listed ? t("feed.loading")
        : this.total ? t("feed.emptyFiltered", { n: this.total }) : t("feed.empty");
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
        this.retire(row, id); // resolved or filtered away: stays, inert, until released
      }
    }
    this.refocus(focus);
    const onList = new Set(this.shown);
    const added = shown.reduce((n, a) => n + (onList.has(a.alert_id) ? 0 : 1), 0);
    const moved = !added && shown.some((a, i) => a.alert_id !== this.shown[i]);
    this.waiting.hidden = !added && !moved;
    if (added || moved) this.waiting.textContent = added ? tn("feed.waiting", added) : t("feed.reordered");
    this.counts(items, shown);
  }

  /** A held row whose alert left the feed: greyed and inert; a resolved one says so. */
  retire(row, id) {
    row.li.classList.add("gone");
    row.stamp = "gone";
    if (this.isResolved(id)) {
      row.li.dataset.status = "resolved";
      row.li.querySelector(".btns")?.replaceChildren(el("span", "st", t("status.resolved")));
      row.li.querySelector(".err")?.remove();
    }
    if (row.li.contains(document.activeElement)) row.li.focus({ preventScroll: true });
    for (const control of row.li.querySelectorAll("button, input")) control.disabled = true;
  }

  /** Draw one row again (its tools opened or closed), keeping focus where it was. */
  redraw(id) {
    const row = id && this.rows.get(id);
    if (!row || row.stamp === "gone") return;
    const focus = this.focusedRow();
    row.stamp = "";
    this.row(row.alert, getLang(), new Set());
    this.refocus(focus);
  }

  /** The row of ``alert``, made or refilled when the alert changed since it was drawn. */
  row(alert, lang, fresh) {
    const id = alert.alert_id;
    const command = this.commands.get(id);
    const doing = !command ? "" : command.pending ? `${command.action}:pending`
      : `${command.action}:${command.status}:${command.detail}:${command.timeoutMs || ""}`;
    const tools = this.open === id ? "tools" : "";
    const editing = this.editor?.id === id ? this.editor.action : "";
    const acts = this.mayAct ? "acts" : "";
    const stamp = `${alert.seq}|${alert.status}|${alert._at}|${lang}|${doing}|${tools}|${editing}|${acts}`;
    let row = this.rows.get(id);
    if (!row) {
      row = { li: document.createElement("li"), stamp: "", alert };
      row.li.tabIndex = -1; // focus stays on the row when its button goes (acknowledged)
      this.rows.set(id, row);
    }
    row.alert = alert;
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

  /** Which row (and which of its buttons, or its form's field) has focus, to keep it across a render. */
  focusedRow() {
    const active = document.activeElement;
    if (!active || !this.list.contains(active)) return null;
    const li = active.closest("li[data-alert-id]");
    if (!li) return null;
    return { id: li.dataset.alertId, act: active.dataset.act || null, field: active.matches("input") };
  }

  refocus(focus) {
    if (!focus) return;
    const row = this.rows.get(focus.id);
    if (!row || !row.li.isConnected) return;
    const target = (focus.field && row.li.querySelector("form.edit input:not(:disabled)"))
      || (focus.act && row.li.querySelector(`button[data-act="${focus.act}"]:not(:disabled)`))
      || row.li;
    if (document.activeElement !== target) target.focus({ preventScroll: true });
  }

  title(a, lang) {
    return (lang === "en" ? a.title_en : a.title_zh) || a.title_zh || a.alert_id;
  }

  /** A row's button: its accessible name names the alert ("确认: 济南市…"). */
  button(act, label, title, { disabled = false, className = act } = {}) {
    const button = el("button", className, label);
    button.type = "button";
    button.dataset.act = act;
    button.disabled = disabled;
    button.setAttribute("aria-label", `${label}: ${title}`);
    return button;
  }

  fill(li, a, lang) {
    li.dataset.alertId = a.alert_id;
    li.dataset.severity = a.severity;
    li.dataset.status = a.status;
    li.dataset.city = a.city_code;
    const title = this.title(a, lang);
    const place = alertPlace(a, lang, this.regionName);
    const depts = (a.departments || []).map(deptName).join(lang === "en" ? ", " : "、");
    const active = a.active_sensor_count; // still in an episode (absent from older snapshots)
    const sensors = a.sensor_count <= 1 ? (a.sensors || [])[0] || ""
      : active > 0 && active < a.sensor_count ? t("feed.sensorsActive", { n: a.sensor_count, active })
        : t("feed.sensors", { n: a.sensor_count });
    const badge = el("span", "badge", t(`sev.${a.severity}`));
    // The title opens the alert's details: the whole title, the reason, its history.
    const ttl = this.button("detail", title, title, { className: "ttl" });
    ttl.setAttribute("aria-label", `${t("feed.detail")}: ${title}`);
    ttl.title = `${title}\n${lang === "en" ? a.reason_en : a.reason_zh}`;
    const act = el("span", "act");
    const time = el("time", "", when(a._at));
    time.dateTime = new Date(a._at).toISOString();
    time.title = t("feed.changed");
    const command = this.commands.get(a.alert_id);
    const pending = command?.pending ? command.action : null;
    const failed = command && !command.pending ? command : null;
    const label = (action) => (pending === action ? t("feed.pending")
      : failed?.action === action ? t("feed.retry") : t(`feed.${action}`));
    const btns = el("span", "btns");
    if (a.status === "open" && this.mayAct) {
      btns.append(this.button("ack", label("ack"), title, { disabled: Boolean(pending) }));
    } else {
      const st = el("span", "st", t(`status.${a.status}`));
      if (a.acknowledged_by) st.title = a.acknowledged_by;
      btns.append(st);
    }
    const open = this.mayAct && this.open === a.alert_id;
    if (this.mayAct) {
      const toggle = this.button("more", t("feed.menu"), title, { className: "more" });
      toggle.setAttribute("aria-label", `${t("feed.menuLabel")}: ${title}`);
      toggle.setAttribute("aria-expanded", String(open));
      btns.append(toggle);
    }
    act.append(time, btns);
    const meta = el("span", "meta", [place, depts, sensors].filter(Boolean).join(" · "));
    const nodes = [badge, ttl, act, meta];
    if (active === 0 && a.status !== "resolved") { // the storm is over here: say so
      const calm = el("span", "calm", t("feed.recovered"));
      calm.title = t("feed.recoveredTitle");
      nodes.push(calm);
    }
    const info = this.info(a, lang);
    if (info) nodes.push(info);
    if (failed && !(failed.action === "ack" && a.status !== "open")) { // acked meanwhile: moot
      const unapplied = failed.status === 202; // accepted, not applied: not a failure
      const err = el("span", unapplied ? "err unapplied" : "err");
      err.setAttribute("role", "alert");
      err.append(el("b", "", t(`feed.${unapplied ? "unapplied" : "failed"}.${failed.action}`,
        { msg: reason(failed) })));
      if (failed.detail) err.append(el("small", "", failed.detail));
      nodes.push(err);
    }
    // The tools show while opened, and while a command of theirs is pending or failed.
    const busy = command && command.action !== "ack";
    if (this.mayAct && (open || busy)) {
      const tools = el("span", "tools");
      for (const action of ["resolve", "assign", "comment"]) {
        const editing = this.editor?.id === a.alert_id && this.editor.action === action;
        const button = this.button(action, label(action), title, { disabled: Boolean(pending) });
        if (action === "assign" || action === "comment") button.setAttribute("aria-expanded", String(editing));
        tools.append(button);
      }
      nodes.push(tools);
    }
    // The open form is never taken out of the row (that would drop its focus and its text).
    const form = this.editor?.id === a.alert_id ? this.editor.form : null;
    if (form) this.labelForm(form, a, this.editor.action);
    for (const child of [...li.children]) if (child !== form) child.remove();
    for (const node of nodes) li.insertBefore(node, form && form.parentNode === li ? form : null);
    if (form && form.parentNode !== li) li.append(form);
  }

  /** Who the alert is assigned to, and its latest comment (or how many it has). */
  info(a, lang) {
    const parts = [];
    // Who acknowledged, when a person was named (NAME@KEY_ID: the dashboard's 值班员 field, or
    // X-Operator); a bare key id says little to the next shift, and stays in the tooltip.
    const acker = a.status === "acknowledged" ? personOf(a.acknowledged_by) : "";
    if (acker) parts.push(t("feed.ackedBy", { who: acker }));
    if (a.assigned_to) parts.push(t("feed.assigned", { who: a.assigned_to }));
    if (a._comment) {
      parts.push(t("feed.note", { text: a._comment.text })
        + (a.comments > 1 ? t("feed.notesAll", { n: a.comments }) : ""));
    } else if (a.comments > 0) {
      parts.push(tn("feed.notes", a.comments));
    }
    if (!parts.length) return null;
    const info = el("span", "info", parts.join(lang === "en" ? " · " : "　"));
    info.title = a._comment ? `${info.textContent}\n— ${a._comment.by}` : info.textContent;
    return info;
  }
}

/** The person in an actor ``NAME@KEY_ID`` ("" for a bare key id). */
function personOf(actor) {
  const at = (actor || "").lastIndexOf("@");
  return at > 0 ? actor.slice(0, at) : "";
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
