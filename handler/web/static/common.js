// Helpers the Calls pages share: building elements, formatting, fetching the JSON API.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function ms(v) {
  return v === null || v === undefined ? "-" : `${Math.round(v)}`;
}

function secondsMs(v) {
  return v === null || v === undefined ? "-" : `${Math.round(v * 1000)}`;
}

function when(iso) {
  if (!iso) return "-";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { hour12: false });
}

function faultsText(faults) {
  return Object.entries(faults || {})
    .map(([stage, kinds]) => Object.entries(kinds).map(([k, n]) => `${stage} ${k} ${n}`).join(", "))
    .join("; ");
}

async function api(path) {
  const r = await fetch(path);
  const body = await r.json().catch(() => ({ error: `the app answered ${r.status}` }));
  if (!r.ok) throw new Error(body.error || `the app answered ${r.status}`);
  return body;
}

function showFailure(e) {
  document.getElementById("main").replaceChildren(el("div", { class: "error" }, e.message || String(e)));
}
