// Words of the dashboard in 中文 (the default) and English; the choice is kept in localStorage.

const STORE = "cityagent.lang";

const WORDS = {
  zh: {
    "app.title": "山东省城市运行一屏观",
    "app.subtitle": "城市智能体 · 一屏观全省",
    "clock.asof": "数据截至",
    "clock.nodata": "等待数据",
    "lang.toggle": "EN",
    "key.change": "更换密钥",
    "key.title": "输入访问密钥",
    "key.hint": "运维、管理员或只读（大屏）密钥，仅保存在本浏览器会话中（关闭标签页即清除）。",
    "key.placeholder": "API 密钥",
    "key.placeholderKeep": "API 密钥（留空则沿用当前密钥）",
    "key.submit": "进入",
    "key.operator": "值班员姓名（可选）",
    "key.operatorPlaceholder": "如：张三",
    "key.operatorHint": "填写后，确认、解除、指派和备注都记在此姓名下（否则只记密钥）。",
    "key.checking": "正在验证…",
    "key.empty": "请输入密钥。",
    "key.invalid": "密钥无效，请重新输入。",
    "key.forbidden": "此密钥无权查看告警（需要只读、运维或管理员密钥）。",
    "key.unreachable": "无法连接服务，请稍后重试。",
    "key.expired": "密钥已失效，请重新输入。",
    "live.connecting": "连接中",
    "live.live": "实时",
    "live.retry": "重连中",
    "live.off": "已停止",
    "situation.stale": "态势数据已过时 · 截至 {time}",
    "situation.failed": "态势数据获取失败",
    "key.cancel": "取消",
    "me.readonly": "只读",
    "me.readonlyTitle": "此密钥只能查看，不能确认、处置或备注告警",
    "kpi.scoped": "{names}态势（本密钥范围）",
    "scope.label": "本密钥可查看：{names}",
    "scope.many": "{names} 等 {n} 市",
    "scope.none": "无城市",
    "scope.outside": "无权查看（不在本密钥范围内）",
    "feed.cityFilter": "按城市筛选告警",
    "feed.deptFilter": "按部门筛选告警",
    "feed.waiting": "{n} 条新告警",
    "feed.reordered": "列表有更新",
    "feed.changed": "最近变化时间",
    "feed.retry": "重试",
    "feed.err.network": "无法连接服务",
    "feed.err.timeout": "服务无响应（{s} 秒内未答复）",
    "feed.err.403.ack": "此密钥无权确认该告警",
    "feed.err.403.resolve": "此密钥无权解决该告警",
    "feed.err.403.assign": "此密钥无权指派该告警",
    "feed.err.403.comment": "此密钥无权为该告警添加备注",
    "feed.err.404": "告警不存在或已不在本密钥范围内",
    "feed.err.409.ack": "告警状态已变化（可能已被他人确认或已解除）",
    "feed.err.409.resolve": "告警已解除（可能已被他人解决）",
    "feed.err.409.assign": "告警已解除，不能再指派",
    "feed.err.409.comment": "同一请求仍在处理中，请稍后重试",
    "feed.err.other": "服务出错（HTTP {status}）",
    "feed.err.unapplied": "{s} 秒内未见处理结果，告警服务可能繁忙或已停止",
    "kpi.title": "全省态势",
    "kpi.city": "态势",
    "kpi.sensors": "在线传感器",
    "kpi.silent": "静默",
    "kpi.rate": "读数/秒",
    "kpi.alerts": "未处理告警",
    "kpi.acked": "已确认",
    "kpi.traffic": "交通运行指数",
    "kpi.gauges": "超警戒水位站",
    "kpi.guaranteed": "超保证",
    "kpi.pressure": "管网压力达标率",
    "kpi.unavailable": "态势接口暂不可用，仅显示告警数据",
    "map.title": "山东省",
    "map.back": "返回全省",
    "map.none": "无告警",
    "map.outside": "无权查看",
    "map.open": "未处理",
    "map.acked": "已确认",
    "map.worst": "最高级别",
    "map.sensors": "传感器",
    "trend.title": "各市趋势",
    "trend.alerts": "告警",
    "trend.rate": "读数/秒",
    "trend.traffic": "交通指数",
    "feed.title": "实时告警",
    "feed.allCities": "全部城市",
    "feed.allDepts": "全部部门",
    "feed.empty": "暂无告警",
    "feed.more": "另有 {n} 条未显示",
    "feed.count": "{n} 条",
    "feed.ack": "确认",
    "feed.resolve": "解决",
    "feed.assign": "指派",
    "feed.comment": "备注",
    "feed.menu": "更多",
    "feed.menuLabel": "更多操作",
    "feed.pending": "提交中",
    "feed.acked": "已确认",
    "feed.failed.ack": "确认失败：{msg}",
    "feed.failed.resolve": "解决失败：{msg}",
    "feed.failed.assign": "指派失败：{msg}",
    "feed.failed.comment": "备注失败：{msg}",
    "feed.unapplied.ack": "确认已受理，尚未生效：{msg}",
    "feed.unapplied.resolve": "解决已受理，尚未生效：{msg}",
    "feed.unapplied.assign": "指派已受理，尚未生效：{msg}",
    "feed.unapplied.comment": "备注已受理，尚未生效：{msg}",
    "feed.assignLabel": "指派给",
    "feed.assignHint": "部门或班组",
    "feed.commentLabel": "备注",
    "feed.commentHint": "备注内容",
    "feed.submit": "提交",
    "feed.cancel": "取消",
    "feed.ackedBy": "确认：{who}",
    "feed.assigned": "指派：{who}",
    "feed.note": "备注：{text}",
    "feed.notesAll": "（共 {n} 条）",
    "feed.notes": "备注 {n} 条",
    "feed.sensors": "{n} 个传感器",
    "status.open": "未处理",
    "status.acknowledged": "已确认",
    "status.resolved": "已解除",
    "sev.blue": "蓝",
    "sev.yellow": "黄",
    "sev.orange": "橙",
    "sev.red": "红",
    "sev.none": "无",
    "feed.loading": "正在加载告警…",
  },
  en: {
    "app.title": "Shandong City Operations",
    "app.subtitle": "CityAgent · the province on one screen",
    "clock.asof": "Data as of",
    "clock.nodata": "waiting for data",
    "lang.toggle": "中文",
    "key.change": "Change key",
    "key.title": "Enter your API key",
    "key.hint": "An operator, admin or read-only (viewer) key. It is kept for this browser session only (closing the tab forgets it).",
    "key.placeholder": "API key",
    "key.placeholderKeep": "API key (leave empty to keep the current one)",
    "key.submit": "Enter",
    "key.operator": "Your name (optional)",
    "key.operatorPlaceholder": "e.g. Zhang San",
    "key.operatorHint": "Acknowledgements, resolutions, assignments and notes are recorded under this name (otherwise under the key only).",
    "key.checking": "Checking…",
    "key.empty": "Please enter a key.",
    "key.invalid": "That key is not valid; please enter it again.",
    "key.forbidden": "This key may not read alerts (it needs a viewer, operator or admin key).",
    "key.unreachable": "The service cannot be reached; try again shortly.",
    "key.expired": "The key is no longer valid; please enter it again.",
    "live.connecting": "connecting",
    "live.live": "live",
    "live.retry": "reconnecting",
    "live.off": "stopped",
    "situation.stale": "Situation data stale · as of {time}",
    "situation.failed": "Situation data unavailable",
    "key.cancel": "Cancel",
    "me.readonly": "Read-only",
    "me.readonlyTitle": "This key may view only: it cannot acknowledge, handle or comment on alerts",
    "kpi.scoped": "{names} (this key's scope)",
    "scope.label": "This key covers: {names}",
    "scope.many": "{names} and others, {n} cities",
    "scope.none": "no city",
    "scope.outside": "Outside this key's scope",
    "feed.cityFilter": "Filter alerts by city",
    "feed.deptFilter": "Filter alerts by department",
    "feed.waiting": "{n} new alerts",
    "feed.reordered": "List updated",
    "feed.changed": "Last changed",
    "feed.retry": "Retry",
    "feed.err.network": "the service cannot be reached",
    "feed.err.timeout": "the service did not answer (no reply within {s} s)",
    "feed.err.403.ack": "this key may not acknowledge it",
    "feed.err.403.resolve": "this key may not resolve it",
    "feed.err.403.assign": "this key may not assign it",
    "feed.err.403.comment": "this key may not comment on it",
    "feed.err.404": "no such alert (or not in this key's scope)",
    "feed.err.409.ack": "the alert changed meanwhile (acknowledged by someone else, or resolved)",
    "feed.err.409.resolve": "the alert is already resolved (perhaps by someone else)",
    "feed.err.409.assign": "the alert is resolved and can no longer be assigned",
    "feed.err.409.comment": "the same request is still being processed; retry shortly",
    "feed.err.other": "service error (HTTP {status})",
    "feed.err.unapplied": "no result within {s} s; the alerting service may be busy or down",
    "kpi.title": "Province",
    "kpi.city": "",
    "kpi.sensors": "Sensors online",
    "kpi.silent": "silent",
    "kpi.rate": "Readings/s",
    "kpi.alerts": "Open alerts",
    "kpi.acked": "acknowledged",
    "kpi.traffic": "Traffic index",
    "kpi.gauges": "Gauges over warning",
    "kpi.guaranteed": "over guaranteed",
    "kpi.pressure": "Pressure compliance",
    "kpi.unavailable": "The situation service is not available: alert figures only",
    "map.title": "Shandong",
    "map.back": "Back to province",
    "map.none": "no alerts",
    "map.outside": "outside this key's scope",
    "map.open": "open",
    "map.acked": "acknowledged",
    "map.worst": "worst",
    "map.sensors": "sensors",
    "trend.title": "City trends",
    "trend.alerts": "Alerts",
    "trend.rate": "Readings/s",
    "trend.traffic": "Traffic",
    "feed.title": "Live alerts",
    "feed.allCities": "All cities",
    "feed.allDepts": "All departments",
    "feed.empty": "No alerts",
    "feed.more": "{n} more not shown",
    "feed.count": "{n}",
    "feed.ack": "Ack",
    "feed.resolve": "Resolve",
    "feed.assign": "Assign",
    "feed.comment": "Comment",
    "feed.menu": "More",
    "feed.menuLabel": "More actions",
    "feed.pending": "Sending",
    "feed.acked": "Acknowledged",
    "feed.failed.ack": "Ack failed: {msg}",
    "feed.failed.resolve": "Resolve failed: {msg}",
    "feed.failed.assign": "Assign failed: {msg}",
    "feed.failed.comment": "Comment failed: {msg}",
    "feed.unapplied.ack": "Ack accepted but not applied yet: {msg}",
    "feed.unapplied.resolve": "Resolve accepted but not applied yet: {msg}",
    "feed.unapplied.assign": "Assignment accepted but not applied yet: {msg}",
    "feed.unapplied.comment": "Comment accepted but not applied yet: {msg}",
    "feed.assignLabel": "Assign to",
    "feed.assignHint": "department or crew",
    "feed.commentLabel": "Comment",
    "feed.commentHint": "your comment",
    "feed.submit": "Send",
    "feed.cancel": "Cancel",
    "feed.ackedBy": "Acknowledged by {who}",
    "feed.assigned": "Assigned: {who}",
    "feed.note": "Note: {text}",
    "feed.notesAll": " ({n} in all)",
    "feed.notes": "{n} notes",
    "feed.sensors": "{n} sensors",
    "status.open": "open",
    "status.acknowledged": "acknowledged",
    "status.resolved": "resolved",
    "sev.blue": "Blue",
    "sev.yellow": "Yellow",
    "sev.orange": "Orange",
    "sev.red": "Red",
    "sev.none": "none",
    "feed.loading": "Loading alerts…",
  },
};

/** Department codes of routing.toml with their names. */
export const DEPARTMENTS = {
  water: { zh: "水务局", en: "Water Affairs" },
  transport: { zh: "交通运输局", en: "Transport" },
  city_management: { zh: "城市管理局", en: "City Management" },
  emergency: { zh: "应急管理局", en: "Emergency Management" },
  education: { zh: "教育局", en: "Education" },
  health: { zh: "卫生健康委员会", en: "Health Commission" },
  city_command: { zh: "市指挥中心", en: "City Command" },
  province_command: { zh: "省指挥中心", en: "Provincial Command" },
};

let lang = readLang();
const listeners = new Set();

function readLang() {
  try {
    const saved = localStorage.getItem(STORE);
    if (saved === "zh" || saved === "en") return saved;
  } catch { /* storage blocked: default */ }
  return "zh";
}

export function getLang() {
  return lang;
}

export function setLang(next) {
  if (next !== "zh" && next !== "en") return;
  lang = next;
  try { localStorage.setItem(STORE, next); } catch { /* storage blocked */ }
  document.documentElement.lang = next === "zh" ? "zh-CN" : "en";
  applyI18n(document);
  for (const fn of listeners) fn(next);
}

export function onLangChange(fn) {
  listeners.add(fn);
}

/** The word for ``key`` in the current language, with ``{name}`` placeholders filled. */
export function t(key, vars) {
  let text = WORDS[lang][key] ?? WORDS.zh[key] ?? key;
  if (vars) for (const [k, v] of Object.entries(vars)) text = text.replace(`{${k}}`, String(v));
  return text;
}

export function deptName(code) {
  const d = DEPARTMENTS[code];
  return d ? d[lang] : code;
}

/** Fill every ``[data-i18n]`` element's text and ``[data-i18n-title|placeholder|aria-label]`` attributes. */
export function applyI18n(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  }
}
