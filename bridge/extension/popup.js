// Likeness extension popup: pair with the bridge, pick the identity, switch enhancement off, and
// show each call: enhanced (connected) or raw fallback, identity, fps, estimated added latency.
"use strict";

const $ = (id) => document.getElementById(id);

function send(type, body) { return chrome.runtime.sendMessage({ type, body: body || {} }); }

function setPairStatus(text, kind) {
  $("pair-status").textContent = text;
  $("pair-status").className = kind || "hint";
}

function fillIdentities(hello, chosen) {
  const sel = $("identity");
  sel.length = 1;
  for (const name of hello.identities || []) {
    const o = document.createElement("option");
    o.value = o.textContent = name;
    sel.appendChild(o);
  }
  sel.value = chosen && (hello.identities || []).includes(chosen) ? chosen : "";
}

async function refreshPairing() {
  const s = await chrome.storage.local.get(["bridge", "paired", "identity", "enabled"]);
  if (s.bridge) $("bridge").value = s.bridge;
  $("enabled").checked = s.enabled !== false;
  if (!s.paired) { setPairStatus("not paired: type the code `likeness serve` printed"); return; }
  const hello = await send("hello");
  if (hello.error) { setPairStatus(hello.error, "err"); return; }
  setPairStatus(`paired with ${s.bridge}`, "ok");
  fillIdentities(hello, s.identity);
}

async function pair() {
  setPairStatus("pairing…");
  const hello = await send("pair", { bridge: $("bridge").value.trim(), code: $("code").value.trim() });
  if (hello.error) { setPairStatus(hello.error, "err"); return; }
  $("code").value = "";
  await refreshPairing();
}

function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }

async function showCalls() {
  const all = await chrome.storage.session.get(null);
  const now = Date.now();
  const rows = Object.entries(all).filter(([k, c]) => k.startsWith("call:") && now - c.at < 5000 && c.mode !== "stopped")
    .map(([, c]) => c);
  const body = $("calls").tBodies[0];
  body.replaceChildren();
  if (!rows.length) { body.appendChild(document.createElement("tr")).appendChild(cell("no page is using the camera")); return; }
  for (const c of rows) {
    const state = c.mode === "enhanced" ? "connected (enhanced)" : (c.enabled ? "raw fallback" : "raw (switched off)");
    const lines = [
      ["page", c.url.replace(/^https?:\/\//, "").slice(0, 40)],
      ["state", state + (c.mode !== "enhanced" && c.error ? `: ${c.error}` : "")],
      ["identity", c.mode === "enhanced" ? (c.identity || "(none)") : "-"],
      ["fps", String(c.fps)],
      ["added latency ≈", c.latency_ms === null || c.latency_ms === undefined ? "-" : `${c.latency_ms} ms`],
    ];
    for (const [k, v] of lines) {
      const tr = document.createElement("tr");
      tr.className = "call-" + k.split(" ")[0];
      tr.append(cell(k), cell(v));
      body.appendChild(tr);
    }
  }
}

$("pair").onclick = pair;
$("unpair").onclick = async () => { await send("unpair"); await refreshPairing(); };
$("enabled").onchange = () => chrome.storage.local.set({ enabled: $("enabled").checked });
$("identity").onchange = () => chrome.storage.local.set({ identity: $("identity").value || null });
refreshPairing();
showCalls();
setInterval(showCalls, 500);
