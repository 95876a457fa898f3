// The Calls list: filters, a page of calls newest first, paging; a row opens the call's page.
"use strict";

const FILTERS = ["env", "end_reason", "source", "since", "faults"];
const SINCE = { "": "any time", "1h": "last hour", "24h": "last 24 h", "7d": "last 7 days", "30d": "last 30 days" };

function query() {
  return new URLSearchParams(location.search);
}

function go(changes) {
  const q = query();
  for (const [k, v] of Object.entries(changes)) {
    if (v === "" || v === null || v === false) q.delete(k);
    else q.set(k, v);
  }
  if (!("page" in changes)) q.delete("page");
  history.pushState(null, "", `/calls${q.toString() ? "?" + q : ""}`);
  load();
}

function select(name, label, values, current) {
  const s = el("select", { name, onchange: (e) => go({ [name]: e.target.value }) });
  for (const [value, text] of values) {
    const o = el("option", { value }, text);
    if (value === (current || "")) o.selected = true;
    s.append(o);
  }
  return el("label", {}, label, s);
}

function filters(doc, q) {
  const choice = (key, label, all) =>
    select(key, label, [["", all], ...doc.choices[key].map((v) => [v, v])], q.get(key));
  const faults = el("input", { type: "checkbox", name: "faults", onchange: (e) => go({ faults: e.target.checked ? "1" : "" }) });
  faults.checked = q.get("faults") === "1";
  return el(
    "div",
    { class: "filters" },
    choice("env", "environment", "all"),
    choice("end_reason", "why it ended", "any"),
    choice("source", "source", "any"),
    select("since", "started", Object.entries(SINCE), q.get("since")),
    el("label", {}, "with faults", faults),
  );
}

function table(doc) {
  const head = el(
    "tr",
    {},
    ["time", "environment", "source", "turns", "TTFA p50 (ms)", "faults", "why it ended", "duration (s)"].map((h, i) =>
      el("th", { class: [3, 4, 5, 7].includes(i) ? "num" : "" }, h),
    ),
  );
  const rows = doc.calls.map((c) =>
    el(
      "tr",
      { class: "row", "data-id": c.id, onclick: () => (location.href = `/calls/${c.id}`) },
      el("td", {}, el("a", { href: `/calls/${c.id}` }, when(c.started_at))),
      el("td", {}, c.env || "-"),
      el("td", {}, c.source || "-"),
      el("td", { class: "num turns" }, c.turns),
      el("td", { class: "num" }, ms(c.ttfa_p50_ms)),
      el("td", { class: `num ${c.fault_count ? "fault" : ""}`, title: c.faults }, c.fault_count),
      el("td", {}, c.end_reason || "-"),
      el("td", { class: "num" }, c.duration_s === null ? "-" : c.duration_s.toFixed(1)),
    ),
  );
  return el("table", {}, el("thead", {}, head), el("tbody", {}, rows));
}

function pager(doc) {
  return el(
    "div",
    { class: "pager" },
    el("button", { class: "secondary", ...(doc.page <= 1 ? { disabled: "" } : {}), onclick: () => go({ page: doc.page - 1 }) }, "Newer"),
    el("span", { id: "page-info" }, `page ${doc.page} of ${doc.pages} (${doc.total} calls)`),
    el("button", { class: "secondary", ...(doc.page >= doc.pages ? { disabled: "" } : {}), onclick: () => go({ page: doc.page + 1 }) }, "Older"),
  );
}

async function load() {
  const q = query();
  const params = new URLSearchParams();
  for (const k of [...FILTERS, "page"]) if (q.get(k)) params.set(k, q.get(k));
  const t0 = performance.now();
  try {
    const doc = await api(`/api/calls?${params}`);
    const parts = [filters(doc, q)];
    if (doc.total === 0) {
      parts.push(el("p", { class: "muted" }, "No calls yet. Talk to the agent on the Talk page, or run `python -m handler simulate`: each call leaves a record."));
    } else {
      parts.push(table(doc), pager(doc));
    }
    document.getElementById("main").replaceChildren(...parts);
    window.callsListMs = performance.now() - t0; // what measurements/web_ttfa.py reads
  } catch (e) {
    showFailure(e);
  }
}

window.addEventListener("popstate", load);
load();
