/* Stratus local console: polls /api/* and draws everything as inline SVG. No build step. */
"use strict";

const POLL_MS = 3000;
const SLOW_POLL_MS = 9000;
const PALETTE = ["#38bdf8", "#a78bfa", "#34d399", "#fbbf24", "#f472b6", "#fb923c", "#60a5fa", "#4ade80", "#e879f9"];
const SVG_NS = "http://www.w3.org/2000/svg";
const state = { correlationId: "", colors: {}, lastSlow: 0 };

function $(id) { return document.getElementById(id); }
function esc(value) {
  return String(value == null ? "" : value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function usd(value, digits) {
  const n = Number(value || 0);
  if (n === 0) return "$0";
  const d = digits != null ? digits : (n < 0.01 ? 6 : n < 1 ? 4 : 2);
  return "$" + n.toFixed(d);
}
function compact(n) {
  n = Number(n || 0);
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (Math.abs(n) >= 1e3) return (n / 1e3).toFixed(1) + "k";
  if (Number.isInteger(n)) return String(n);
  return n.toFixed(n < 10 ? 2 : 1);
}
function shortId(id, n) { id = String(id || ""); return id.length > (n || 14) ? id.slice(0, n || 14) + "…" : id; }
function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
function colorOf(agent) {
  if (!state.colors[agent]) state.colors[agent] = PALETTE[Object.keys(state.colors).length % PALETTE.length];
  return state.colors[agent];
}
function svg(tag, attrs, children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const child of children || []) el.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  return el;
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
  return body;
}

/* -- charts ---------------------------------------------------------------------- */

function costChart(agents) {
  const host = $("cost-chart");
  const rows = agents.slice().sort((a, b) => b.cost_today_usd - a.cost_today_usd);
  const max = Math.max(0, ...rows.map((r) => r.cost_today_usd));
  host.replaceChildren();
  if (!rows.length) { host.innerHTML = '<div class="empty">No agents.</div>'; return; }
  const W = 660, rowH = 36, left = 150, right = 175, H = rows.length * rowH + 10;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "cost per agent today" });
  rows.forEach((row, i) => {
    const y = 6 + i * rowH;
    const width = max > 0 ? Math.max(row.cost_today_usd > 0 ? 3 : 0, ((W - left - right) * row.cost_today_usd) / max) : 0;
    const g = svg("g", { class: "bar", "data-agent": row.agent, "data-cost": String(row.cost_today_usd), "data-calls": String(row.calls_today) });
    g.appendChild(svg("text", { x: left - 10, y: y + 19, "text-anchor": "end", class: "label-strong" }, [row.agent]));
    g.appendChild(svg("rect", { x: left, y: y + 5, width: W - left - right, height: 20, rx: 5, fill: "#16213a" }));
    if (width > 0) g.appendChild(svg("rect", { x: left, y: y + 5, width, height: 20, rx: 5, fill: colorOf(row.agent) }));
    const note = row.calls_today ? `${usd(row.cost_today_usd)}  ·  ${row.calls_today} calls  ·  ${usd(row.cost_per_call_usd)}/call` : "no calls";
    g.appendChild(svg("text", { x: left + (W - left - right) + 8, y: y + 15, class: "value-label" }, [usd(row.cost_today_usd)]));
    g.appendChild(svg("text", { x: left + (W - left - right) + 8, y: y + 28 }, [row.calls_today ? `${row.calls_today} call${row.calls_today > 1 ? "s" : ""} · ${usd(row.cost_per_call_usd)}/call` : "no calls"]));
    g.appendChild(svg("title", {}, [`${row.agent}: ${note}`]));
    root.appendChild(g);
  });
  host.appendChild(root);
}

function budgetBars(scopes) {
  const host = $("budget-bars");
  host.replaceChildren();
  if (!scopes.length) { host.innerHTML = '<div class="empty">No spend recorded today.</div>'; return; }
  const W = 560, rowH = 38, left = 170, right = 130, H = scopes.length * rowH + 8;
  const unlimitedMax = Math.max(0, ...scopes.filter((s) => s.burn_pct == null).map((s) => s.spent_usd));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "budget burn per scope" });
  scopes.forEach((s, i) => {
    const y = 4 + i * rowH;
    const pct = s.burn_pct == null ? null : Math.max(0, s.burn_pct);
    const inner = W - left - right;
    const fill = pct == null ? "#475569" : pct >= 90 ? "#f87171" : pct >= 50 ? "#fbbf24" : "#34d399";
    const share = pct == null ? (unlimitedMax > 0 ? (100 * s.spent_usd) / unlimitedMax : 0) : Math.min(100, pct);
    const width = Math.max(share > 0 ? 2 : 0, (inner * share) / 100);
    const g = svg("g", { class: "budget", "data-scope": s.scope, "data-name": s.name, "data-pct": pct == null ? "" : String(pct) });
    g.appendChild(svg("text", { x: left - 10, y: y + 15, "text-anchor": "end", class: "label-strong" }, [s.name]));
    g.appendChild(svg("text", { x: left - 10, y: y + 29, "text-anchor": "end" }, [s.scope]));
    g.appendChild(svg("rect", { x: left, y: y + 8, width: inner, height: 16, rx: 8, fill: "#16213a" }));
    if (width) g.appendChild(svg("rect", { x: left, y: y + 8, width, height: 16, rx: 8, fill, opacity: pct == null ? 0.55 : 1 }));
    const label = pct == null ? `${usd(s.spent_usd)} · no limit` : `${pct < 0.1 ? pct.toFixed(3) : pct.toFixed(1)}% of ${usd(s.limit_usd, 2)}`;
    g.appendChild(svg("text", { x: left + inner + 8, y: y + 20, class: "value-label" }, [label]));
    g.appendChild(svg("title", {}, [`${s.key}: spent ${usd(s.spent_usd)}, reserved ${usd(s.reserved_usd)}`]));
    root.appendChild(g);
  });
  host.appendChild(root);
}

const SERIES = [
  { key: "requests", title: "Requests / min", total: true },
  { key: "errors", title: "Errors / min", total: true },
  { key: "latency_ms", title: "Latency (ms, mean)", total: false },
  { key: "cost_per_task_micro_usd", title: "Cost per task (µ$)", total: false },
];

function lineChart(title, key, agents, minutes, total) {
  const W = 300, H = 124, padL = 44, padB = 20, padT = 10, padR = 8;
  const series = agents.map((a) => ({ agent: a.agent, values: (a.series && a.series[key]) || [] }));
  const all = series.flatMap((s) => s.values);
  const max = Math.max(1e-9, ...all);
  const n = Math.max(1, minutes.length);
  const x = (i) => padL + ((W - padL - padR) * i) / Math.max(1, n - 1);
  const y = (v) => padT + (H - padT - padB) * (1 - v / max);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, "data-series": key });
  for (let t = 0; t <= 2; t++) {
    const v = (max * t) / 2, yy = y(v);
    root.appendChild(svg("line", { x1: padL, x2: W - padR, y1: yy, y2: yy, stroke: "#22304d", "stroke-width": 1 }));
    root.appendChild(svg("text", { x: padL - 5, y: yy + 3, "text-anchor": "end" }, [all.some((v2) => v2 > 0) ? compact(v) : t ? "" : "0"]));
  }
  if (minutes.length) {
    root.appendChild(svg("text", { x: padL + 2, y: H - 4 }, [when(minutes[0]).slice(0, 5)]));
    root.appendChild(svg("text", { x: W - padR, y: H - 4, "text-anchor": "end" }, ["now"]));
  }
  for (const s of series) {
    if (!s.values.some((v) => v > 0)) continue;
    const pts = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const color = colorOf(s.agent);
    root.appendChild(svg("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 1.8, "stroke-linejoin": "round", "data-agent": s.agent }));
    s.values.forEach((v, i) => { if (v > 0) root.appendChild(svg("circle", { cx: x(i), cy: y(v), r: 2.2, fill: color })); });
  }
  let headline;
  if (total) headline = compact(all.reduce((a, b) => a + b, 0));
  else { const nz = all.filter((v) => v > 0); headline = nz.length ? compact(nz.reduce((a, b) => a + b, 0) / nz.length) : "–"; }
  const box = document.createElement("div");
  box.className = "mini";
  box.innerHTML = `<h3>${esc(title)} <b>${esc(headline)}</b></h3>`;
  box.appendChild(root);
  return box;
}

function agentCharts(data) {
  const active = data.agents.filter((a) => a.calls_today > 0 || (a.series && Object.values(a.series).some((v) => v.some((x) => x > 0))));
  const legend = $("agents-legend");
  legend.innerHTML = active.map((a) => `<span><i style="background:${colorOf(a.agent)}"></i>${esc(a.agent)}</span>`).join("") || '<span>No traffic yet: run <code>stratus demo</code>.</span>';
  const host = $("agent-charts");
  host.replaceChildren(...SERIES.map((s) => lineChart(s.title, s.key, active, data.minutes || [], s.total)));
}

/* -- tables ---------------------------------------------------------------------- */

function kpis(agents, jobs, sessions, dlq) {
  const cost = agents ? agents.agents.reduce((a, b) => a + b.cost_today_usd, 0) : 0;
  const calls = agents ? agents.agents.reduce((a, b) => a + b.calls_today, 0) : 0;
  const cards = [
    ["Cost today", usd(cost), `${calls} model calls`],
    ["Cost per call", usd(calls ? cost / calls : 0), "mean, all agents"],
    ["Jobs", jobs ? compact(jobs.total) : "–", jobs ? Object.entries(jobs.by_status).map(([k, v]) => `${v} ${k}`).join(" · ") : ""],
    ["Sessions", sessions ? compact(sessions.total) : "–", sessions ? `${sessions.sessions.reduce((a, s) => a + Number(s.turns || 0), 0)} turns` : ""],
    ["DLQ messages", dlq ? compact(dlq.total) : "–", dlq ? `${dlq.queues.length} dead-letter queues` : ""],
  ];
  $("kpis").innerHTML = cards.map(([label, value, sub]) => `<div class="kpi"><div class="label">${esc(label)}</div><div class="value">${esc(value)}</div><div class="sub">${esc(sub)}</div></div>`).join("");
}

function cidLink(cid) {
  return cid ? `<a class="cid mono" data-cid="${esc(cid)}" title="show its log lines">${esc(shortId(cid, 18))}</a>` : '<span class="muted">–</span>';
}

function jobsTable(data) {
  $("jobs-summary").textContent = `${data.total} in the jobs table` + (data.total > data.jobs.length ? `, newest ${data.jobs.length}` : "");
  const body = $("jobs-table").querySelector("tbody");
  if (!data.jobs.length) { body.innerHTML = '<tr><td colspan="7" class="empty">No jobs yet.</td></tr>'; return; }
  body.innerHTML = data.jobs.map((j) => `<tr data-job="${esc(j.job_id)}">
      <td class="mono" title="${esc(j.job_id)}">${esc(shortId(j.job_id, 16))}${j.routed_from ? `<div class="muted">routed from ${esc(j.routed_from)}</div>` : ""}</td>
      <td>${esc(j.agent)}<div class="muted">${esc(j.source)}</div></td>
      <td><span class="pill ${esc(j.status)}">${esc(j.status)}</span></td>
      <td><div class="steps">${j.steps.map((s) => `<span class="step ${esc(s.status)}" title="${esc(s.model)} · ${esc(s.tokens)} tokens · ${usd(s.cost_usd)}">${esc(s.name)}</span>`).join("") || '<span class="muted">–</span>'}</div></td>
      <td class="num">${usd(j.cost_usd)}</td>
      <td>${cidLink(j.correlation_id)}</td>
      <td class="muted">${esc(when(j.created_at))}</td></tr>`).join("");
}

function sessionsTable(data) {
  $("sessions-summary").textContent = `${data.total} open`;
  const body = $("sessions-table").querySelector("tbody");
  if (!data.sessions.length) { body.innerHTML = '<tr><td colspan="6" class="empty">No sessions.</td></tr>'; return; }
  body.innerHTML = data.sessions.map((s) => `<tr>
      <td class="mono" title="${esc(s.session_id)}">${esc(shortId(s.session_id, 16))}</td><td>${esc(s.agent)}</td>
      <td class="num">${esc(s.turns)}</td><td class="num">${esc(compact(s.tokens))}</td>
      <td class="num">${usd(s.cost_usd)}</td><td class="muted">${esc(when(s.created_at))}</td></tr>`).join("");
}

function dlqList(data) {
  $("dlq-summary").textContent = `${data.total} message(s)`;
  const host = $("dlq-list");
  const full = data.queues.filter((q) => q.depth > 0);
  if (!full.length) {
    host.innerHTML = `<div class="ok-line">✓ All ${data.queues.length} dead-letter queues are empty.</div>`;
    return;
  }
  host.innerHTML = full.map((q) => `<div class="queue"><header><span>${esc(q.queue)}</span><span>${esc(q.depth)}</span></header>
      ${q.messages.map((m) => `<div class="msg"><span class="reason">${esc(m.stratus_reason)}</span>
        ${m.stratus_detail ? `<span class="muted"> · ${esc(m.stratus_detail)}</span>` : ""}
        <span class="muted"> · received ${esc(m.receive_count)}× · ${esc(when(m.sent_at))}</span>
        ${m.correlation_id ? ` · ${cidLink(m.correlation_id)}` : ""}
        <div class="mono muted">${esc(m.body)}</div></div>`).join("")}</div>`).join("");
}

function logLines(data) {
  $("log-count").textContent = data.correlation_id ? `${data.count} line(s) of ${data.correlation_id}` : `newest ${data.count} line(s)`;
  const host = $("log-lines");
  const atBottom = host.scrollTop + host.clientHeight >= host.scrollHeight - 8;
  host.innerHTML = data.lines.map((l) => `<div class="log"><span class="fn" title="${esc(l.function)}">${esc(l.function.replace(/^stratus-[a-z0-9]+-/, ""))}</span>
      <span class="lvl ${esc(l.level)}">${esc(l.level || "·")}</span><span class="msg" title="${esc(l.line)}">${esc(l.message)}${l.correlation_id && !data.correlation_id ? `  <a class="cid" data-cid="${esc(l.correlation_id)}">${esc(shortId(l.correlation_id, 12))}</a>` : ""}</span></div>`).join("")
    || '<div class="empty">No log lines' + (data.correlation_id ? " with this correlation id." : " yet.") + "</div>";
  if (atBottom) host.scrollTop = host.scrollHeight;
}

/* -- polling --------------------------------------------------------------------- */

const cache = {};

async function refresh() {
  const slow = Date.now() - state.lastSlow > SLOW_POLL_MS;
  const wanted = ["status", "agents", "budgets", "jobs", "sessions"].concat(slow ? ["dlq"] : []);
  const raw = $("log-raw").checked ? "" : "&platform=false";
  const logsPath = "/api/logs?limit=200" + raw + (state.correlationId ? "&correlation_id=" + encodeURIComponent(state.correlationId) : "");
  const results = await Promise.allSettled(wanted.map((name) => getJson("/api/" + name)).concat([getJson(logsPath)]));
  let failed = 0;
  results.forEach((r, i) => {
    const name = i < wanted.length ? wanted[i] : "logs";
    if (r.status === "fulfilled") cache[name] = r.value; else failed += 1;
  });
  if (slow) state.lastSlow = Date.now();
  $("live-dot").classList.toggle("down", failed > 0);
  $("live-text").textContent = failed ? `${failed} endpoint(s) not answering` : "live · " + new Date().toLocaleTimeString();
  const st = cache.status;
  if (st) {
    $("meta").textContent = `stage ${st.stage} · API ${st.api_url} · AWS ${st.aws_endpoint_url} · model ${st.model_base_url}`;
    const warn = $("offline-warning");
    warn.hidden = !st.fake_model;
    warn.textContent = st.offline_warning;
  }
  if (cache.agents) { costChart(cache.agents.agents); agentCharts(cache.agents); }
  if (cache.budgets) budgetBars(cache.budgets.scopes);
  if (cache.jobs) jobsTable(cache.jobs);
  if (cache.sessions) sessionsTable(cache.sessions);
  if (cache.dlq) dlqList(cache.dlq);
  if (cache.logs) logLines(cache.logs);
  kpis(cache.agents, cache.jobs, cache.sessions, cache.dlq);
  document.body.dataset.loaded = "true";
}

async function loop() {
  try { await refresh(); } catch (err) { $("live-dot").classList.add("down"); $("live-text").textContent = String(err.message || err); }
  setTimeout(loop, POLL_MS);
}

function filterBy(cid) {
  state.correlationId = cid;
  $("correlation-id").value = cid;
  refresh().catch(() => {});
  $("panel-logs").scrollIntoView({ behavior: "smooth", block: "start" });
}

document.addEventListener("click", (event) => {
  const link = event.target.closest && event.target.closest("a.cid");
  if (link) { event.preventDefault(); filterBy(link.dataset.cid); }
});
$("log-filter").addEventListener("submit", (event) => { event.preventDefault(); filterBy($("correlation-id").value.trim()); });
$("log-clear").addEventListener("click", () => filterBy(""));
$("log-raw").addEventListener("change", () => refresh().catch(() => {}));
const initial = new URLSearchParams(location.search).get("correlation_id");
if (initial) { state.correlationId = initial; $("correlation-id").value = initial; }
loop();
