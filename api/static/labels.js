// Where a drilled city's district labels go, so that no two overlap and every district is named:
// ECharts' labelLayout does not act on a geo component's labels (apache/echarts#20600). Pure
// geometry in the chart's pixels; map.js measures the labels and draws what is decided here.

/**
 * Place the labels of ``items`` ``[{code, rank, area, at: [x, y], full, short, tag, shortTag}]``:
 * ``at`` is the district's label point; ``full``, ``short`` (or null), ``tag`` and ``shortTag``
 * (or null: the full and the short name on a tag) are ``{w, h}``, with the gap kept around a label.
 * ``geo.inside(it, box)``: the box's centre is in ``it``'s district and the box in the chart;
 * ``geo.onLand(box)``: the box covers some district; ``geo.pointsIn(it)``: points in ``it``'s
 * district, best first, for a callout's line; ``geo.width``, ``geo.height``: the chart's;
 * ``geo.gap``: the gap included in the sizes.
 *
 * Most important first (the worse the alert, then the smaller the district). Each label, in
 * turn, is tried at its full name in its district, moving one or two labels in the way if they
 * have room elsewhere; the ones left without room then get their short name (市北 for 市北区,
 * Shibei for Shibei District) in the same way, and the ones still left a callout: the full name
 * on a tag of the district's colour, at the nearest free place outside, with a line to it, or
 * else (a phone has room for fewer tags) the short name on the tag.
 * Returns a Map code -> ``{show, offset, short, callout: {from, to} | null}``; ``show`` is false
 * only when there is no free place at all (the district then names itself on hover).
 */
export function placeLabels(items, geo) {
  const order = [...items].sort((a, b) => b.rank - a.rank || a.area - b.area);
  const shown = [];
  // geo.inside is the costly test (a point in a polygon): made only for a place free of others,
  // or for all of a label's places when room has to be made.
  const place = (list, size) => list.filter((it) => {
    setSize(it, size);
    it.spot = it.boxes.find((b) => free(b, shown) && geo.inside(it, b)) || makeRoom(it, shown, geo);
    if (it.spot) shown.push(it);
    return !it.spot;
  });
  const left = place(order, "full");
  place(left.filter((it) => it.short), "short");
  for (const it of order.filter((o) => !o.spot)) {
    setSize(it, "full"); // if hidden, its hover shows its full name in its district
    it.callout = callout(it, it.tag, shown, geo);
    if (it.callout) {
      it.spot = it.callout.box;
      shown.push(it);
    }
  }
  // A phone has room for fewer tags: the ones left try their short name on the tag.
  for (const it of order.filter((o) => !o.spot && o.shortTag)) {
    it.callout = callout(it, it.shortTag, shown, geo);
    if (it.callout) {
      it.size = "short";
      it.spot = it.callout.box;
      shown.push(it);
    }
  }
  const placed = new Map();
  for (const it of items) {
    // A hidden label still shows on hover: inside its district, over whatever is there.
    const spot = it.spot || spotsOf(it, geo)[0];
    placed.set(it.code, {
      show: Boolean(it.spot), offset: spot ? spot.offset : [0, 0], short: it.size === "short",
      callout: it.callout ? { from: it.callout.from, to: it.callout.to } : null,
    });
  }
  return placed;
}

/** Use the full or the short label: its size, and the places to try for it. */
function setSize(it, size) {
  const { w, h } = it[size];
  it.size = size;
  it.spots = null;
  it.boxes = candidates(w, h).map(([dx, dy]) => ({
    offset: [dx, dy], x: it.at[0] + dx - w / 2, y: it.at[1] + dy - h / 2, w, h,
  }));
}

/** A label's places whose centre is in its district (the costly test: made once, when needed). */
function spotsOf(it, geo) {
  it.spots ??= it.boxes.filter((b) => geo.inside(it, b));
  return it.spots;
}

function free(box, shown) {
  return !shown.some((o) => overlaps(box, o.spot));
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
export function overlaps(a, b) {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

/**
 * A place for ``it``, whose places are all taken, made by moving the one or two labels shown
 * there to other places of their own (so they stay shown, inside their districts): Yantai's
 * 芝罘区, the city's centre, lay between 福山区's and 莱山区's labels, which had room elsewhere.
 * Moves the labels it pushes aside (their ``spot``) and returns ``it``'s place, or null.
 */
function makeRoom(it, shown, geo) {
  for (const b of spotsOf(it, geo)) {
    const blockers = shown.filter((o) => overlaps(b, o.spot));
    if (blockers.length > 2) continue;
    const fixed = [b, ...shown.filter((o) => !blockers.includes(o)).map((o) => o.spot)];
    const moves = [];
    for (const other of blockers) {
      const m = spotsOf(other, geo).find((s) => !fixed.some((f) => overlaps(s, f)));
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

const CALLOUT_PX = [14, 20, 28, 38, 50, 64, 80, 100]; // the line's length, nearest first
const CALLOUT_LAND_PX = 30; // a place over the background beats one this much nearer on land

/**
 * The nearest free place for ``it``'s full label outside its district, with a line from a point
 * inside the district to the label's edge that crosses no other label; a place over no
 * district (the sea, the background) is preferred, as the tag then covers no one's colour.
 * Returns ``{box, from, to}`` or null.
 */
function callout(it, tag, shown, geo) {
  // The line starts inside the district, under no label.
  let from = null;
  for (const p of geo.pointsIn(it)) {
    if (!shown.some((o) => crosses(p, p, o.spot))) {
      from = p;
      break;
    }
  }
  if (!from) return null;
  const { w, h } = tag;
  let best = null;
  for (const gap of CALLOUT_PX) {
    if (best && gap >= best.score) break; // nothing further can beat it
    for (let k = 0; k < 16; k += 1) {
      const [ux, uy] = [Math.cos((k * Math.PI) / 8), Math.sin((k * Math.PI) / 8)];
      const [cx, cy] = [from[0] + ux * (reach(w, h, ux, uy) + gap), from[1] + uy * (reach(w, h, ux, uy) + gap)];
      const box = { x: cx - w / 2, y: cy - h / 2, w, h };
      if (box.x < 0 || box.y < 0 || box.x + w > geo.width || box.y + h > geo.height) continue;
      // The line ends at the tag's edge, inside the gap kept around it.
      const end = reach(w - 2 * geo.gap, h - 2 * geo.gap, ux, uy);
      const to = [cx - ux * end, cy - uy * end];
      if (!free(box, shown) || shown.some((o) => crosses(from, to, o.spot))) continue;
      const score = gap + (geo.onLand(box) ? CALLOUT_LAND_PX : 0);
      if (!best || score < best.score) best = { score, box: { ...box, offset: [cx - it.at[0], cy - it.at[1]] }, from, to };
    }
  }
  return best && { box: best.box, from: best.from, to: best.to };
}

/** How far from a ``w`` x ``h`` box's centre its edge is in the direction ``(ux, uy)``. */
function reach(w, h, ux, uy) {
  return Math.min(Math.abs(ux) > 1e-9 ? w / 2 / Math.abs(ux) : Infinity, Math.abs(uy) > 1e-9 ? h / 2 / Math.abs(uy) : Infinity);
}

/** Whether the segment ``p``–``q`` passes through the box (sampled every 2 px: it is short). */
function crosses(p, q, box) {
  const n = Math.max(1, Math.ceil(Math.hypot(q[0] - p[0], q[1] - p[1]) / 2));
  for (let i = 0; i <= n; i += 1) {
    const x = p[0] + ((q[0] - p[0]) * i) / n;
    const y = p[1] + ((q[1] - p[1]) * i) / n;
    if (x > box.x && x < box.x + box.w && y > box.y && y < box.y + box.h) return true;
  }
  return false;
}
