// plotterd's status page: polls the daemon's API, draws the current plot, sends commands.
// Plain JavaScript, no libraries: every file comes from the daemon itself.
"use strict";

const TOKEN_KEY = "plotterd-token";
const POLL_MS = 1000;
// commands the plotter may offer while it waits for the operator (see api.py)
const OPERATOR_ACTIONS = {
  paper: { states: ["waiting_for_paper"], path: "/api/paper/changed" },
  pen: { states: ["pen_change", "waiting_for_pen"], path: "/api/pen/continue" },
};
const STATE_WORDS = {
  idle: "idle", plotting: "plotting", paused: "paused", waiting_for_paper: "waiting for paper",
  waiting_for_plotter: "waiting for the plotter", pen_change: "waiting for a pen change",
  waiting_for_pen: "waiting for a pen change", alarm: "alarm", disconnected: "not connected",
  interrupted: "interrupted", vectorised: "ready to plot", claiming: "taking in",
  connecting: "connecting", unknown: "unknown",
};

const $ = (id) => document.getElementById(id);
const state = { plan: null, planKey: null, jobs: new Map(), images: new Map(), details: null,
                pipelinesLoaded: false, file: null, busy: false, livePlotter: null, several: false,
                pensAt: 0 };

// ---------------------------------------------------------------- talking to the API
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function headers(extra) {
  // X-Plotterd-Request: the API refuses a browser's state-changing request without it, and
  // another site's page cannot add it (it would need a CORS preflight the API never grants)
  const h = { "X-Plotterd-Request": "1", ...(extra || {}) };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, { method, body, headers: headers(), cache: "no-store",
                                   credentials: "same-origin" });
  } catch (e) {
    throw new ApiError(0, "the daemon does not answer (" + e.message + ")");
  }
  if (response.status === 401) {
    showLogin(sessionStorage.getItem(TOKEN_KEY) ? "that token was refused" : "");
    throw new ApiError(401, "this daemon needs its API token");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new ApiError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.blob();
}

async function command(path, label) {
  try {
    await api("POST", path);
    hideMessage();
  } catch (e) {
    if (e.status !== 401) showMessage(label + ": " + e.message);
  }
  tick();
}

// images need the token too, so they are fetched and shown from blob URLs
const IMAGES_KEPT = 240;  // a page left open for months must not keep every picture

async function imageUrl(key, path) {
  if (state.images.has(key)) {
    const hit = state.images.get(key);
    state.images.delete(key);  // most recently used last
    state.images.set(key, hit);
    return hit;
  }
  const pending = api("GET", path).then((blob) => URL.createObjectURL(blob));
  state.images.set(key, pending);
  pending.catch(() => state.images.delete(key));
  while (state.images.size > IMAGES_KEPT) {
    const [oldest, url] = state.images.entries().next().value;
    state.images.delete(oldest);
    url.then((u) => URL.revokeObjectURL(u)).catch(() => {});
  }
  return pending;
}

function setImage(img, key, path) {
  if (img.dataset.key === key) return;
  img.dataset.key = key;
  imageUrl(key, path).then((url) => { if (img.dataset.key === key) img.src = url; })
    .catch(() => { img.alt = "(not available)"; });
}

// ---------------------------------------------------------------- messages and login
function showMessage(text) { $("message-text").textContent = text; $("message").hidden = false; }
function hideMessage() { $("message").hidden = true; }

function showLogin(error) {
  $("login").hidden = false;
  $("login-error").textContent = error || "";
}

// ---------------------------------------------------------------- formatting
function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (h) return `${h} h ${String(m).padStart(2, "0")} min`;
  if (m) return `${m} min ${String(sec).padStart(2, "0")} s`;
  return `${sec} s`;
}

function length(mm) {
  if (mm === null || mm === undefined || !isFinite(mm)) return "–";
  return mm >= 1000 ? `${(mm / 1000).toFixed(2)} m` : `${Math.round(mm)} mm`;
}

function clock(t) {
  const d = new Date(t * 1000);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

function words(s) { return STATE_WORDS[s] || String(s || "unknown").replaceAll("_", " "); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// ---------------------------------------------------------------- job figures
// the figures a job's record can hold; keys not listed here but about ink, lifts or time
// are shown too, with their own names
const FIGURES = [
  ["plot_time_s", "plot time", duration], ["elapsed_s", "plot time", duration],
  ["estimated_s", "estimated plot time", duration],
  ["ink_mm", "ink", length], ["ink_length_mm", "ink", length],
  ["machine_draw_mm", "pen-down length", length], ["draw_mm", "pen-down length", length],
  ["pen_lifts", "pen lifts", String], ["machine_travel_mm", "travel", length],
  ["travel_mm_before", "travel before ordering", length],
  ["travel_mm_after", "travel after ordering", length], ["clipped_mm", "clipped off", length],
  ["strokes", "strokes", String], ["lines", "lines", String],
];

function flatStats(stats, prefix, out) {
  for (const [k, v] of Object.entries(stats || {})) {
    if (v && typeof v === "object" && !Array.isArray(v)) flatStats(v, prefix + k + ".", out);
    else if (typeof v === "number") out.push([prefix + k, k, v]);
  }
  return out;
}

// shown in a job's details besides the figures above
const DETAIL_KEYS = ["gcode_lines", "gcode_bytes", "lines_executed", "dots"];

function figures(job, details) {
  const flat = flatStats(job.stats, "", []);
  const out = [];
  const seen = new Set();
  for (const [key, label, fmt] of FIGURES) {
    const hit = flat.find(([full, k]) => k === key && !seen.has(full));
    if (!hit || out.some(([l]) => l === label)) continue;
    seen.add(hit[0]);
    out.push([label, fmt(hit[2])]);
  }
  for (const [full, k, v] of flat) {
    if (seen.has(full)) continue;
    if (/ink|lift|plot_time/.test(k) || (details && DETAIL_KEYS.includes(k))) {
      const fmt = /_s$/.test(k) ? duration : /_mm(_|$)/.test(k) ? length
        : (x) => (Number.isInteger(x) ? String(x) : x.toFixed(3));
      out.push([k.replaceAll("_", " ").replace(/ mm$/, ""), fmt(v)]);
    }
  }
  return out;
}

// ---------------------------------------------------------------- the live plot
function planPath(plan, upTo, pen) {
  // an SVG path of the strokes' points with track index < upTo (all of them if undefined),
  // only those of `pen` if given
  const parts = [];
  for (const s of plan.strokes) {
    if (pen && (s.id < pen.first_stroke || s.id >= pen.first_stroke + pen.strokes)) continue;
    const end = upTo === undefined ? s.end : Math.min(s.end, upTo);
    if (end - s.start < 2) continue;
    let d = "M" + plan.track[s.start][1] + " " + plan.track[s.start][2];
    for (let i = s.start + 1; i < end; i++) d += "L" + plan.track[i][1] + " " + plan.track[i][2];
    parts.push(d);
  }
  return parts.join("");
}

function inPen(pen, strokeId) {
  return strokeId >= pen.first_stroke && strokeId < pen.first_stroke + pen.strokes;
}

function strokeTail(plan, k, executed, machine) {
  // the part of the stroke in progress from its last reached point to where the machine
  // says the pen is now (drawn lines only count once their G-code line has executed)
  if (!machine || k === 0) return null;
  const s = plan.strokes.find((st) => st.start <= k - 1 && k - 1 < st.end - 1);
  // the pen is down once every line before the next drawing move has executed (at a
  // stroke's start the pen-down commands, or a pen change, come first)
  if (!s || executed < plan.track[k][0]) return null;
  const [ku, cu, kv, cv] = plan.machine_to_view;
  const [, x, y] = plan.track[k - 1];
  return { id: s.id, d: `M${x} ${y}L${ku * machine[0] + cu} ${kv * machine[1] + cv}` };
}

function executedPoints(plan, executed) {
  // how many track points the executed lines have reached (track lines ascend)
  let lo = 0, hi = plan.track.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (plan.track[mid][0] < executed) lo = mid + 1; else hi = mid;
  }
  return lo;
}

async function loadPlan(job) {
  const key = job.plan ? `${job.id}:${job.plot.attempts}:${job.artefacts.gcode}` : null;
  if (key === state.planKey) return state.plan;
  state.planKey = key;
  state.plan = null;
  if (!key) return null;
  try {
    state.plan = await api("GET", job.plan);
  } catch (e) {
    state.planKey = null;
    $("live-error").textContent = "cannot show the plan: " + e.message;
    $("live-error").hidden = false;
  }
  const plan = state.plan;
  if (plan) {
    const [x, y, w, h] = plan.view;
    const pad = Math.max(w, h) * 0.02;
    $("plot-view").setAttribute("viewBox", `${x - pad} ${y - pad} ${w + 2 * pad} ${h + 2 * pad}`);
    for (const [k, v] of Object.entries({ x, y, width: w, height: h })) $("paper").setAttribute(k, v);
    $("pen").setAttribute("r", Math.max(w, h) / 120);
    document.documentElement.style.setProperty("--stroke-w", Math.max(w, h) / 600);
    $("planned").setAttribute("d", planPath(plan));
    // the plan and the ink at the pen's own width (mm = the view's units), so the view's
    // tone is the drawing's, as in render.png
    $("planned").style.strokeWidth = `${Math.max(...plan.pens.map((p) => p.width_mm))}px`;
    // one path per pen, in its colour (the colour was checked by the daemon)
    const NS = "http://www.w3.org/2000/svg";
    $("drawn").replaceChildren(...plan.pens.map((pen, i) => {
      const path = document.createElementNS(NS, "path");
      path.setAttribute("stroke", pen.color);
      path.style.strokeWidth = `${pen.width_mm}px`;
      path.dataset.pen = i;
      return path;
    }));
  }
  return plan;
}

function showPen(plan, k, machine) {
  // the machine's own position where it reports one, else where the executed lines left it
  const pen = $("pen");
  let xy = null;
  if (plan && machine) {
    const [ku, cu, kv, cv] = plan.machine_to_view;
    xy = [ku * machine[0] + cu, kv * machine[1] + cv];
  } else if (plan && k > 0) {
    xy = plan.track[k - 1].slice(1);
  }
  if (!xy) { pen.setAttribute("cx", -1e4); pen.setAttribute("cy", -1e4); return "–"; }
  pen.setAttribute("cx", xy[0]);
  pen.setAttribute("cy", xy[1]);
  const unit = plan.frame === "paper" ? "mm on the paper" : "mm (machine)";
  const own = machine && plan.frame === "paper"
    ? ` (machine ${machine.map((v) => v.toFixed(1)).join(", ")})` : "";
  return `${xy[0].toFixed(1)}, ${xy[1].toFixed(1)} ${unit}${own}`;
}

function strokeText(job, plan) {
  const info = job.progress.info || {};
  const total = info.strokes ?? (plan ? plan.strokes.length : null);
  const last = job.plot.last_completed_stroke;
  if (total === null || total === undefined) return "–";
  const done = job.state === "done" ? total : (last === null ? 0 : last + 1);
  return `${done} of ${total} drawn`;
}

async function showLive(live) {
  const st = live.plotter || {};
  state.livePlotter = st.name || null;
  const s = st.connected === false && st.state === "idle" ? "disconnected" : (st.state || "unknown");
  const badge = $("plotter-state");
  badge.dataset.state = s;
  badge.textContent = words(s);
  $("live-state").textContent = words(s);
  // the daemon's own line for people ("put in a new sheet and confirm ...") when it says more
  const says = st.message && !["idle", s, words(s)].includes(st.message) && s !== "plotting";
  $("live-message").hidden = !says;
  $("live-message").textContent = says ? st.message : "";
  $("live-message").dataset.state = s;
  for (const [name, action] of Object.entries(OPERATOR_ACTIONS)) {
    const offered = action.states.includes(s) || (st.actions && st.actions[name]);
    $("btn-" + name).hidden = !offered;
    if (st.actions && st.actions[name]) action.path = st.actions[name];
  }
  $("btn-pause").disabled = s === "paused";
  $("btn-resume").disabled = s !== "paused";
  $("btn-cancel").disabled = st.current_job === null || st.current_job === undefined;
  const job = live.job;
  $("plot-empty").hidden = !!job;
  $("plot-view").classList.toggle("hidden", !job);
  if (!job) {
    $("live-title").textContent = "Plotter";
    $("live-job").textContent = "";
    for (const id of ["live-stroke", "live-pen", "live-elapsed", "live-eta"]) $(id).textContent = "–";
    $("live-progress").textContent = st.last_error ? "last error: " + st.last_error : "–";
    $("live-bar").style.width = "0";
    return;
  }
  $("live-title").textContent = (job.current ? "Now plotting" : "Last plot")
    + (state.several && job.plotter ? ` on ${job.plotter}` : "");
  $("live-job").textContent = `#${job.id} ${job.name} — ${words(job.state)}`;
  $("live-error").hidden = !job.error;
  $("live-error").textContent = job.error || "";
  const plan = await loadPlan(job);
  let executed = job.executed;
  if (job.state === "done" && plan) executed = plan.lines;
  const k = plan && executed !== null && executed !== undefined ? executedPoints(plan, executed) : 0;
  const machine = job.current && st.position_known !== false && Array.isArray(st.position)
    ? st.position.slice(0, 2).map(Number) : null;
  if (plan) {
    const tail = strokeTail(plan, k, executed, machine);
    plan.pens.forEach((pen, i) => $("drawn").children[i].setAttribute("d",
      planPath(plan, k, pen) + (tail && inPen(pen, tail.id) ? tail.d : "")));
  } else {
    $("drawn").replaceChildren();
  }
  $("live-pen").textContent = showPen(plan, k, machine);
  $("live-stroke").textContent = strokeText(job, plan);
  $("live-elapsed").textContent = duration(job.elapsed_s);
  $("live-eta").textContent = job.state === "plotting" ? duration(job.eta_s) : "–";
  const fraction = job.progress.stage === "plot" ? job.progress.fraction : 0;
  $("live-bar").style.width = `${(fraction * 100).toFixed(1)}%`;
  $("live-progress").textContent = `${(fraction * 100).toFixed(0)} % of the G-code executed`;
}

// ---------------------------------------------------------------- one card per plotter
function forPlotter(path, name) {
  // with several plotters a command names the one it is for
  return state.several && name ? `${path}?plotter=${encodeURIComponent(name)}` : path;
}

function plotterCard(p) {
  const card = el("div", { class: "plotter-card", "data-plotter": p.name, "data-state": p.state });
  const badge = el("span", { class: "badge", "data-state": p.state }, words(p.state));
  card.append(el("h3", {}, p.name, badge));
  const page = p.page ? `${p.page.paper}` : "";
  const tags = (p.tags || []).length ? ` · tags ${p.tags.join(", ")}` : "";
  const pen = p.pen ? ` · pen ${p.pen.profile || ""} ${p.pen.nib_mm} mm`.replace("  ", " ") : "";
  card.append(el("p", { class: "muted small" }, `${p.port} · ${p.profile} · ${page}${tags}${pen}`));
  if (p.message && p.message !== p.state) card.append(el("p", { class: "small" }, p.message));
  if (p.current_job !== null && p.current_job !== undefined) {
    card.append(el("p", { class: "small" }, `job #${p.current_job}`));
  }
  const buttons = el("div", { class: "buttons" });
  const q = `?plotter=${encodeURIComponent(p.name)}`;
  if (p.state === "paused") buttons.append(actionButton("Resume", "/plot/resume" + q));
  else buttons.append(actionButton("Pause", "/plot/pause" + q));
  if (p.state === "waiting_for_paper") buttons.append(actionButton("Paper changed", "/api/paper/changed" + q, "attention"));
  if (p.state === "pen_change") buttons.append(actionButton("Pen changed", "/api/pen/continue" + q, "attention"));
  card.append(buttons);
  return card;
}

function showPlotters(list) {
  list = list || [];
  state.several = list.length > 1;
  $("plotters").hidden = !state.several;
  if (!state.several) return;
  $("plotter-count").textContent = `${list.length} plotters`;
  const key = JSON.stringify(list.map((p) => [p.name, p.state, p.message, p.current_job, p.port]));
  if ($("plotter-cards").dataset.key === key) return;
  $("plotter-cards").dataset.key = key;
  $("plotter-cards").replaceChildren(...list.map(plotterCard));
}

// ---------------------------------------------------------------- the job list
function thumb(job, name, label) {
  if (!job.artefacts[name]) return null;
  const img = el("img", { class: "thumb", alt: `${label} of job ${job.id}`, title: label,
                          "data-artefact": name });
  setImage(img, `thumb:${job.id}:${name}:${job.state}:${job.plot.attempts}`,
           `/api/jobs/${job.id}/thumbnail/${name}`);
  return img;
}

function actionButton(label, path, cls) {
  return el("button", { type: "button", class: cls || "", "data-action": label.toLowerCase(),
                        onclick: () => command(path, label) }, label);
}

function jobActions(job) {
  const box = el("div", { class: "row-actions" });
  if (!["done", "failed", "cancelled"].includes(job.state)) {
    box.append(confirmButton("Cancel", `/jobs/${job.id}/cancel`));
  }
  if (job.state === "interrupted") box.append(actionButton("Resume", `/jobs/${job.id}/resume`));
  if (job.artefacts.gcode && ["done", "failed", "cancelled", "interrupted"].includes(job.state)) {
    box.append(actionButton("Replot", `/jobs/${job.id}/replot`));
  }
  box.append(el("button", { type: "button", class: "link", "data-action": "details",
                            onclick: () => showDetails(job.id) }, "details"));
  return box;
}

function jobRow(job) {
  const pictures = el("td", { class: "pictures" }, thumb(job, "preview", "optimiser preview"),
                      thumb(job, "render", "plot render"));
  const title = el("td", { class: "job" },
    el("div", { class: "name" }, `#${job.id} `, el("span", {}, job.name)),
    el("div", { class: "muted small" },
       `${job.source} · ${job.pipeline || job.kind} · ${clock(job.created)}`
       + (job.plotter ? ` · on ${job.plotter}` : "")),
    job.error ? el("div", { class: "error small" }, job.error) : null);
  const badge = el("span", { class: "badge", "data-state": job.state }, words(job.state));
  const p = job.progress;
  const pct = Math.round((p.fraction || 0) * 100);
  const bar = el("div", { class: "bar" });
  bar.style.width = `${pct}%`;  // through the CSSOM: the page's CSP forbids style attributes
  const progress = el("td", { class: "progress-cell" },
    el("div", { class: "small" }, p.stage ? `${p.stage} · ${pct} %` : "–"),
    el("div", { class: "progress" }, bar));
  const figs = el("td", { class: "small" },
    ...figures(job, false).slice(0, 4).map(([l, v]) => el("div", {}, `${l}: `, el("b", {}, v))));
  return el("tr", { "data-job": job.id, "data-state": job.state }, pictures, title,
            el("td", {}, badge), progress, figs, el("td", {}, jobActions(job)));
}

function rowKey(job) {
  return JSON.stringify([job.state, job.progress.stage, Math.round(job.progress.fraction * 100),
                         job.error, Object.keys(job.artefacts), job.stats, job.plot.attempts]);
}

function showJobs(jobs) {
  const body = $("job-rows");
  const keep = new Set(jobs.map((j) => String(j.id)));
  for (const tr of [...body.children]) if (!keep.has(tr.dataset.job)) tr.remove();
  let before = null;
  for (const job of [...jobs].reverse()) {  // newest first: insert from the oldest up
    const key = rowKey(job);
    let tr = body.querySelector(`tr[data-job="${job.id}"]`);
    if (!tr || tr.dataset.key !== key) {
      const fresh = jobRow(job);
      fresh.dataset.key = key;
      if (tr) tr.replaceWith(fresh); else body.prepend(fresh);
      tr = fresh;
    }
    if (before && tr.nextSibling !== before) body.insertBefore(tr, before);
    before = tr;
    state.jobs.set(job.id, job);
  }
  $("no-jobs").hidden = jobs.length > 0;
  $("jobs").hidden = jobs.length === 0;
  if (state.details !== null && state.jobs.has(state.details)) fillDetails(state.jobs.get(state.details));
}

// ---------------------------------------------------------------- fitted pens
const PENS_EVERY_MS = 10000;  // profiles change only when a pen is fitted

function penRow(pen) {
  const swatch = el("span", { class: "swatch", title: pen.colour });
  swatch.style.background = pen.colour;  // through the CSSOM, as the CSP asks
  const nominal = pen.nominal_nib_mm ? ` (nominal ${pen.nominal_nib_mm} mm)` : "";
  return el("tr", { "data-pen": pen.name },
    el("td", { class: "pen-name" }, swatch, pen.name),
    el("td", {}, `${pen.nib_mm} mm`, el("span", { class: "muted small" }, nominal)),
    el("td", {}, `${Math.round(pen.darkness * 100)} %`),
    el("td", {}, pen.residual ? pen.residual.toFixed(3) : "–"),
    el("td", {}, pen.fitted_at || "–"),
    el("td", {}, pen.plotters.join(", ") || "–"));
}

async function loadPens() {
  if (state.pensAt && Date.now() - state.pensAt < PENS_EVERY_MS) return;
  state.pensAt = Date.now();
  const pens = await api("GET", "/api/pens");
  $("pen-rows").replaceChildren(...pens.map(penRow));
  $("pen-table").hidden = pens.length === 0;
  $("no-pens").hidden = pens.length > 0;
  $("pen-count").textContent = pens.length ? `${pens.length} fitted` : "";
}

// ---------------------------------------------------------------- one job's details
// [artefact, caption, shown through the thumbnail endpoint (widens thin pen lines)]
const PICTURES = [["preview", "optimiser preview (target | strokes)", false],
                  ["render", "plot render", true], ["loss_png", "loss curve", false]];

function showDetails(id) {
  state.details = id;
  $("details").dataset.key = "";
  const job = state.jobs.get(id);
  if (job) fillDetails(job);
  $("details").hidden = false;
  $("details").scrollIntoView({ behavior: "smooth", block: "start" });
}

function fillDetails(job) {
  const key = rowKey(job);
  if ($("details").dataset.key === key) return;
  $("details").dataset.key = key;
  $("details-title").textContent = `#${job.id} ${job.name} — ${words(job.state)}`;
  $("details-error").hidden = !job.error;
  $("details-error").textContent = job.error || "";
  const gallery = $("details-pictures");
  gallery.replaceChildren();
  for (const [name, label, small] of PICTURES) {
    if (!job.artefacts[name]) continue;
    const img = el("img", { alt: label, "data-artefact": name });
    const path = small ? `/api/jobs/${job.id}/thumbnail/${name}` : job.artefacts[name];
    setImage(img, `${small ? "thumb" : "full"}:${job.id}:${name}:${job.state}:${job.plot.attempts}`, path);
    gallery.append(el("figure", {}, img, el("figcaption", {}, label)));
  }
  if (!gallery.children.length) gallery.append(el("p", { class: "muted" }, "No pictures yet."));
  const dl = $("details-figures");
  dl.replaceChildren();
  const rows = [["pipeline", job.pipeline || job.kind], ["created", clock(job.created)],
                ["finished", job.finished ? clock(job.finished) : "–"], ...figures(job, true)];
  for (const [l, v] of rows) dl.append(el("dt", {}, l), el("dd", {}, v));
}

// ---------------------------------------------------------------- upload and camera
function chooseFile(file) {
  state.file = file || null;
  $("drop-text").textContent = file ? file.name : "Drop a picture here or choose a file";
  $("drop-zone").classList.toggle("chosen", !!file);
  $("upload-button").disabled = !file;
}

async function upload(ev) {
  ev.preventDefault();
  if (!state.file || state.busy) return;
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  if ($("pipeline").value) form.append("pipeline", $("pipeline").value);
  state.busy = true;
  $("upload-button").disabled = true;
  try {
    const job = await api("POST", "/jobs", form);
    hideMessage();
    chooseFile(null);
    $("file-input").value = "";
    $("drop-text").textContent = `Queued as job #${job.id}. Drop another picture here or choose a file`;
  } catch (e) {
    if (e.status !== 401) showMessage("upload: " + e.message);
    $("upload-button").disabled = false;
  } finally {
    state.busy = false;
  }
  tick();
}

async function loadPipelines() {
  const list = await api("GET", "/api/pipelines");
  const select = $("pipeline");
  select.replaceChildren(...list.map((p) => el("option", { value: p.name }, p.name + (p.default ? " (default)" : ""))));
  const chosen = list.find((p) => p.default) || list[0];
  if (chosen) select.value = chosen.name;
  const describe = () => {
    const p = list.find((x) => x.name === select.value);
    $("pipeline-desc").textContent = p ? p.description : "";
  };
  select.onchange = describe;
  describe();
  state.pipelinesLoaded = true;
}

function confirmButton(label, path) {
  // a second click within 4 s confirms: a stray click must not end a plot
  const button = el("button", { type: "button", class: "danger", "data-action": label.toLowerCase() }, label);
  let armed = null;
  button.addEventListener("click", () => {
    if (armed) {
      clearTimeout(armed);
      armed = null;
      button.textContent = label;
      command(path, label);
      return;
    }
    button.textContent = "Sure? Click again";
    armed = setTimeout(() => { armed = null; button.textContent = label; }, 4000);
  });
  return button;
}

// ---------------------------------------------------------------- polling
let ticking = false;
async function tick() {
  if (ticking) return;
  ticking = true;
  try {
    if (!state.pipelinesLoaded) await loadPipelines();
    const [health, live, jobs] = await Promise.all([
      fetch("/health", { cache: "no-store" }).then((r) => r.json()),
      api("GET", "/api/live"), api("GET", "/jobs?limit=50")]);
    $("login").hidden = true;
    $("logout").hidden = !sessionStorage.getItem(TOKEN_KEY);
    $("daemon-info").textContent = `v${health.version}${health.dry_run ? " · dry-run (simulated plotter)" : ""}`;
    const cam = (live.plotter || {}).camera || {};
    $("camera-state").textContent = `camera: ${cam.state || "off"}${cam.error ? " — " + cam.error : ""}`;
    const counts = (live.plotter || {}).jobs || {};
    $("job-counts").textContent = Object.entries(counts).map(([k, v]) => `${v} ${words(k)}`).join(" · ");
    showPlotters(live.plotters);
    await showLive(live);
    showJobs(jobs);
    await loadPens();
    document.body.dataset.ready = "1";
  } catch (e) {
    if (e.status !== 401) {
      $("plotter-state").dataset.state = "disconnected";
      $("plotter-state").textContent = "daemon not answering";
    }
  } finally {
    ticking = false;
  }
}

function setup() {
  const zone = $("drop-zone");
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) chooseFile(e.dataTransfer.files[0]);
  });
  $("file-input").addEventListener("change", (e) => chooseFile(e.target.files[0]));
  $("upload-form").addEventListener("submit", upload);
  $("btn-pause").addEventListener("click", () => command(forPlotter("/plot/pause", state.livePlotter), "Pause"));
  $("btn-resume").addEventListener("click", () => command(forPlotter("/plot/resume", state.livePlotter), "Resume"));
  const cancel = confirmButton("Cancel plot", "/plot/cancel");
  cancel.id = "btn-cancel";
  $("btn-cancel").replaceWith(cancel);
  $("btn-paper").addEventListener("click", () => command(forPlotter(OPERATOR_ACTIONS.paper.path, state.livePlotter), "Paper changed"));
  $("btn-pen").addEventListener("click", () => command(forPlotter(OPERATOR_ACTIONS.pen.path, state.livePlotter), "Pen changed"));
  $("btn-capture").addEventListener("click", () => command("/camera/capture", "Camera"));
  $("message-close").addEventListener("click", hideMessage);
  $("details-close").addEventListener("click", () => { state.details = null; $("details").hidden = true; });
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    state.images.clear();
    tick();
  });
  $("logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); });
  // a page dropped anywhere else must not make the browser navigate away to the file
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  tick();
  setInterval(tick, POLL_MS);
}

document.addEventListener("DOMContentLoaded", setup);
