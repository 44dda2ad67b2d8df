// The explorer page: fills the form from /api/info, runs a generation and follows its server-sent events,
// and redraws the forward process when the t slider moves. Every server error is shown as its one line.
"use strict";
const $ = (id) => document.getElementById(id);
let job = null, events = null, previewBusy = false, previewWanted = null, forwardTimer = null;

async function api(url, options) {
  const r = await fetch(url, options);
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new Error(body && body.error ? body.error : `HTTP ${r.status}`);
  return body;
}

function show(id, message) { $(id).textContent = message || ""; $(id).hidden = !message; }

function number(id) {  // the raw number typed (or null): the server, not the page, decides what is allowed
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value; o.textContent = text; select.appendChild(o);
}

async function init() {
  let info;
  try { info = await api("/api/info"); } catch (e) { show("error", e.message); return; }
  $("run").textContent = info.run;
  $("about").textContent = `${info.data} (${info.kind} ${info.shape.join("×")}), ${info.path} path` +
    (info.num_classes ? `, ${info.num_classes} classes` : "") +
    ` — at most ${info.limits.max_steps} steps and ${info.limits.max_batch} samples`;
  for (const s of info.samplers) option($("sampler"), s.name, s.name);
  $("sampler").value = info.default_sampler;
  option($("grid"), "", "default (karras on ve, else uniform)");
  for (const g of info.limits.grids) option($("grid"), g, g);
  $("pictures").textContent = info.pictures.length ? "the run's pictures: " : "";
  for (const p of info.pictures) {
    const a = document.createElement("a");
    a.href = `/files/run/${p}`; a.textContent = p; a.target = "_blank";
    $("pictures").append(a, " ");
  }
  if (info.num_classes) {
    for (let c = 0; c < info.num_classes; c++) option($("label"), c, String(c));
    $("class-field").hidden = false;
    $("guidance-field").hidden = !info.guidance;
  }
  $("generate").addEventListener("click", generate);
  $("cancel").addEventListener("click", cancel);
  $("t").addEventListener("input", scheduleForward);
  $("fseed").addEventListener("change", scheduleForward);
  document.body.dataset.ready = "1";
  updateForward();
}

async function generate() {
  show("error", "");
  const body = { sampler: $("sampler").value, steps: number("steps"), grid: $("grid").value,
                 n: number("n"), seed: number("seed") };
  if ($("label").value !== "") {
    body.label = Number($("label").value);
    if (!$("guidance-field").hidden) body.guidance = number("guidance");  // 1 = unguided
  }
  if ($("grid").value === "") delete body.grid;  // the sampler's own default grid
  let st;
  try {
    st = await api("/api/generate", { method: "POST", headers: { "Content-Type": "application/json" },
                                      body: JSON.stringify(body) });
  } catch (e) { show("error", e.message); return; }
  follow(st);
}

function follow(st) {
  if (events) events.close();
  job = st.id;
  $("progress").max = st.steps; $("progress").value = 0;
  $("status").textContent = `queued (${st.steps} steps)`;
  $("cancel").disabled = false;
  $("result").removeAttribute("src"); $("result").dataset.job = "";
  events = new EventSource(`/api/jobs/${job}/events`);
  events.addEventListener("step", (ev) => {
    const d = JSON.parse(ev.data);
    $("progress").value = d.step;
    $("status").textContent = `step ${d.step} / ${d.steps}`;
    preview(d.step);
  });
  for (const state of ["done", "cancelled", "error"]) {
    events.addEventListener(state, (ev) => finish(JSON.parse(ev.data)));
  }
  events.onerror = () => { if (events && events.readyState === EventSource.CLOSED) show("error", "lost the server"); };
}

function preview(step) {  // one picture in flight at a time; the newest step wins
  if (previewBusy) { previewWanted = step; return; }
  previewBusy = true;
  const img = $("preview");
  img.onload = img.onerror = () => {
    previewBusy = false;
    if (previewWanted !== null) { const s = previewWanted; previewWanted = null; preview(s); }
  };
  img.src = `/api/jobs/${job}/preview.png?what=${$("what").value}&step=${step}`;
}

function finish(st) {
  events.close(); events = null;
  $("cancel").disabled = true;
  if (st.state === "done") {
    $("result").onload = () => { $("result").dataset.job = st.id; };
    $("result").src = st.image;
    $("result-caption").innerHTML = `samples (<a href="${st.image}">png</a>, <a href="${st.array}">npz</a>)`;
    $("status").textContent = `done: ${st.steps} steps in ${st.seconds} s`;
    preview(st.step);
  } else if (st.state === "cancelled") {
    $("status").textContent = `cancelled after step ${st.step}`;
  } else {
    $("status").textContent = "failed";
    show("error", st.error);
  }
}

async function cancel() {
  if (!job) return;
  try { await api(`/api/jobs/${job}/cancel`, { method: "POST" }); } catch (e) { show("error", e.message); }
}

function scheduleForward() {
  $("t-value").textContent = Number($("t").value).toFixed(2);
  clearTimeout(forwardTimer);
  forwardTimer = setTimeout(updateForward, 60);
}

async function updateForward() {
  const q = `u=${encodeURIComponent($("t").value)}&seed=${encodeURIComponent($("fseed").value.trim())}`;
  let st;
  try { st = await api(`/api/forward?${q}`); } catch (e) { show("forward-error", e.message); return; }
  show("forward-error", "");
  const lam = st.log_snr === null ? "±∞" : st.log_snr.toFixed(2);
  $("forward-info").textContent = `t = ${st.t.toPrecision(3)}, α = ${st.alpha.toFixed(3)}, ` +
    `σ = ${st.sigma.toFixed(3)}, λ = log(α²/σ²) = ${lam}; Σ_0: ${st.source}`;
  const img = $("forward");
  img.dataset.state = "loading";
  img.onload = () => { img.dataset.state = "loaded"; img.dataset.u = String(st.u); };
  img.src = `/api/forward.png?${q}`;
}

document.addEventListener("DOMContentLoaded", init);
