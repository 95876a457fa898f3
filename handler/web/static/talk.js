// The Talk page: join a LiveKit room with a token minted by the app (it carries the agent's
// dispatch), publish the microphone, play the agent, show both sides' transcript as it comes and
// each reply's time to first audio as heard in this page. Errors are said in words on the page.
"use strict";

const LK = window.LivekitClient;
const SETTINGS = JSON.parse(document.body.dataset.settings);
const $ = (id) => document.getElementById(id);

// Levels are RMS in dBFS over the analyser's last 2048 samples, read every TICK_MS.
const TICK_MS = 20;
const VOICE_DB = -42; // the microphone above this, and well above the room's noise, is the user speaking
const ABOVE_NOISE_DB = 15; // how far above the noise floor speech is
const FLOOR_RISE_DB = 0.02; // per tick: the floor follows a room getting louder within a minute
const AGENT_DB = -45; // the agent's track above this is audible agent audio
const USER_HANGOVER_MS = 250; // a dip shorter than this is inside the user's speech
const AGENT_GAP_MS = 700; // agent audio after this much quiet starts a new reply

// What a test (or a curious person, from the console) can read: the page's own measurements.
const stats = (window.talkStats = {
  state: "idle", // idle | connecting | waiting-agent | in-call | ended | error
  error: null,
  agentJoined: false,
  micPeakDb: -Infinity,
  agentPeakDb: -Infinity,
  agentAudioSeconds: 0, // time the agent's track was audible
  mediaTime: 0, // the agent's <audio> element's currentTime
  ttfas: [], // seconds, one per reply, in order
  lines: [], // {who, text, final}
});

let room = null;
let micTrack = null;
let audioCtx = null;
let meterTimer = null;
let agentTimer = null;
let hangingUp = false;
const segments = new Map(); // segment id -> transcript line
const waitingTtfa = []; // agent lines whose reply's TTFA is not measured yet
const spareTtfa = []; // TTFAs measured before their reply's transcript arrived

function setStatus(text) {
  $("status").textContent = text;
}

function showError(text) {
  stats.state = "error";
  stats.error = text;
  const box = $("error");
  box.textContent = text;
  box.hidden = false;
  setStatus("Call ended.");
}

function clearError() {
  stats.error = null;
  $("error").hidden = true;
}

function micErrorText(e) {
  const name = e && e.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "The microphone permission was denied: allow this page to use the microphone (the icon in the address bar) and press Call again.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return "No microphone was found: connect one and press Call again.";
  }
  if (name === "NotReadableError") {
    return "The microphone is in use by another program or could not be started.";
  }
  if (!navigator.mediaDevices) {
    return "This page cannot use a microphone here: browsers allow it only on https:// or localhost.";
  }
  return `The microphone could not be opened: ${e && e.message ? e.message : e}`;
}

// ------------------------------------------------------------------------------ audio levels

function analyser(track) {
  const source = audioCtx.createMediaStreamSource(new MediaStream([track]));
  const node = audioCtx.createAnalyser();
  node.fftSize = 2048;
  source.connect(node);
  const buf = new Float32Array(node.fftSize);
  return () => {
    node.getFloatTimeDomainData(buf);
    let sum = 0;
    for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
    const rms = Math.sqrt(sum / buf.length);
    return rms > 0 ? 20 * Math.log10(rms) : -Infinity;
  };
}

function meterWidth(db) {
  return `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
}

const levels = {
  mic: null,
  agent: null,
  agentEl: null,
  noiseFloorDb: -90, // the microphone's quietest recent level: the room without the user
  userVoiceAt: null, // last time the user was heard
  userSpokeSinceReply: false,
  agentSoundAt: null, // last time the agent was heard
};

function tick() {
  const now = performance.now();
  if (levels.mic) {
    const db = levels.mic();
    stats.micPeakDb = Math.max(stats.micPeakDb, db);
    $("mic-level").style.width = meterWidth(db);
    const floored = Math.max(db, -90); // digital silence is -Infinity
    levels.noiseFloorDb = floored < levels.noiseFloorDb ? floored : levels.noiseFloorDb + FLOOR_RISE_DB;
    if (db > Math.max(VOICE_DB, levels.noiseFloorDb + ABOVE_NOISE_DB)) {
      levels.userVoiceAt = now;
      levels.userSpokeSinceReply = true;
    }
  }
  if (levels.agent) {
    const db = levels.agent();
    stats.agentPeakDb = Math.max(stats.agentPeakDb, db);
    $("agent-level").style.width = meterWidth(db);
    if (db > AGENT_DB) {
      const quietBefore = levels.agentSoundAt === null || now - levels.agentSoundAt > AGENT_GAP_MS;
      const userDone = levels.userVoiceAt !== null && now - levels.userVoiceAt > USER_HANGOVER_MS;
      if (quietBefore && levels.userSpokeSinceReply && userDone) {
        // the end of the user's speech is the last voiced tick, not when the dip was confirmed
        replyStarted((now - levels.userVoiceAt) / 1000);
        levels.userSpokeSinceReply = false;
      }
      levels.agentSoundAt = now;
      stats.agentAudioSeconds += TICK_MS / 1000;
    }
  }
  if (levels.agentEl) stats.mediaTime = levels.agentEl.currentTime;
}

function replyStarted(ttfa) {
  stats.ttfas.push(ttfa);
  const item = document.createElement("li");
  item.textContent = `${ttfa.toFixed(2)} s`;
  $("ttfas").appendChild(item);
  const sorted = [...stats.ttfas].sort((a, b) => a - b);
  const p50 = sorted[Math.floor((sorted.length - 1) / 2)];
  $("ttfa-summary").textContent = `${sorted.length} repl${sorted.length === 1 ? "y" : "ies"}, p50 ${p50.toFixed(2)} s`;
  const line = waitingTtfa.shift();
  if (line) badge(line, ttfa);
  else spareTtfa.push(ttfa);
}

function badge(line, ttfa) {
  const b = document.createElement("span");
  b.className = "badge ttfa";
  b.textContent = `TTFA ${ttfa.toFixed(2)} s`;
  line.el.appendChild(b);
}

// ------------------------------------------------------------------------------ transcript

function lineFor(segment, who) {
  let line = segments.get(segment);
  if (line) return line;
  const el = document.createElement("div");
  el.className = `line ${who} interim`;
  const whoEl = document.createElement("span");
  whoEl.className = "who";
  whoEl.textContent = who === "agent" ? "agent" : "you";
  const text = document.createElement("span");
  text.className = "text";
  el.append(whoEl, text);
  $("transcript").appendChild(el);
  line = { el, textEl: text, stat: { who, text: "", final: false } };
  stats.lines.push(line.stat);
  segments.set(segment, line);
  if (who === "agent") {
    const ttfa = spareTtfa.shift();
    if (ttfa !== undefined) badge(line, ttfa);
    else waitingTtfa.push(line);
  }
  return line;
}

async function onTranscription(reader, participantInfo) {
  const attrs = reader.info.attributes || {};
  const who = participantInfo.identity === room.localParticipant.identity ? "user" : "agent";
  const line = lineFor(attrs["lk.segment_id"] || reader.info.id, who);
  // the agent's reply arrives as deltas in one stream; the user's interim and final transcripts
  // each arrive as a stream holding the whole text so far: either way, this stream's text is the line
  let text = "";
  for await (const chunk of reader) {
    text += chunk;
    line.textEl.textContent = text;
    line.stat.text = text;
  }
  if (attrs["lk.transcription_final"] === "true" || who === "agent") {
    line.stat.final = true;
    line.el.classList.remove("interim");
  }
}

// ------------------------------------------------------------------------------ the call

async function token() {
  let r;
  try {
    r = await fetch("/api/token", { method: "POST" });
  } catch (e) {
    throw new Error(`The voice-handler web app does not answer (${e.message}): is \`python -m handler web\` still running?`);
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `The web app answered ${r.status}.`);
  return body;
}

function resetCall() {
  // each call starts with an empty transcript and its own measurements
  Object.assign(stats, { error: null, agentJoined: false, micPeakDb: -Infinity, agentPeakDb: -Infinity });
  Object.assign(stats, { agentAudioSeconds: 0, mediaTime: 0, ttfas: [], lines: [] });
  Object.assign(levels, { noiseFloorDb: -90, userVoiceAt: null, userSpokeSinceReply: false, agentSoundAt: null });
  segments.clear();
  waitingTtfa.length = 0;
  spareTtfa.length = 0;
  document.getElementById("agent-audio")?.remove();
  $("transcript").replaceChildren();
  $("ttfas").replaceChildren();
  $("ttfa-summary").textContent = "";
}

async function call() {
  clearError();
  resetCall();
  hangingUp = false;
  $("call").disabled = true;
  stats.state = "connecting";
  setStatus("Opening the microphone…");
  let mic;
  try {
    if (!navigator.mediaDevices) throw new Error("no mediaDevices");
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    mic = micTrack = stream.getAudioTracks()[0];
  } catch (e) {
    showError(micErrorText(e));
    $("call").disabled = false;
    return;
  }
  audioCtx = audioCtx || new AudioContext();
  await audioCtx.resume();
  levels.mic = analyser(mic);
  meterTimer = setInterval(tick, TICK_MS);
  try {
    setStatus("Getting a token…");
    const join = await token();
    setStatus(`Joining room ${join.room}…`);
    room = new LK.Room({ adaptiveStream: false, dynacast: false });
    room.registerTextStreamHandler("lk.transcription", (reader, info) => {
      onTranscription(reader, info).catch((e) => console.warn("transcription stream", e));
    });
    room.on(LK.RoomEvent.TrackSubscribed, (track, _pub, participant) => {
      if (track.kind !== "audio") return;
      const el = track.attach();
      el.id = "agent-audio";
      document.body.appendChild(el);
      levels.agentEl = el;
      levels.agent = analyser(track.mediaStreamTrack);
      if (participant.isAgent) agentJoined(participant);
    });
    room.on(LK.RoomEvent.ParticipantConnected, (p) => {
      if (p.isAgent) agentJoined(p);
    });
    room.on(LK.RoomEvent.ParticipantDisconnected, (p) => {
      if (p.isAgent && !hangingUp) {
        showError("The agent left the call.");
        hangup();
      }
    });
    room.on(LK.RoomEvent.Disconnected, (reason) => {
      if (!hangingUp) {
        showError(`The call was disconnected by the LiveKit server (${LK.DisconnectReason?.[reason] ?? reason}).`);
        hangup();
      }
    });
    try {
      await room.connect(join.url, join.token, { maxRetries: 1, websocketTimeout: 5000, peerConnectionTimeout: 8000 });
    } catch (e) {
      throw new Error(`Could not join the room on the LiveKit server at ${join.url}: ${e.message || e}`);
    }
    $("hangup").disabled = false;
    for (const p of room.remoteParticipants.values()) if (p.isAgent) agentJoined(p);
    // the dispatch was made when this join created the room: the wait starts now, not after publishing
    if (!stats.agentJoined) {
      stats.state = "waiting-agent";
      setStatus(`In the room; waiting for the agent "${join.agent_name}" to join…`);
      agentTimer = setTimeout(() => {
        if (stats.agentJoined) return;
        showError(
          `No agent joined within ${SETTINGS.agent_timeout} s: no worker took the dispatch for agent "${join.agent_name}". ` +
            `Is a worker (\`python -m handler start\`) registered with worker.agent_name = "${join.agent_name}" on ${join.url}?`,
        );
        hangup();
      }, SETTINGS.agent_timeout * 1000);
    }
    await room.localParticipant.publishTrack(mic, { source: LK.Track.Source.Microphone, name: "microphone" });
  } catch (e) {
    if (hangingUp) return; // already ended, and said why (the agent never came, say)
    showError(e.message || String(e));
    await hangup();
  }
}

function agentJoined(participant) {
  if (stats.agentJoined) return;
  stats.agentJoined = true;
  stats.state = "in-call";
  clearTimeout(agentTimer);
  setStatus(`In a call with ${participant.identity}: speak.`);
}

async function hangup() {
  hangingUp = true;
  clearTimeout(agentTimer);
  $("hangup").disabled = true;
  const r = room;
  room = null;
  if (r) await r.disconnect().catch(() => {});
  clearInterval(meterTimer);
  if (micTrack) micTrack.stop(); // the browser's microphone indicator goes off with the call
  document.getElementById("agent-audio")?.remove();
  micTrack = null;
  levels.mic = null;
  levels.agent = null;
  $("mic-level").style.width = $("agent-level").style.width = "0%";
  if (stats.state !== "error") {
    stats.state = "ended";
    setStatus("Call ended. It appears on the Calls page once the worker has written its record.");
  }
  $("call").disabled = false;
}

$("call").addEventListener("click", call);
$("hangup").addEventListener("click", () => hangup());
window.addEventListener("beforeunload", () => room && room.disconnect());
