// Likeness extension, ISOLATED world: the only door between the page (page.js, MAIN world) and
// the service worker. It relays the four requests a call needs (offer, leave, stats, status) and
// tells page.js the popup's settings; the pairing code never enters the page.
"use strict";
(() => {
  const TAG = "likeness-extension";
  const KINDS = new Set(["offer", "leave", "stats", "status", "settings"]);

  function post(msg) { window.postMessage(Object.assign({ source: TAG + ":relay" }, msg), "*"); }

  async function settings() {
    const s = await chrome.storage.local.get(["enabled", "identity", "paired"]);
    return { enabled: s.enabled !== false, identity: s.identity || null, paired: !!s.paired };
  }

  window.addEventListener("message", (ev) => {
    const m = ev.data;
    if (ev.source !== window || !m || m.source !== TAG + ":page" || !KINDS.has(m.type)) return;
    const answer = (body) => post({ type: "reply", id: m.id, body });
    if (m.type === "settings") { settings().then(answer); return; }
    const failed = (e) => answer({ error: "extension: " + (e && e.message ? e.message : e) });
    try {  // throws at once when the extension was reloaded under this page
      chrome.runtime.sendMessage({ type: m.type, body: m.body || {} })
        .then((reply) => answer(reply || { error: "the extension did not answer" }), failed);
    } catch (e) { failed(e); }
  });

  chrome.storage.onChanged.addListener((_changes, area) => {
    if (area === "local") settings().then((s) => post({ type: "settings", settings: s }));
  });
})();
