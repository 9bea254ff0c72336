// Likeness bridge page: webcam -> bridge (WebRTC) -> enhanced video back, stats, identities, enrolment.
// Plain browser JavaScript, no build step. State for automated tests is mirrored on window.likeness.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = {
  token: null, config: null, pc: null, session: null, location: null,
  local: null, remote: null, viewer: null, viewerLocation: null,
  connected: false, framesDecoded: 0, fps: 0, codec: null, server: null, error: null, latencyMs: null, prevHops: null,
  // watching: one entry per participant the viewer receives, {id, stream, tile, left}
  watched: [], watchRoom: null, watchFramesDecoded: 0, warning: null, notice: null,
  // a room on another bridge that this bridge receives (and restores) for us: {id, room, how, note}
  remoteView: null,
};
window.likeness = state;

const GUIDANCE = [
  "Look straight at the camera", "Turn your head slightly to your left", "Turn your head slightly to your right",
  "Tilt your chin up a little", "Tilt your chin down a little", "Smile", "Neutral face, eyes open",
  "Move a little closer", "Move a little further away", "Look straight again",
];

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = "status" + (kind ? " " + kind : "");
  if (kind === "err") state.error = text;
}

function loadToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("likeness-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = sessionStorage.getItem("likeness-token");
}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const res = await fetch(path, Object.assign({}, opts, { headers }));
  if (res.status === 401) {
    $("auth").hidden = false;
    throw new Error("the bridge needs a valid access token");
  }
  return res;
}

async function apiJson(path, opts) {
  const res = await api(path, opts);
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) throw new Error((body && body.error) || `HTTP ${res.status}`);
  return body;
}

function iceConfig() {
  return { iceServers: (state.config && state.config.ice_servers) || [] };
}

function waitIceComplete(pc, timeoutMs = 3000) {
  // Non-trickle signalling: the offer must carry all candidates.
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); } };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs);
  });
}

function warn(text) {
  state.warning = text || null;
  $("warning").textContent = text || "";
  $("warning").hidden = !text;
}

async function loadIdentities(select) {
  // ``select``: the identity to pick (a fresh enrolment); else the URL's ?identity=, else the bridge's default
  try {
    const body = await apiJson("/api/identities");
    const sel = $("identity");
    sel.length = 1;
    for (const name of body.identities) {
      const o = document.createElement("option");
      o.value = o.textContent = name;
      sel.appendChild(o);
    }
    const want = select || params.get("identity") || body.default;
    if (want && !body.identities.includes(want)) {
      // never fall back to "no identity" silently: the call would not look like the person asked for
      sel.value = "";
      warn(`Identity "${want}" is not enrolled on this bridge, so faces are enhanced without an identity. ` +
           `Pick another one above, or enroll "${want}" below.`);
    } else {
      if (want) sel.value = want;
      if (state.warning && want && state.warning.includes(`"${want}"`)) warn(null);
    }
  } catch (e) { setStatus("identities: " + e.message, "err"); }
}

async function ensureCamera() {
  if (state.local) return state.local;
  state.local = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  showView();
  return state.local;
}

function setNotice(text) {
  state.notice = text || null;
  $("notice").textContent = text || "";
  $("notice").hidden = !text;
}

function showView() {
  // Without a camera of its own the page is a viewer: the room's participant is the main view.
  const watchOnly = !state.pc && !state.local && (state.viewer || state.watched.length > 0);
  let stream = null;
  let badge;
  const onStage = watchOnly ? state.watched.find((w) => !w.left) : null;
  if (watchOnly) {
    stream = onStage ? onStage.stream : null;
    const live = state.watched.filter((w) => !w.left).length;
    const rv = state.remoteView;
    const what = rv ? `${rv.whep} (${rv.how.startsWith("raw") ? "as received" : "restored here"})`
      : `room ${state.watchRoom}`;
    badge = onStage ? `watching ${what}` + (live > 1 ? ` (1 of ${live})` : "")
      : state.watched.length ? what : `watching ${what}: connecting…`;
    setNotice(state.watched.length && !onStage ? "participant left" : null);
  } else {
    const after = $("after").checked;
    stream = after ? (state.remote || null) : state.local;
    const ident = $("identity").value;
    badge = after ? (state.remote ? `after (enhanced${ident ? ", " + ident : ""})`
      : state.pc ? "after: waiting for bridge" : "after: start the call to see it") : "before (camera)";
    setNotice(null);
  }
  for (const w of state.watched) w.tile.hidden = w === onStage;  // not twice on the page
  const v = $("view");
  if (v.srcObject !== stream) v.srcObject = stream;
  $("badge").textContent = badge;
}

async function start() {
  $("start").disabled = true;
  try {
    setStatus("starting camera…");
    const local = await ensureCamera();
    const pc = new RTCPeerConnection(iceConfig());
    state.pc = pc;
    pc.addTransceiver(local.getVideoTracks()[0], { direction: "sendrecv", streams: [local] });
    pc.ontrack = (ev) => { state.remote = new MediaStream([ev.track]); showView(); };
    pc.onconnectionstatechange = () => {
      state.connected = pc.connectionState === "connected";
      setStatus("connection " + pc.connectionState, pc.connectionState === "failed" ? "err" : (state.connected ? "ok" : ""));
    };
    await pc.setLocalDescription(await pc.createOffer());
    await waitIceComplete(pc);
    const room = $("room").value.trim() || "main";
    const identity = $("identity").value;
    const q = new URLSearchParams({ room });
    if (identity) q.set("identity", identity);
    // consent to let this room's viewers fetch the identity (in the bridge's memory until you leave)
    if (identity && $("share").checked) q.set("share_identity", "1");
    const ans = await apiJson("/api/offer?" + q, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
    });
    await pc.setRemoteDescription({ type: "answer", sdp: ans.sdp });
    Object.assign(state, { session: ans.id, location: ans.location, codec: ans.codec });
    setStatus(`connecting (room ${ans.room}, ${ans.codec})…`);
    $("stop").disabled = false;
  } catch (e) {
    setStatus("start failed: " + e.message, "err");
    await stop();
  }
}

async function republish() {
  // The identity is chosen when the call is set up: a new one takes a new session (same camera).
  const old = { pc: state.pc, location: state.location };
  if (!old.pc) return;
  Object.assign(state, { pc: null, session: null, location: null, remote: null, connected: false });
  if (old.location) { try { await api(old.location, { method: "DELETE" }); } catch (e) { /* gone */ } }
  old.pc.close();
  await start();
}

async function stop() {
  if (state.location) { try { await api(state.location, { method: "DELETE" }); } catch (e) { /* gone */ } }
  if (state.pc) state.pc.close();
  Object.assign(state, { pc: null, session: null, location: null, remote: null, connected: false });
  await unwatch();
  showView();
  $("start").disabled = false;
  $("stop").disabled = true;
  if (!state.error) setStatus("idle");
}

async function watch() {
  // A browser offer the bridge could not parse was seen once in many runs and never reproduced
  // (the bridge logs it); a fresh offer then goes through, so try once more before giving up.
  for (let attempt = 0; attempt < 2; attempt++) {
    const res = await watchOnce();
    if (res === "ok") return;
    if (!(attempt === 0 && res.startsWith("malformed SDP"))) {
      $("room-info").textContent = res;
      return;
    }
  }
}

async function openRemoteView(whep) {
  // this bridge pulls the other bridge's room and re-serves it, restored here or as received,
  // in a room of its own, which the page then watches like any other
  const token = $("remote-token").value.trim() || null;
  const view = await apiJson("/api/view", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ whep, token, restore: $("restore-here").checked }),
  });
  state.remoteView = view;
  return view.room;
}

async function closeRemoteView() {
  const view = state.remoteView;
  state.remoteView = null;
  if (view) { try { await api(`/api/view/${encodeURIComponent(view.id)}`, { method: "DELETE" }); } catch (e) { /* gone */ } }
}

async function watchOnce() {
  await unwatch();
  const whep = $("remote-whep").value.trim();
  let room = $("room").value.trim() || "main";
  if (whep) {
    $("room-info").textContent = `connecting to ${whep}…`;
    try { room = await openRemoteView(whep); } catch (e) { return e.message; }
  }
  const pc = new RTCPeerConnection(iceConfig());
  state.viewer = pc;
  state.watchRoom = room;
  for (let i = 0; i < 4; i++) pc.addTransceiver("video", { direction: "recvonly" });
  let pubs = [];
  pc.ontrack = (ev) => {
    // video m-lines carry the room's publishers in the order X-Likeness-Publishers lists them
    const id = pubs[pc.getTransceivers().indexOf(ev.transceiver)] || null;
    const tile = document.createElement("div");
    tile.className = "tile";
    const v = document.createElement("video");
    v.autoplay = true; v.playsInline = true; v.muted = true;
    const stream = new MediaStream([ev.track]);
    v.srcObject = stream;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = `participant ${state.watched.length + 1}`;
    tile.append(v, label);
    $("others").appendChild(tile);
    state.watched.push({ id, stream, tile, left: false });
    showView();
  };
  await pc.setLocalDescription(await pc.createOffer());
  await waitIceComplete(pc);
  const q = new URLSearchParams();
  if (state.session) q.set("exclude", state.session);
  const res = await api(`/whep/${encodeURIComponent(room)}?${q}`, {
    method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp,
  });
  if (res.status !== 201) {
    const text = (await res.text()).trim() || `HTTP ${res.status}`;
    pc.close(); state.viewer = null;
    await closeRemoteView();
    return text;
  }
  state.viewerLocation = res.headers.get("Location");
  pubs = (res.headers.get("X-Likeness-Publishers") || "").split(",").filter(Boolean);
  const rv = state.remoteView;
  $("room-info").textContent = rv ? [rv.note, `${whep}: ${rv.how}`].filter(Boolean).join("; ")
    : `watching ${pubs.length} participant(s); press again to refresh`;
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  $("unwatch").disabled = false;
  if (!state.pc) setStatus(state.remoteView ? `watching ${whep}` : `watching room ${room}`, "ok");
  showView();
  return "ok";
}

async function closeViewer() {
  if (state.viewerLocation) { try { await api(state.viewerLocation, { method: "DELETE" }); } catch (e) { /* gone */ } }
  if (state.viewer) state.viewer.close();
  state.viewer = null; state.viewerLocation = null;
}

async function unwatch() {
  await closeViewer();
  await closeRemoteView();
  state.watched = [];
  $("others").replaceChildren();
  $("unwatch").disabled = true;
  showView();
}

async function checkWatched() {
  // A participant who leaves ends their stream, but a <video> keeps showing its last frame:
  // ask the bridge who still publishes and say so instead of showing a frozen picture.
  const live = state.watched.filter((w) => !w.left && w.id);
  if (!state.viewer || !live.length) return;
  let present;
  try {
    const body = await apiJson("/api/stats?room=" + encodeURIComponent(state.watchRoom));
    present = new Set(((body.rooms || {})[state.watchRoom] || []).filter((s) => s.role === "publisher").map((s) => s.id));
  } catch (e) { return; }
  let changed = false;
  for (const w of live) {
    if (present.has(w.id)) continue;
    w.left = true; changed = true;
    w.tile.classList.add("left");
    w.tile.querySelector(".label").textContent = "participant left";
    w.tile.querySelector("video").srcObject = null;
  }
  if (!changed) return;
  if (state.watched.every((w) => w.left)) {
    await closeViewer();  // nobody left to watch: free the bridge's viewer session
    $("room-info").textContent = "participant left; press Watch the room when someone publishes again";
    if (!state.pc) setStatus("participant left");
  }
  showView();
}

function row(k, v) { return `<tr><td>${k}</td><td>${v}</td></tr>`; }

function webrtcHopsMs(report) {
  // Per-frame means since the last poll: encode (out), jitter buffer and decode (back), plus one
  // round trip (the frame goes to the bridge and comes back). null until two polls are in.
  const cur = { enc: 0, encN: 0, jb: 0, jbN: 0, dec: 0, decN: 0, rtt: 0 };
  report.forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "video") { cur.enc = s.totalEncodeTime || 0; cur.encN = s.framesEncoded || 0; }
    if (s.type === "inbound-rtp" && s.kind === "video") {
      cur.jb = s.jitterBufferDelay || 0; cur.jbN = s.jitterBufferEmittedCount || 0;
      cur.dec = s.totalDecodeTime || 0; cur.decN = s.framesDecoded || 0;
    }
    if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) cur.rtt = s.currentRoundTripTime;
  });
  const prev = state.prevHops;
  state.prevHops = cur;
  if (!prev || cur.jbN <= prev.jbN || cur.encN <= prev.encN) return null;
  const per = (a, b, n, m) => (n > m ? (a - b) / (n - m) : 0);
  return 1000 * (per(cur.enc, prev.enc, cur.encN, prev.encN) + per(cur.jb, prev.jb, cur.jbN, prev.jbN) +
    per(cur.dec, prev.dec, cur.decN, prev.decN) + cur.rtt);
}

async function pollStats() {
  await checkWatched();
  const rows = [];
  if (!state.pc && state.viewer) {  // watching only: what arrives from the room
    try {
      let n = 0;
      (await state.viewer.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video" && s.framesDecoded) {
          n += 1;
          state.watchFramesDecoded = Math.max(state.watchFramesDecoded, s.framesDecoded);
          rows.push(row(`participant ${n} fps`, (s.framesPerSecond || 0).toFixed(1)));
          if (s.frameWidth) rows.push(row(`participant ${n} resolution`, `${s.frameWidth}×${s.frameHeight}`));
        }
      });
    } catch (e) { /* closing */ }
  }
  let hops = null;  // this poll's WebRTC part of the glass-to-glass estimate, in ms
  if (state.pc) {
    try {
      const report = await state.pc.getStats();
      hops = webrtcHopsMs(report);
      report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") {
          state.framesDecoded = s.framesDecoded || 0;
          state.fps = s.framesPerSecond || 0;
          rows.push(row("received fps", state.fps.toFixed(1)));
          rows.push(row("frames decoded", state.framesDecoded));
          if (s.frameWidth) rows.push(row("resolution", `${s.frameWidth}×${s.frameHeight}`));
          if (s.jitter !== undefined) rows.push(row("jitter", (s.jitter * 1000).toFixed(1) + " ms"));
        }
      });
    } catch (e) { /* closing */ }
  }
  if (state.session) {
    try {
      const body = await apiJson("/api/stats?session=" + encodeURIComponent(state.session));
      const room = Object.values(body.rooms)[0] || [];
      const me = room.find((s) => s.id === state.session);
      state.server = me || null;
      if (me && me.track) {
        const t = me.track;
        rows.push(row("codec", me.codec || "?"));
        rows.push(row("bridge fps in / out", `${t.fps_in} / ${t.fps_out}`));
        rows.push(row("enhanced (reused detail)",
          `${Math.round(t.enhanced_share * 100)} % (${Math.round((t.reused_share || 0) * 100)} %)`));
        rows.push(row("faces", t.faces));
        for (const [k, v] of Object.entries(t.stage_ms)) rows.push(row(k + " ms", v));
        rows.push(row("deadline", t.deadline_ms + " ms"));
        // glass to glass, as far as it can be known here: the WebRTC stats of both hops plus the
        // bridge's measured processing; the bridge's own decode and encode are not in it
        const processing = (t.stage_ms || {}).total;
        state.latencyMs = hops !== null && processing !== undefined ? Math.round(hops + processing) : null;
        if (state.latencyMs !== null) {
          rows.push(`<tr title="your encode + round trip + the bridge's processing + jitter buffer + decode; ` +
            `not counted: the bridge's own decode and encode, capture, display"><td>glass to glass (estimate)</td>` +
            `<td>≈ ${state.latencyMs} ms (bridge processing ${Math.round(processing)} ms)</td></tr>`);
        }
        rows.push(row("late / busy / dropped", `${t.passthrough_late} / ${t.passthrough_busy} / ${t.dropped}`));
        const errs = Object.entries(t.errors).map(([k, v]) => `${k}×${v}`).join(", ");
        rows.push(row("errors", errs || "none"));
        // one encoder feeds your preview and everyone watching you (bridge/fanout.py)
        for (const e of (body.shared_encoders || []).filter((x) => x.publisher === me.id)) {
          rows.push(row(`encoder (${e.codec.split("/")[1]})`,
            `${e.viewers} stream(s) @ ${Math.round(e.bitrate / 1000)} kbit/s, keyframes ${e.keyframes}`));
        }
      }
    } catch (e) { rows.push(row("server stats", e.message)); }
  }
  $("stats").tBodies[0].innerHTML = rows.join("") || row("", state.watched.length ? "nobody to watch" : "not connected");
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

async function enroll() {
  const name = $("enroll-name").value.trim();
  const n = Math.max(3, Math.min(32, parseInt($("enroll-count").value, 10) || 8));
  const status = $("enroll-status");
  if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$/.test(name) || name.includes("..")) { status.textContent = "enter a name (letters, digits, _ - .)"; return; }
  $("enroll").disabled = true;
  try {
    const local = await ensureCamera();
    $("after").checked = false; showView();
    const video = document.createElement("video");
    video.srcObject = local; video.muted = true; await video.play();
    const canvas = document.createElement("canvas");
    const form = new FormData();
    const thumbs = $("thumbs");
    thumbs.replaceChildren();
    const guide = $("guide");
    guide.hidden = false;
    for (let i = 0; i < n; i++) {
      guide.textContent = `${i + 1}/${n}: ${GUIDANCE[i % GUIDANCE.length]}`;
      await sleep(900);
      canvas.width = video.videoWidth; canvas.height = video.videoHeight;
      canvas.getContext("2d").drawImage(video, 0, 0);
      const blob = await new Promise((r) => canvas.toBlob(r, "image/jpeg", 0.92));
      form.append("image", blob, `frame${String(i).padStart(2, "0")}.jpg`);
      const t = document.createElement("div");
      t.className = "thumb";
      t.innerHTML = `<img alt="capture ${i + 1}"><div>uploading…</div>`;
      t.querySelector("img").src = URL.createObjectURL(blob);
      thumbs.appendChild(t);
    }
    guide.hidden = true;
    status.textContent = "enrolling…";
    const res = await api("/api/enroll?source=camera&name=" + encodeURIComponent(name), { method: "POST", body: form });
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    // verdicts first: the call's restart below can take seconds and the captures should not wait on it
    if (body) showEnrollResults(body);
    if (!res.ok) {
      status.textContent = (body && body.error) || `HTTP ${res.status}`;
    } else {
      status.textContent = `enrolled "${name}"`;
      // show what the enrolment was for: the new identity, enhanced
      await loadIdentities(name);
      $("after").checked = true;
      if (state.pc) {
        status.textContent = `enrolled "${name}"; restarting the call with it`;
        await republish();
        status.textContent = `enrolled "${name}"; the call now uses it`;
      }
      showView();
    }
  } catch (e) {
    status.textContent = "enrolment failed: " + e.message;
  } finally {
    $("guide").hidden = true;
    $("enroll").disabled = false;
  }
}

function showEnrollResults(body) {
  // The bridge merges its decode check with the enrolment's per-image verdicts (body.images).
  const cards = $("thumbs").children;
  (body.images || []).forEach((img, i) => {
    const card = cards[i];
    if (!card) return;
    let ok = img.accepted;
    let reason = img.reason || "";
    if (ok === undefined) { ok = !body.error; reason = body.error ? "not enrolled" : ""; }
    card.className = "thumb " + (ok ? "accepted" : "rejected");
    card.querySelector("div").textContent = (ok ? (img.used ? "used" : "accepted") : "rejected") +
      (reason ? ": " + reason : "");
  });
}

async function init() {
  loadToken();
  $("save-token").onclick = () => {
    sessionStorage.setItem("likeness-token", $("token").value.trim());
    location.reload();
  };
  $("start").onclick = start;
  $("stop").onclick = stop;
  $("after").onchange = showView;
  $("identity").onchange = () => { if (state.pc) republish(); else showView(); };
  $("share").onchange = () => { if (state.pc) republish(); };  // consent given or withdrawn now, not next call
  $("watch").onclick = () => watch().catch((e) => { $("room-info").textContent = e.message; });
  $("unwatch").onclick = unwatch;
  // switched while watching another bridge's room: watch it again, restored or as received
  $("restore-here").onchange = () => {
    if (state.remoteView) watch().catch((e) => { $("room-info").textContent = e.message; });
  };
  $("enroll").onclick = enroll;
  if (params.get("room")) $("room").value = params.get("room");
  try { state.config = await apiJson("/api/config"); } catch (e) { setStatus(e.message, "err"); }
  await loadIdentities();
  setInterval(pollStats, 1000);
  if (params.get("autostart") === "1") start();
  // watching needs no camera: ?watch=1 is a link for people who only view the room
  if (params.get("watch") === "1") watch().catch((e) => { $("room-info").textContent = e.message; });
}

init();
