// Likeness extension, MAIN world (the page's own JavaScript context, from document_start).
//
// navigator.mediaDevices.getUserMedia with video gives the page a MediaStreamTrackGenerator track
// instead of the camera. Two pumps feed it: the enhanced video coming back from `likeness serve`
// (an RTCPeerConnection made here; media over ICE on loopback) and, whenever no enhanced frame
// came for STALE_MS (bridge absent, dead, slow, or enhancement switched off), the raw camera.
// So the page's track never stops, and never changes identity: fallback is invisible to it.
// Signalling goes page.js -> relay.js (window.postMessage) -> service worker (fetch with the
// pairing code); this script never sees the code. Audio tracks are passed through untouched.
// MediaDevices.prototype.getUserMedia stays the browser's: a page that wants the raw camera on
// purpose can still call it.
"use strict";
(() => {
  const md = navigator.mediaDevices;
  if (!md || typeof md.getUserMedia !== "function" || window.__likenessCamera) return;
  if (typeof MediaStreamTrackGenerator !== "function" || typeof MediaStreamTrackProcessor !== "function") return;
  const TAG = "likeness-extension";
  const original = md.getUserMedia.bind(md);
  const STALE_MS = 400;          // no enhanced frame for this long: the page gets the raw camera
  const LATE_MS = 600;           // estimated added latency above this: raw camera too
  const FRESH_FRAMES = 3;        // enhanced frames in a row before switching back from raw
  const RETRY_MS = 1500;         // retry connecting this often while in fallback
  const STALL_MS = 2500;         // a connection whose enhanced frames stopped this long is replaced
  const FIRST_FRAME_MS = 8000;   // how long a new connection may take to its first enhanced frame

  let settings = { enabled: true, identity: null, paired: false };
  const calls = new Set();
  const pending = new Map();
  let seq = 0;

  window.addEventListener("message", (ev) => {
    const m = ev.data;
    if (ev.source !== window || !m || m.source !== TAG + ":relay") return;
    if (m.type === "reply") {
      const done = pending.get(m.id);
      if (done) { pending.delete(m.id); done(m.body); }
    } else if (m.type === "settings" && m.settings) {
      applySettings(m.settings);
    }
  });

  function ask(type, body, timeoutMs = 6000) {
    // one request to the service worker (through relay.js); resolves with its JSON or {error}
    return new Promise((resolve) => {
      const id = ++seq;
      const timer = setTimeout(() => { pending.delete(id); resolve({ error: "the extension did not answer" }); },
        timeoutMs);
      pending.set(id, (b) => { clearTimeout(timer); resolve(b || {}); });
      window.postMessage({ source: TAG + ":page", type, id, body }, "*");
    });
  }

  function applySettings(next) {
    const old = settings;
    settings = next;
    for (const c of calls) c.settingsChanged(old);
  }
  ask("settings", {}).then((s) => { if (s && !s.error) applySettings(s); });

  function iceGathered(pc, ms) {
    // non-trickle signalling: the offer carries all candidates
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, ms);
    });
  }

  class Call {
    // One camera track: the generator the page holds, the raw pump, and the bridge connection.
    constructor(camera) {
      this.camera = camera;
      this.track = new MediaStreamTrackGenerator({ kind: "video" });
      this.writer = this.track.writable.getWriter();
      this.closed = false;
      this.pc = null; this.session = null; this.identity = null; this.connecting = false;
      this.connectedAt = 0; this.nextTry = 0; this.lastEnhanced = -1e9; this.freshRun = 0;
      this.lastTs = 0; this.mode = "raw"; this.error = null; this.latencyMs = null; this.bridgeFps = null;
      this.written = 0; this.enhancedWritten = 0; this.prevWritten = 0; this.prevAt = performance.now();
      this.fps = 0; this.prevStats = null; this.switches = 0;
      this.dressTrack();
      calls.add(this);
      this.pumpRaw();
      this.timer = setInterval(() => this.tick(), 500);
      camera.addEventListener("ended", () => this.stop());
    }

    dressTrack() {
      // the page sees its camera's label, settings and constraints; stopping the track stops the camera
      const cam = this.camera, self = this;
      Object.defineProperty(this.track, "label", { get: () => cam.label, configurable: true });
      this.track.getSettings = () => cam.getSettings();
      this.track.getCapabilities = () => (cam.getCapabilities ? cam.getCapabilities() : {});
      this.track.getConstraints = () => cam.getConstraints();
      this.track.applyConstraints = (c) => cam.applyConstraints(c);
      this.track.stop = function () { self.stop(); return MediaStreamTrack.prototype.stop.call(this); };
    }

    useEnhanced() {
      return settings.enabled && this.pc !== null && this.freshRun >= FRESH_FRAMES &&
        performance.now() - this.lastEnhanced < STALE_MS &&
        !(this.latencyMs !== null && this.latencyMs > LATE_MS);
    }

    write(frame, enhanced) {
      // one clock for both sources, so the page's track never sees time go backwards
      const ts = Math.max(this.lastTs + 1, Math.round(performance.now() * 1000));
      this.lastTs = ts;
      let out;
      try { out = new VideoFrame(frame, { timestamp: ts }); } catch (e) { frame.close(); return; }
      frame.close();
      const mode = enhanced ? "enhanced" : "raw";
      if (mode !== this.mode) {  // tell the popup now, not at the next once-a-second report
        this.mode = mode; this.switches += 1;
        setTimeout(() => this.report(), 0);
      }
      this.written += 1;
      if (enhanced) this.enhancedWritten += 1;
      this.writer.write(out).then(() => out.close(), () => out.close());
    }

    async pumpRaw() {
      const reader = new MediaStreamTrackProcessor({ track: this.camera }).readable.getReader();
      this.rawReader = reader;
      try {
        while (!this.closed) {
          const { value, done } = await reader.read();
          if (done) break;
          if (performance.now() - this.lastEnhanced >= STALE_MS) this.freshRun = 0;
          if (this.useEnhanced()) value.close(); else this.write(value, false);
        }
      } catch (e) { /* the camera or the page's track went away */ }
    }

    async pumpEnhanced(track, pc) {
      const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
      try {
        while (!this.closed && this.pc === pc) {
          const { value, done } = await reader.read();  // waits while the bridge sends nothing
          if (done) break;
          if (this.pc !== pc || !settings.enabled) { value.close(); continue; }
          const now = performance.now();
          this.freshRun = now - this.lastEnhanced < STALE_MS ? this.freshRun + 1 : 1;
          this.lastEnhanced = now;
          if (this.useEnhanced()) this.write(value, true); else value.close();
        }
      } catch (e) { /* connection closed */ }
      reader.cancel().catch(() => {});
    }

    async connect() {
      this.connecting = true;
      const pc = new RTCPeerConnection({ iceServers: [] });
      this.pc = pc;
      try {
        pc.addTransceiver(this.camera, { direction: "sendrecv" });
        pc.ontrack = (ev) => { if (ev.track.kind === "video") this.pumpEnhanced(ev.track, pc); };
        await pc.setLocalDescription(await pc.createOffer());
        await iceGathered(pc, 2000);
        const ans = await ask("offer", { sdp: pc.localDescription.sdp });
        if (ans.error) throw new Error(ans.error);
        if (this.pc !== pc) {  // stopped or switched off meanwhile
          ask("leave", { session: ans.id });
          throw new Error("cancelled");
        }
        await pc.setRemoteDescription({ type: "answer", sdp: ans.sdp });
        Object.assign(this, { session: ans.id, identity: ans.identity, connectedAt: performance.now(), error: null });
      } catch (e) {
        if (this.pc === pc) this.pc = null;
        pc.close();
        this.error = String((e && e.message) || e);
        this.nextTry = performance.now() + RETRY_MS;
      } finally {
        this.connecting = false;
      }
    }

    disconnect(retryNow) {
      const pc = this.pc, sid = this.session;
      Object.assign(this, { pc: null, session: null, freshRun: 0, latencyMs: null, bridgeFps: null, prevStats: null });
      if (pc) pc.close();
      if (sid) ask("leave", { session: sid });
      this.nextTry = retryNow ? 0 : performance.now() + RETRY_MS;
    }

    settingsChanged(old) {
      if (!settings.enabled || !settings.paired) { this.disconnect(true); return; }
      if (old.identity !== settings.identity && this.pc) this.disconnect(true);  // the identity is set per connection
      this.tick();
    }

    tick() {
      if (this.closed) return;
      const now = performance.now();
      if (this.camera.readyState === "ended") { this.stop(); return; }
      if (settings.enabled && settings.paired) {
        if (this.pc && !this.connecting) {
          const st = this.pc.connectionState;
          const since = this.lastEnhanced > this.connectedAt ? now - this.lastEnhanced : now - this.connectedAt;
          const limit = this.lastEnhanced > this.connectedAt ? STALL_MS : FIRST_FRAME_MS;
          if (st === "failed" || st === "closed" || since > limit) {
            this.error = st === "failed" || st === "closed" ? "connection " + st : "the bridge stopped sending";
            this.disconnect(true);
          }
        }
        if (!this.pc && !this.connecting && now >= this.nextTry) this.connect();
      }
      if (now - this.prevAt >= 1000) {
        this.fps = (this.written - this.prevWritten) * 1000 / (now - this.prevAt);
        this.prevWritten = this.written; this.prevAt = now;
        this.measure().then(() => this.report());
      }
    }

    async measure() {
      // ≈ added latency: the WebRTC stats of both hops plus the bridge's processing time (the bridge's
      // own decode and encode are not in it); an estimate, labelled as such in the popup
      const pc = this.pc, sid = this.session;
      // measured while the enhanced video arrives, used or not: a late bridge stays in fallback
      if (!pc || !sid || performance.now() - this.lastEnhanced > STALE_MS) { this.latencyMs = null; return; }
      const cur = { enc: 0, encN: 0, jb: 0, jbN: 0, dec: 0, decN: 0, rtt: null };
      try {
        (await pc.getStats()).forEach((s) => {
          if (s.type === "outbound-rtp" && s.kind === "video") { cur.enc = s.totalEncodeTime || 0; cur.encN = s.framesEncoded || 0; }
          if (s.type === "inbound-rtp" && s.kind === "video") {
            cur.jb = s.jitterBufferDelay || 0; cur.jbN = s.jitterBufferEmittedCount || 0;
            cur.dec = s.totalDecodeTime || 0; cur.decN = s.framesDecoded || 0;
          }
          if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) cur.rtt = s.currentRoundTripTime;
        });
      } catch (e) { return; }
      const prev = this.prevStats;
      this.prevStats = cur;
      const per = (a, b, n, m) => (n - m > 0 ? (a - b) / (n - m) : 0);
      const bridge = await ask("stats", { session: sid }, 3000);
      const track = bridge && bridge.track;
      this.bridgeFps = track ? track.fps_out : null;
      if (!prev || !track) return;
      const ms = 1000 * (per(cur.enc, prev.enc, cur.encN, prev.encN) + per(cur.jb, prev.jb, cur.jbN, prev.jbN) +
        per(cur.dec, prev.dec, cur.decN, prev.decN) + (cur.rtt || 0)) + ((track.stage_ms || {}).total || 0);
      this.latencyMs = Math.round(ms);
    }

    report() {
      ask("status", {
        mode: this.closed ? "stopped" : this.mode, fps: Math.round(this.fps * 10) / 10,
        latency_ms: this.latencyMs, identity: this.identity, bridge_fps: this.bridgeFps, error: this.error,
        session: this.session, enhanced_frames: this.enhancedWritten, frames: this.written, switches: this.switches,
        enabled: settings.enabled, paired: settings.paired,
      }, 3000);
    }

    stop() {
      if (this.closed) return;
      this.closed = true;
      calls.delete(this);
      clearInterval(this.timer);
      this.disconnect(false);
      this.camera.stop();
      if (this.rawReader) this.rawReader.cancel().catch(() => {});
      this.writer.close().catch(() => {});
      this.report();
    }
  }

  async function getUserMedia(constraints) {
    const stream = await original(constraints);
    if (!constraints || !constraints.video) return stream;
    const cams = stream.getVideoTracks();
    if (!cams.length) return stream;
    const out = new MediaStream(stream.getAudioTracks());  // audio untouched
    for (const cam of cams) out.addTrack(new Call(cam).track);
    return out;
  }

  Object.defineProperty(md, "getUserMedia", { value: getUserMedia, configurable: true, writable: true });
  Object.defineProperty(window, "__likenessCamera", { value: true });
})();
