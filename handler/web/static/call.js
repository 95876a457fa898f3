// One call: its summary, then each turn: what was said both ways, a waterfall of where the reply's
// time went (from the end of the user's speech), and the faults that happened in that turn.
"use strict";

const callId = decodeURIComponent(location.pathname.split("/").pop());

// [label, stage whose faults colour the row, start(turn), end(turn)], seconds from the end of speech
const STEPS = [
  ["end of speech", null, () => 0, () => 0],
  ["transcript", "stt", () => 0, (t) => t.transcription_delay],
  ["end of turn", "turn", () => 0, (t) => t.end_of_turn_delay],
  ["LLM first token", "llm", (t) => t.end_of_turn_delay, (t) => add(t.end_of_turn_delay, t.llm_ttft)],
  // the TTS starts on the LLM's first sentence, not its first token
  ["LLM first sentence", "llm", (t) => t.end_of_turn_delay, (t) => add(t.end_of_turn_delay, t.llm_ttfs)],
  ["TTS first byte", "tts", (t) => add(t.end_of_turn_delay, t.llm_ttfs), (t) => add(t.end_of_turn_delay, t.llm_ttfs, t.tts_ttfb)],
  ["first audio", null, () => 0, (t) => t.ttfa],
];

function add(...xs) {
  return xs.some((x) => x === null || x === undefined) ? null : xs.reduce((a, b) => a + b, 0);
}

function waterfall(turn, scale) {
  const grid = el("div", { class: "wf" });
  for (const [label, stage, start, end] of STEPS) {
    const s = start(turn);
    const e = end(turn);
    const bad = stage && turn.faults && turn.faults[stage];
    const bar = el("div", { class: "bar" });
    if (s !== null && e !== null) {
      const left = (100 * s) / scale;
      const width = Math.max(0.6, (100 * (e - s)) / scale);
      bar.append(el("i", { style: `left:${left}%;width:${width}%;${bad ? "background:var(--bad)" : ""}` }));
    }
    grid.append(
      el("span", { class: bad ? "fault" : "" }, label),
      bar,
      el("span", { class: "num" }, e === null ? "-" : `${secondsMs(e - (label === "first audio" ? 0 : s))} ms`),
    );
  }
  return grid;
}

function said(lines) {
  return lines.map((m) =>
    el(
      "div",
      { class: `line ${m.role}` },
      el("span", { class: "who" }, m.role === "agent" ? "agent" : "caller"),
      el("span", { class: "text" }, m.text || ""),
      m.interrupted ? el("span", { class: "badge" }, "cut short: as heard") : null,
    ),
  );
}

function render(r) {
  const transcript = r.transcript || [];
  const byTurn = new Map();
  for (const m of transcript) {
    if (!byTurn.has(m.turn)) byTurn.set(m.turn, []);
    byTurn.get(m.turn).push(m);
  }
  const ends = r.turns.flatMap((t) => STEPS.map(([, , , end]) => end(t)).filter((v) => v !== null));
  const scale = Math.max(0.5, ...ends) * 1.05;
  const s = r.summary || {};
  const parts = [
    el("h2", {}, `Call ${when(r.started_at)}`),
    el(
      "p",
      { class: "muted" },
      `${r.env} · ${r.source}${r.scenario ? " " + r.scenario : ""} · ${r.duration_s} s · ended: ${r.end_reason}` +
        (r.end_detail ? ` (${r.end_detail})` : "") +
        ` · TTFA p50 ${secondsMs(s.ttfa_p50)} ms, p95 ${secondsMs(s.ttfa_p95)} ms · ` +
        Object.entries(r.providers || {})
          .filter(([, v]) => v && !Array.isArray(v))
          .map(([k, v]) => `${k} ${v}`)
          .join(", "),
    ),
  ];
  if (Object.keys(r.faults || {}).length) parts.push(el("p", { class: "fault" }, `faults: ${faultsText(r.faults)}`));
  if (r.transcript === null) parts.push(el("p", { class: "muted" }, "Transcripts are off for this call (records.transcripts = false): timings only."));
  if (byTurn.has(0)) parts.push(el("div", { class: "turn" }, el("h4", {}, "greeting"), said(byTurn.get(0))));
  for (const t of r.turns) {
    const card = el(
      "div",
      { class: "turn", id: `turn-${t.n}` },
      el("h4", {}, `turn ${t.n}`, t.interrupted ? el("span", { class: "badge" }, "interrupted") : null,
        t.false_interruptions ? el("span", { class: "badge fault" }, `${t.false_interruptions} false interruption(s)`) : null),
      said(byTurn.get(t.n) || []),
      waterfall(t, scale),
    );
    if (Object.keys(t.faults || {}).length) card.append(el("p", { class: "fault" }, `faults in this turn: ${faultsText(t.faults)}`));
    parts.push(card);
  }
  if (!r.turns.length) parts.push(el("p", { class: "muted" }, "No turns: the caller never finished a sentence."));
  document.getElementById("main").replaceChildren(...parts);
}

api(`/api/calls/${encodeURIComponent(callId)}`).then(render, showFailure);
