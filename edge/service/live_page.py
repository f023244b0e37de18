"""The live view's page: the newest annotated frame, refreshed at the browser's pace (each
request asks for a frame newer than the one shown, so nothing is sent twice), the focus score
large enough to turn a knob by, and the run's figures, warnings and camera settings.

Escaping: the only text the server puts in the page is the title, through html.escape; every
figure, warning and setting is set by the script with textContent, which a browser never reads
as markup. So a file name or message holding "<" shows as written.
"""

from __future__ import annotations

import html

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>metascope live: $TITLE</title>
<style>
body { margin: 0; font: 14px system-ui, sans-serif; background: #161616; color: #e8e8e8;
       display: flex; flex-wrap: wrap; }
#view { flex: 1 1 640px; padding: 8px; }
#view img { max-width: 100%; background: #000; display: block; }
#side { flex: 0 1 380px; padding: 8px 14px; }
h1 { font-size: 16px; font-weight: 600; overflow-wrap: anywhere; }
h2 { font-size: 14px; margin: 14px 0 4px; color: #9ab; }
table { border-collapse: collapse; }
td { padding: 2px 8px 2px 0; vertical-align: top; overflow-wrap: anywhere; }
td:first-child { color: #9ab; white-space: nowrap; }
#focus { font-size: 44px; font-weight: 700; }
#warnings li { color: #fc6; overflow-wrap: anywhere; }
#connection { color: #f77; }
</style>
</head>
<body>
<div id="view">
<img id="frame" alt="the newest frame, annotated" src="/frame.jpg">
<div>frame <span id="frame-number">-</span>; <span id="shown">0</span> shown here,
<span id="dropped">0</span> skipped (the rig made them faster than this page took them)</div>
<div id="connection"></div>
</div>
<div id="side">
<h1>$TITLE</h1>
<div>focus score <span id="focus">-</span></div>
<div>best since this page opened: <span id="focus-best">-</span> (higher is sharper)</div>
<h2>run</h2><table id="figures"></table>
<h2>warnings</h2><ul id="warnings"></ul>
<h2>camera</h2><table id="camera"></table>
</div>
<script>
"use strict";
const client = Math.random().toString(36).slice(2, 12);
const element = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
let after = 0, shown = 0, best = 0;

async function showFrames() {
  const image = element("frame");
  for (;;) {
    try {
      const reply = await fetch(`/frame.jpg?after=${after}&client=${client}`, {cache: "no-store"});
      if (!reply.ok) { await sleep(500); continue; }
      after = Number(reply.headers.get("X-Frame")) || after;
      const url = URL.createObjectURL(await reply.blob());
      const old = image.src;
      await new Promise((done) => { image.onload = image.onerror = done; image.src = url; });
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      shown += 1;
      element("shown").textContent = shown;
      element("frame-number").textContent = after;
      element("connection").textContent = "";
      await sleep(40);  // a breath between frames (the rig paces each client at its own rate anyway)
    } catch (error) {
      element("connection").textContent = "no answer from the rig: trying again";
      await sleep(1000);
    }
  }
}

function rows(table, entries) {
  table.replaceChildren();
  for (const [name, value] of entries) {
    const row = table.insertRow();
    row.insertCell().textContent = name;
    row.insertCell().textContent = typeof value === "object" && value !== null ? JSON.stringify(value) : String(value);
  }
}

const fixed = (value, digits) => (typeof value === "number" ? value.toFixed(digits) : "-");

function showStatus(status) {
  const run = status.run || {}, frame = status.frame || {}, counts = run.counters || {};
  const total = (run.latency_ms || {}).total;
  if (typeof frame.focus === "number") {
    best = Math.max(best, frame.focus);
    element("focus").textContent = fixed(frame.focus, 0);
    element("focus-best").textContent = fixed(best, 0);
  }
  const entries = [
    ["state", run.state || "-"], ["source", run.source || "-"], ["model", run.model || "-"],
    ["frames a second", fixed(run.fps, 1)],
    ["cells in this frame",
     `${frame.detections ?? "-"} (${frame.positives ?? "-"} positive, ${frame.clusters ?? "-"} clusters)`],
    ["views in this frame", frame.views ?? "-"],
    ["cells this run", `${counts.cells ?? "-"} (${counts.open_cells ?? "-"} followed now)`],
    ["views this run", counts.views ?? "-"],
    ["positives", `${counts.positives ?? "-"} of ${counts.closed_cells ?? "-"} closed cells`],
    ["budget", run.budget_ms === undefined ? "-"
     : `${fixed(run.budget_ms, 0)} ms a frame; ${counts.over_budget ?? 0} frames over`],
    ["time a frame", total ? `${fixed(total.p50_ms, 1)} ms median, ${fixed(total.p99_ms, 1)} ms p99` : "-"],
    ["mean grey", fixed(frame.mean_grey, 1)], ["clipped", `${fixed(100 * frame.clipped, 2)} %`],
    ["frame size", frame.width ? `${frame.width} x ${frame.height}` : "-"],
    ["dropped by the loop", counts.dropped ?? "-"],
  ];
  rows(element("figures"), entries);
  const warnings = element("warnings");
  warnings.replaceChildren();
  for (const warning of status.warnings || []) {
    const item = document.createElement("li");
    item.textContent = `${warning.at} ${warning.message}`;
    warnings.appendChild(item);
  }
  const camera = run.camera || {};
  const settings = {...(camera.applied || {})};
  if (camera.requested) settings.requested = camera.requested;
  rows(element("camera"), Object.entries(settings));
  const me = ((status.live || {}).clients || []).find((entry) => entry.id === client);
  if (me) element("dropped").textContent = me.frames_dropped;
}

async function showStatuses() {
  for (;;) {
    try {
      const reply = await fetch("/status.json", {cache: "no-store"});
      if (reply.ok) showStatus(await reply.json());
    } catch (error) {
      element("connection").textContent = "no answer from the rig: trying again";
    }
    await sleep(1000);
  }
}

showFrames();
showStatuses();
</script>
</body>
</html>
"""


def render_page(title: str) -> str:
    """The page, with ``title`` (the source and model: a folder name may hold anything) escaped."""
    return PAGE.replace("$TITLE", html.escape(title))
