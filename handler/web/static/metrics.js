// The guide's key metrics over time, from the stored calls: TTFA p50/p95, false interruptions per
// minute, faults per stage; plain SVG line charts (no chart library).
"use strict";

const WINDOWS = { "1h": "last hour", "24h": "last 24 h", "7d": "last 7 days", "30d": "last 30 days" };
const COLORS = ["#2563eb", "#f59e0b", "#b91c1c", "#15803d", "#7c3aed", "#0891b2"];
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

function chart(title, unit, points, series) {
  const W = 520, H = 180, L = 46, R = 10, T = 10, B = 24;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  const values = series.flatMap((s) => points.map(s.value).filter((v) => v !== null && v !== undefined));
  const max = Math.max(1e-9, ...values) * 1.1;
  const x = (i) => L + ((W - L - R) * i) / Math.max(1, points.length - 1);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  for (const f of [0, 0.5, 1]) {
    root.append(svg("line", { x1: L, x2: W - R, y1: y(max * f), y2: y(max * f), stroke: "#e5e7eb" }));
    root.append(svg("text", { x: L - 4, y: y(max * f) + 4, "text-anchor": "end", "font-size": 10, fill: "#6b7280" }, (max * f).toFixed(max < 10 ? 1 : 0)));
  }
  const label = (i) => new Date(points[i].start * 1000).toLocaleString(undefined, { hour12: false, month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit" });
  for (const i of [0, points.length - 1]) {
    root.append(svg("text", { x: x(i), y: H - 6, "text-anchor": i ? "end" : "start", "font-size": 10, fill: "#6b7280" }, label(i)));
  }
  series.forEach((s, k) => {
    let d = "";
    points.forEach((p, i) => {
      const v = s.value(p);
      if (v === null || v === undefined) return;
      d += `${d ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      root.append(svg("circle", { cx: x(i), cy: y(v), r: 2.5, fill: COLORS[k % COLORS.length] }, undefined));
    });
    if (d) root.append(svg("path", { d, fill: "none", stroke: COLORS[k % COLORS.length], "stroke-width": 1.8 }));
  });
  const legend = el("div", { class: "muted" }, series.map((s, k) => el("span", { style: `color:${COLORS[k % COLORS.length]};margin-right:1em` }, `■ ${s.name}`)));
  if (!values.length) legend.append(" (no data in this window)");
  return el("div", { class: "chart" }, el("h3", {}, `${title} (${unit})`), root, legend);
}

async function load() {
  const q = new URLSearchParams(location.search);
  const since = q.get("since") || "24h";
  try {
    const doc = await api(`/api/metrics?since=${since}`);
    const pick = el("select", { onchange: (e) => { history.pushState(null, "", `/metrics?since=${e.target.value}`); load(); } });
    for (const [k, v] of Object.entries(WINDOWS)) {
      const o = el("option", { value: k }, v);
      if (k === since) o.selected = true;
      pick.append(o);
    }
    const stages = [...new Set(doc.points.flatMap((p) => Object.keys(p.faults)))].sort();
    const p = doc.points;
    document.getElementById("main").replaceChildren(
      el("div", { class: "filters" }, el("label", {}, "window", pick),
        el("span", { class: "muted" }, `${doc.calls} calls${doc.truncated ? " (the newest only)" : ""}, one point per ${doc.bucket_s / 60} min`)),
      el(
        "div",
        { class: "charts" },
        chart("Time to first audio", "ms", p, [
          { name: "p50", value: (x) => x.ttfa_p50_ms },
          { name: "p95", value: (x) => x.ttfa_p95_ms },
        ]),
        chart("False interruptions", "per minute", p, [{ name: "false interruptions/min", value: (x) => x.false_interruptions_per_min }]),
        chart("Faults per stage", "count", p, (stages.length ? stages : ["none"]).map((s) => ({ name: s, value: (x) => (x.calls ? x.faults[s] || 0 : null) }))),
        chart("Calls", "count", p, [{ name: "calls", value: (x) => x.calls }]),
      ),
    );
  } catch (e) {
    showFailure(e);
  }
}

window.addEventListener("popstate", load);
load();
