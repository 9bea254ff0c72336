// Likeness extension, service worker: the only part that talks to the bridge.
//
// It fetches from the extension's own origin (host_permissions: 127.0.0.1 and localhost), so the
// bridge needs no CORS for web pages and Private Network Access does not apply, and it adds the
// pairing code the person typed into the popup to every request. Pages (through relay.js) may ask
// for four things only: publish their camera (offer), leave, their session's stats, and report
// their status for the popup. Pairing and the identity list are for the popup alone.
"use strict";

const DEFAULT_BRIDGE = "http://127.0.0.1:8765";
const PAIRING_HEADER = "X-Likeness-Pairing";
const SESSION_RE = /^[A-Za-z0-9_-]{1,64}$/;
// a page may hold this many bridge sessions (cameras) at once; an offer beyond closes its oldest,
// so no page can fill the bridge, and a page can only read or close its own sessions
const MAX_PER_TAB = 4;

async function tabSessions(tabId) {
  const key = `sessions:${tabId}`;
  return (await chrome.storage.session.get(key))[key] || [];
}

function setTabSessions(tabId, list) { return chrome.storage.session.set({ [`sessions:${tabId}`]: list }); }

async function settings() {
  const s = await chrome.storage.local.get(["bridge", "code", "identity", "enabled"]);
  return { bridge: s.bridge || DEFAULT_BRIDGE, code: s.code || null, identity: s.identity || null,
           enabled: s.enabled !== false };
}

function bridgeUrl(text) {
  // only this machine: the host permissions cover nothing else anyway
  let u;
  try { u = new URL(text); } catch (e) { return null; }
  if (u.protocol !== "http:" || !["127.0.0.1", "localhost"].includes(u.hostname)) return null;
  return u.origin;
}

async function request(method, path, { code, bridge, body } = {}) {
  const s = await settings();
  code = code || s.code; bridge = bridge || s.bridge;
  if (!code) return { error: "not paired: open the Likeness extension and enter the pairing code" };
  const headers = { [PAIRING_HEADER]: code };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(bridge + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                       signal: AbortSignal.timeout(5000), cache: "no-store" });
  } catch (e) {
    return { error: `bridge not reachable at ${bridge}`, unreachable: true };
  }
  let json = null;
  try { json = await res.json(); } catch (e) { json = null; }
  if (!res.ok) return { error: (json && json.error) || `HTTP ${res.status}`, status: res.status };
  return json || {};
}

async function fromPage(type, body, sender) {
  if (type === "offer") {
    const s = await settings();
    if (!s.enabled) return { error: "enhancement is switched off" };
    if (typeof body.sdp !== "string") return { error: "no SDP" };
    const tab = sender.tab.id;
    const mine = await tabSessions(tab);
    while (mine.length >= MAX_PER_TAB) await request("DELETE", "/ext/session/" + mine.shift());
    const q = s.identity ? "?identity=" + encodeURIComponent(s.identity) : "";
    const answer = await request("POST", "/ext/offer" + q, { body: { sdp: body.sdp, type: "offer" } });
    if (answer.id) mine.push(answer.id);
    await setTabSessions(tab, mine);
    return answer;
  }
  if (type === "leave" || type === "stats") {
    const mine = await tabSessions(sender.tab.id);
    if (!SESSION_RE.test(String(body.session)) || !mine.includes(body.session)) return { error: "not this page's session" };
    if (type === "leave") await setTabSessions(sender.tab.id, mine.filter((id) => id !== body.session));
    return request(type === "leave" ? "DELETE" : "GET", "/ext/session/" + body.session);
  }
  if (type === "status") {
    const key = `call:${sender.tab.id}:${sender.frameId || 0}`;
    const status = Object.assign({}, body, { url: sender.tab.url || "", at: Date.now() });
    await chrome.storage.session.set({ [key]: status });
    return { ok: true };
  }
  return { error: "unknown request" };
}

async function fromPopup(type, body) {
  if (type === "pair") {
    const bridge = bridgeUrl(body.bridge || DEFAULT_BRIDGE);
    if (!bridge) return { error: "the bridge must be http://127.0.0.1:PORT or http://localhost:PORT" };
    const code = String(body.code || "").trim();
    if (!code) return { error: "enter the pairing code `likeness serve` printed" };
    const hello = await request("GET", "/ext/hello", { code, bridge });
    if (hello.error) return hello;
    await chrome.storage.local.set({ bridge, code, paired: true });
    return hello;
  }
  if (type === "hello") return request("GET", "/ext/hello");
  if (type === "unpair") {
    await chrome.storage.local.remove(["code", "paired"]);
    return { ok: true };
  }
  return { error: "unknown request" };
}

chrome.runtime.onMessage.addListener((msg, sender, reply) => {
  if (!msg || typeof msg.type !== "string" || sender.id !== chrome.runtime.id) return false;
  // the popup is one of our own pages (also when opened as a tab); anything else is a content script
  const ours = typeof sender.url === "string" && sender.url.startsWith(chrome.runtime.getURL(""));
  if (!ours && !sender.tab) return false;
  const work = ours ? fromPopup(msg.type, msg.body || {}) : fromPage(msg.type, msg.body || {}, sender);
  work.then(reply, (e) => reply({ error: String((e && e.message) || e) }));
  return true;  // answers asynchronously
});

chrome.tabs.onRemoved.addListener(async (tabId) => {
  // a closed tab's sessions end now, not when the bridge's watchdog notices the silence
  for (const id of await tabSessions(tabId)) await request("DELETE", "/ext/session/" + id);
  const all = await chrome.storage.session.get(null);
  await chrome.storage.session.remove(Object.keys(all).filter((k) => k.startsWith(`call:${tabId}:`) ||
                                                                  k === `sessions:${tabId}`));
});
