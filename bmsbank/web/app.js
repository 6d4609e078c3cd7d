// bmsbank bank view: live values over Server-Sent Events, history as inline SVG. Read-only.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const q = (path) => path + (token ? (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : "");
const $ = (id) => document.getElementById(id);
const f = (x, d, u) => (x === null || x === undefined ? "–" : x.toFixed(d) + (u || ""));
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]);
const hm = (t) => new Date(t * 1000).toTimeString().slice(0, 5);
const dur = (s) => (s === null || s === undefined ? "–" : s >= 3600 ? (s / 3600).toFixed(1) + " h" : Math.round(s / 60) + " min");
let states = {}, bank = null;

function packState(p) {
  if (p.blocking_charge || p.blocking_discharge) return "blocking";
  if (p.online) return "online";
  return p.voltage === null || p.voltage === undefined ? "waiting" : "offline";
}

function offlineReason(p) {
  if (p.reason) return p.reason;
  if (p.online) return "";
  if (p.age === null || p.age === undefined) return "waiting for first state";
  return "no state for " + p.age.toFixed(1) + " s" + (p.last_rejection ? "; last rejected: " + p.last_rejection : "");
}

function showBank(b) {
  bank = b;
  $("name").textContent = b.name || ""; $("seq").textContent = b.seq;
  $("soc").textContent = f(b.soc, 1, " %"); $("voltage").textContent = f(b.voltage, 2, " V");
  $("current").textContent = f(b.current, 1, " A"); $("power").textContent = f(b.power, 0, " W");
  $("cvl").textContent = f(b.cvl, 2, " V"); $("ccl").textContent = f(b.ccl, 1, " A");
  $("dcl").textContent = f(b.dcl, 1, " A");
  for (const k of ["cvl", "ccl", "dcl"]) $(k + "-why").textContent = (b.reasons || {})[k] || "";
  $("facts").textContent = "charge state " + (b.charge_state || "?") +
    (b.timers ? " (" + Object.entries(b.timers).map(([k, v]) => k + " " + dur(v)).join(", ") + ")" : "") +
    (b.full_charge_due ? " · full charge due" : "") +
    " · days since full " + f(b.days_since_full, 1) + " · time to go " + dur(b.time_to_go) +
    " · online " + b.online + "/" + (b.online + b.offline) + (b.waiting ? " (" + b.waiting + " waiting)" : "");
  const alarms = Object.entries(b.alarms || {}).filter(([, v]) => v);
  $("alarms").innerHTML = alarms.length ? alarms.map(([k, v]) => `<span class="alarm">${esc(k)} ${v === 2 ? "ALARM" : "warning"}</span>`).join(" ") : "alarms: none";
  const outs = b.outputs || {};
  $("outputs").textContent = Object.keys(outs).length ? "outputs: " + Object.entries(outs).map(([k, o]) =>
    k + " " + (o.ok === null ? "?" : o.ok ? "ok" : "FAIL") + (o.detail ? " (" + o.detail + ")" : "")).join(" · ") : "outputs: (not reported)";
  const bad = (b.web && b.web.bad) || {};
  const nbad = (bad.bank || 0) + (bad.state || 0) + (bad.other || 0);
  $("bad").textContent = nbad ? "bad messages skipped: " + nbad : "";
  showTopology(b); showCards(b);
}

function showTopology(b) {
  const byId = Object.fromEntries((b.packs || []).map((p) => [p.id, p]));
  const total = (b.topology || []).reduce((s, str) => s + str.length, 0);
  $("topo").innerHTML = (b.topology || []).map((str, i) => {
    // a string's share: its part of the capacity of the strings reporting (what shares currents)
    const cap = Math.min(...str.map((id) => ((byId[id] || {}).online && byId[id].capacity) || 0));
    const share = b.capacity ? " · " + (100 * cap / b.capacity).toFixed(0) + " %" : "";
    return `<div class="str"><small>string ${i + 1}${share}</small>` + str.map((id) => {
      const p = byId[id] || {id};
      return `<div class="box ${packState(p)}" data-pack="${esc(id)}">${esc(id)}<br>${f(p.voltage, 2, " V")} ${f(p.soc, 0, " %")}</div>`;
    }).join("") + "</div>";
  }).join("") + `<small>${total} packs</small>`;
}

function healthText(h) {
  // what the arbiter learnt of the pack's cells (services/arbiter/cell_health.py); null: nothing
  if (!h) return "–";
  const mid = h.resistance_median === null ? "" : " · median " + h.resistance_median.toFixed(2) + " mΩ";
  return h.status + mid + " · " + h.steps + " steps · " + h.charges + " charges";
}

function healthWarnings(h) {
  if (!h || !h.warnings || !h.warnings.length) return "";
  return `<div class="health">${h.warnings.map((w) => "⚠ " + esc(w)).join("<br>")}</div>`;
}

function cellLearnt(h, i) {
  // a bar's tooltip: the cell's resistance [mΩ at 25 °C] and capacity [% of the median] once known
  if (!h) return "";
  const r = h.resistance[i], c = h.capacity[i];
  return (r === null || r === undefined ? "" : " · " + r.toFixed(2) + " mΩ") + (c === null || c === undefined ? "" : " · " + c.toFixed(0) + " %");
}

function cellBars(s, h) {
  if (!s || !s.cells || !s.cells.length) return "<small>no cell data yet</small>";
  const lo = Math.min(...s.cells), hi = Math.max(...s.cells);
  const base = lo - Math.max(0.01, hi - lo), span = hi - base;  // the spread fills the bars
  return `<div class="bars">` + s.cells.map((v, i) =>
    `<div class="bar${s.balancing && s.balancing[i] ? " bal" : ""}${v === lo ? " min" : ""}${v === hi ? " max" : ""}" style="height:${(100 * (v - base) / span).toFixed(0)}%" title="C${i + 1} ${v.toFixed(3)} V${cellLearnt(h, i)}"></div>`).join("") + "</div>" +
    `<small>min ${lo.toFixed(3)} · max ${hi.toFixed(3)} · Δ ${((hi - lo) * 1000).toFixed(0)} mV · balancing ${s.balancing ? s.balancing.filter((x) => x).length : 0}</small>`;
}

function linkText(link) {
  // h15-why's {state, since, ok, bad, timeouts} or the state's counters: only what is not zero
  if (!link) return "–";
  const parts = Object.entries(link).filter(([k, v]) => v && k !== "since").map(([k, v]) => k + " " + v);
  return parts.join(", ") || "no errors";
}

function showCards(b) {
  $("cards").innerHTML = (b.packs || []).map((p) => {
    const s = states[p.id], st = packState(p), link = p.link || (s && s.link);
    const rows = [
      ["V / A / SoC", `${f(p.voltage, 2, " V")} · ${f(p.current, 1, " A")} · ${f(p.soc, 1, " %")}`],
      ["temperatures", (p.temperatures || []).map((t) => t.toFixed(1)).join(" / ") + " °C" + (s && s.mosfet_temperature !== null && s.mosfet_temperature !== undefined ? " · FET " + s.mosfet_temperature.toFixed(1) + " °C" : "")],
      ["FETs", s ? `charge ${s.charge_fet ? "on" : "OFF"} · discharge ${s.discharge_fet ? "on" : "OFF"}` : "–"],
      ["cycles / SoH", s ? `${s.cycles ?? "–"} · ${f(s.soh, 0, " %")}` : "–"],
      ["CCL / DCL", `${f(p.ccl, 1, " A")} · ${f(p.dcl, 1, " A")}`],
      ["link", linkText(link)],
      ["age", f(p.age, 1, " s")],
      ["cell health", healthText(p.cell_health)],
    ];
    const why = offlineReason(p) || p.blocking_charge || p.blocking_discharge || "";
    return `<div class="card ${p.online ? "" : "off"}" data-pack="${esc(p.id)}"><b>${esc(p.id)}</b> <small>${esc(p.bms || "?")}</small>
      <span class="box ${st} state">${st}</span><div class="reason">${esc(why)}</div>${healthWarnings(p.cell_health)}${cellBars(s, p.cell_health)}
      <table>${rows.map(([k, v]) => `<tr><td><small>${k}</small></td><td>${esc(v)}</td></tr>`).join("")}</table></div>`;
  }).join("");
}

function chart(title, points, series, unit) {
  const W = 420, H = 140, P = 30;
  const ts = points.map((p) => p.t);
  const vals = series.flatMap(([, get]) => points.map(get)).filter((v) => v !== null && v !== undefined);
  if (!points.length || !vals.length) return `<svg width="${W}" height="${H}"><text x="10" y="20">${title}: no data yet</text></svg>`;
  const t0 = Math.min(...ts), t1 = Math.max(...ts, t0 + 1), lo = Math.min(...vals), hi = Math.max(...vals, lo + 1e-3);
  const x = (t) => P + (W - P - 5) * (t - t0) / (t1 - t0), y = (v) => H - 15 - (H - 35) * (v - lo) / (hi - lo);
  const colors = ["#1d3557", "#e63946", "#2a9d8f", "#f4a261", "#6a4c93", "#8ab17d"];
  const lines = series.map(([name, get], i) => {
    const pts = points.filter((p) => get(p) !== null && get(p) !== undefined).map((p) => x(p.t).toFixed(1) + "," + y(get(p)).toFixed(1)).join(" ");
    return `<polyline fill="none" stroke="${colors[i % 6]}" stroke-width="1.5" points="${pts}"/><text x="${P + 70 * i}" y="${H - 2}" font-size="10" fill="${colors[i % 6]}">${esc(name)}</text>`;
  }).join("");
  return `<svg width="${W}" height="${H}"><text x="${P}" y="12" font-size="11">${title} [${unit}] ${hm(t0)}–${hm(t1)}</text>
    <text x="2" y="${y(hi) + 4}" font-size="9">${hi.toFixed(1)}</text><text x="2" y="${y(lo)}" font-size="9">${lo.toFixed(1)}</text>${lines}</svg>`;
}

async function loadHistory() {
  const span = $("span").value;
  $("csv").href = q("/history.csv?span=" + span); $("json").href = q("/history.json?span=" + span);
  try {
    const pts = await (await fetch(q("/history.json?span=" + span))).json();
    const packs = [...new Set(pts.flatMap((p) => Object.keys(p.spread || {})))];
    $("charts").innerHTML = chart("Voltage", pts, [["V", (p) => p.voltage]], "V") +
      chart("Current", pts, [["A", (p) => p.current]], "A") + chart("SoC", pts, [["SoC", (p) => p.soc]], "%") +
      chart("CVL", pts, [["CVL", (p) => p.cvl]], "V") + chart("CCL / DCL", pts, [["CCL", (p) => p.ccl], ["DCL", (p) => p.dcl]], "A") +
      chart("Cell spread", pts, packs.map((id) => [id, (p) => (p.spread || {})[id]]), "mV");
    const ev = await (await fetch(q("/events.json"))).json();
    $("log").innerHTML = ev.length ? ev.map((e) => `<div>${hm(e.t)} ${esc(e.text)}</div>`).join("") : "<small>no limit changes yet</small>";
  } catch (e) { $("charts").textContent = "history unavailable: " + e; }
}

function connect() {
  const es = new EventSource(q("/events"));
  es.onopen = () => { $("conn").textContent = "live"; };
  es.onerror = () => { $("conn").textContent = "reconnecting…"; };
  es.addEventListener("bank", (e) => showBank(JSON.parse(e.data)));
  es.addEventListener("states", (e) => { Object.assign(states, JSON.parse(e.data)); if (bank) showCards(bank); });
}

$("span").onchange = loadHistory;
connect(); loadHistory(); setInterval(loadHistory, 60000);  // points come every 10 s; a GX need not re-send 24 h often
