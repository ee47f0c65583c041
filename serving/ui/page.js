// mnist-tfx's page: draw a digit for the served model; the runs and what is live.
// No library and nothing fetched but this server's own API: predictions go
// through TF Serving's REST API like any client's; the rest is under /ui/api/.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const SIZE = 28, BOX = 20, INK_THRESHOLD = 25;  // as `mnist-tfx predict` (serving/client.py)
  // What the page last sent and was answered (tests and the curious read it).
  const state = { name: null, target: null, pixels: null, answer: null, answered: 0,
                  pending: false, again: false, drawing: false, last: null };
  window.mnistPage = state;

  // --- the drawing pad -----------------------------------------------------
  const pad = $("pad");
  const ctx = pad.getContext("2d", { willReadFrequently: true });

  function clearPad() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, pad.width, pad.height);
    state.pixels = null;
    state.answer = null;
    $("prediction").textContent = "–";
    showProbabilities(null);
    showSeen(null);
  }

  function point(event) {
    const box = pad.getBoundingClientRect();
    return [(event.clientX - box.left) * pad.width / box.width,
            (event.clientY - box.top) * pad.height / box.height];
  }

  function stroke(from, to) {
    ctx.strokeStyle = "#000";
    ctx.lineWidth = pad.width / 12;  // about MNIST's stroke once fit into 20x20
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from[0], from[1]);
    ctx.lineTo(to[0], to[1]);
    ctx.stroke();
  }

  pad.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    state.drawing = true;
    state.last = point(event);
    stroke(state.last, state.last);  // a tap is a dot
    predictSoon();
  });
  pad.addEventListener("pointermove", (event) => {
    if (!state.drawing) return;
    const here = point(event);
    stroke(state.last, here);
    state.last = here;
    predictSoon();
  });
  for (const name of ["pointerup", "pointercancel"]) {
    pad.addEventListener(name, () => {
      if (!state.drawing) return;
      state.drawing = false;
      predictSoon();
    });
  }
  $("clear").addEventListener("click", clearPad);
  document.addEventListener("keydown", (event) => {
    if ((event.key === "Escape" || event.key === "Delete") &&
        document.activeElement.tagName !== "SELECT") {
      clearPad();
    }
  });

  // --- preprocessing, as MNIST's digits were made (serving/client.py) -----
  function roundHalfEven(x) {  // Python's round()
    const r = Math.round(x);
    return (Math.abs(x % 1) === 0.5 && r % 2 !== 0) ? r - 1 : r;
  }

  // Area-average weights taking n samples to m: [[source, weight], ...] per target.
  function weights(n, m) {
    const f = n / m, out = [];
    for (let t = 0; t < m; t++) {
      const a = t * f, b = (t + 1) * f, list = [];
      for (let s = Math.floor(a); s < Math.ceil(b) && s < n; s++) {
        const w = Math.min(b, s + 1) - Math.max(a, s);
        if (w > 0) list.push([s, w / f]);
      }
      out.push(list);
    }
    return out;
  }

  // The 784 grey levels (0-255 integers, ink high) the model is sent, or null
  // for a blank pad: crop the ink, fit it into 20x20 keeping its aspect,
  // place it in 28x28 and shift it so that its centre of mass is the centre.
  function mnistPixels() {
    const W = pad.width, H = pad.height;
    const rgba = ctx.getImageData(0, 0, W, H).data;
    const grey = new Float32Array(W * H);
    let max = 0;
    for (let i = 0; i < W * H; i++) {
      grey[i] = 255 - rgba[4 * i];  // dark ink on white paper
      if (grey[i] > max) max = grey[i];
    }
    if (max <= 0) return null;
    let r0 = H, r1 = -1, c0 = W, c1 = -1;
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const v = grey[y * W + x] * (255 / max);
        grey[y * W + x] = v;
        if (v > INK_THRESHOLD) {
          if (y < r0) r0 = y;
          if (y > r1) r1 = y;
          if (x < c0) c0 = x;
          if (x > c1) c1 = x;
        }
      }
    }
    if (r1 < 0) return null;
    const h = r1 - r0 + 1, w = c1 - c0 + 1, scale = BOX / Math.max(h, w);
    const sw = Math.max(1, roundHalfEven(w * scale)), sh = Math.max(1, roundHalfEven(h * scale));
    const wy = weights(h, sh), wx = weights(w, sw);
    const rows = new Float32Array(sh * w);  // resampled down the rows first
    for (let ty = 0; ty < sh; ty++) {
      for (let x = 0; x < w; x++) {
        let v = 0;
        for (const [s, k] of wy[ty]) v += k * grey[(r0 + s) * W + c0 + x];
        rows[ty * w + x] = v;
      }
    }
    const placed = new Float32Array(SIZE * SIZE);
    const top = Math.floor((SIZE - sh) / 2), left = Math.floor((SIZE - sw) / 2);
    let mass = 0, my = 0, mx = 0;
    for (let ty = 0; ty < sh; ty++) {
      for (let tx = 0; tx < sw; tx++) {
        let v = 0;
        for (const [s, k] of wx[tx]) v += k * rows[ty * w + s];
        v = Math.min(255, Math.max(0, v));
        placed[(top + ty) * SIZE + left + tx] = v;
        mass += v;
        my += (top + ty) * v;
        mx += (left + tx) * v;
      }
    }
    const dy = roundHalfEven(13.5 - my / mass), dx = roundHalfEven(13.5 - mx / mass);
    const pixels = new Array(SIZE * SIZE).fill(0);
    for (let y = 0; y < SIZE; y++) {
      for (let x = 0; x < SIZE; x++) {
        const to = (((y + dy) % SIZE + SIZE) % SIZE) * SIZE + (((x + dx) % SIZE + SIZE) % SIZE);
        pixels[to] = Math.floor(placed[y * SIZE + x]);  // numpy's uint8 cast
      }
    }
    return pixels;
  }

  // --- asking the served model ---------------------------------------------
  let timer = null;
  function predictSoon() {  // at most one request in flight; the newest drawing wins
    if (timer === null) timer = setTimeout(() => { timer = null; predict(); }, 60);
  }

  async function predict() {
    if (state.pending) { state.again = true; return; }
    const pixels = mnistPixels();
    if (pixels === null || state.target === null) return;
    state.pending = true;
    const target = state.target;
    try {
      const answer = await post(target + ":predict", { instances: [pixels] });
      const probabilities = answer.predictions[0].probabilities;
      state.pixels = pixels;
      state.answer = { target, probabilities };
      state.answered += 1;
      const top = probabilities.indexOf(Math.max(...probabilities));
      $("prediction").textContent = String(top);
      showProbabilities(probabilities);
      showSeen(pixels);
      showError("draw-error", null);
    } catch (e) {
      showError("draw-error", `The model did not answer: ${e.message}`);
    } finally {
      state.pending = false;
      if (state.again) { state.again = false; predictSoon(); }
    }
  }

  async function post(url, body) {
    const response = await fetch(url, { method: "POST", body: JSON.stringify(body),
                                        headers: { "content-type": "application/json" } });
    return answerOf(response);
  }

  async function get(url) {
    return answerOf(await fetch(url, { headers: { accept: "application/json" } }));
  }

  async function answerOf(response) {
    let body;
    try { body = await response.json(); } catch (e) { body = {}; }
    if (!response.ok || body.error) {
      throw new Error(body.error || `HTTP ${response.status}`);
    }
    return body;
  }

  function showProbabilities(probabilities) {
    const body = $("probabilities").tBodies[0];
    body.textContent = "";
    const top = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
    for (let digit = 0; digit < 10; digit++) {
      const p = probabilities ? probabilities[digit] : 0;
      const row = body.insertRow();
      row.dataset.digit = String(digit);
      row.dataset.value = probabilities ? String(p) : "";
      if (digit === top) row.className = "top";
      row.insertCell().textContent = String(digit);
      const value = row.insertCell();
      value.className = "value";
      value.textContent = probabilities ? p.toFixed(4) : "–";
      const bar = row.insertCell();
      bar.className = "bar";
      const span = document.createElement("span");
      span.style.width = `${Math.round(100 * p)}%`;
      bar.appendChild(span);
    }
  }

  function showSeen(pixels) {
    const seen = $("seen").getContext("2d");
    const image = seen.createImageData(SIZE, SIZE);
    for (let i = 0; i < SIZE * SIZE; i++) {
      const v = pixels ? pixels[i] : 0;
      image.data.set([v, v, v, 255], 4 * i);
    }
    seen.putImageData(image, 0, 0);
  }

  function showError(id, message) {
    const node = $(id);
    node.hidden = !message;
    node.textContent = message || "";
  }

  // --- what is served: versions, labels, lineage ---------------------------
  function targetOf(choice) {
    const base = `/v1/models/${encodeURIComponent(state.name)}`;
    if (choice.startsWith("version:")) return `${base}/versions/${choice.slice(8)}`;
    if (choice.startsWith("label:")) return `${base}/labels/${encodeURIComponent(choice.slice(6))}`;
    return base;
  }

  let served = { versions: [], labels: {} };
  async function refreshModels() {
    try {
      served = await get("api/models");
    } catch (e) {
      $("serving").textContent = `No answer from the server: ${e.message}`;
      return;
    }
    state.name = served.name;
    const select = $("version");
    const chosen = select.value;
    const options = [["", "the newest available version"]];
    for (const v of served.versions) options.push([`version:${v.version}`, `version ${v.version} (${v.state})`]);
    for (const [label, v] of Object.entries(served.labels)) options.push([`label:${label}`, `label ${label} (version ${v})`]);
    const same = select.options.length === options.length &&
      options.every(([value, text], i) => select.options[i].value === value && select.options[i].text === text);
    if (!same) {
      select.textContent = "";
      for (const [value, text] of options) select.add(new Option(text, value));
      if (options.some(([value]) => value === chosen)) select.value = chosen;
    }
    const available = served.versions.filter((v) => v.state === "AVAILABLE").map((v) => v.version);
    $("serving").textContent = available.length
      ? `Serving ${served.name}: version${available.length > 1 ? "s" : ""} ${available.join(", ")}` +
        (Object.keys(served.labels).length ? `; labels ${Object.entries(served.labels).map(([l, v]) => `${l} → ${v}`).join(", ")}` : "")
      : `Serving ${served.name}: no version is available yet`;
    choose();
  }

  function servedVersion() {
    const choice = $("version").value;
    if (choice.startsWith("version:")) return Number(choice.slice(8));
    if (choice.startsWith("label:")) return served.labels[choice.slice(6)];
    const available = served.versions.filter((v) => v.state === "AVAILABLE").map((v) => v.version);
    return available.length ? Math.max(...available) : null;
  }

  let shownLineage = undefined;
  function choose() {
    state.target = targetOf($("version").value);
    $("endpoint").textContent = `POST ${state.target}:predict`;
    const version = servedVersion();
    if (version !== shownLineage) {
      shownLineage = version;
      refreshLineage(version);
    }
  }
  $("version").addEventListener("change", () => { choose(); predictSoon(); });

  function add(list, term, text) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    if (text instanceof Node) dd.appendChild(text); else dd.textContent = text;
    list.append(dt, dd);
  }

  function where(node) {
    return node ? `run ${node.run}, ${node.time} (${node.node} execution ${node.execution}, artifact ${node.artifact})` : "–";
  }

  async function refreshLineage(version) {
    const box = $("lineage");
    if (version === null || version === undefined) {
      box.textContent = "No version is served yet.";
      return;
    }
    let chain;
    try {
      chain = await get(`api/lineage?version=${version}`);
    } catch (e) {
      box.textContent = `No lineage for version ${version}: ${e.message}`;
      return;
    }
    const list = document.createElement("dl");
    add(list, "version", `${chain.version} at ${chain.path}`);
    add(list, "pushed", where(chain.push));
    const b = chain.blessing;
    add(list, "blessing", `${b.blessed ? "blessed" : "not blessed"}, accuracy ${b.accuracy}; ${where(b)}`);
    if (b.baseline) add(list, "compared with", `accuracy ${b.baseline.accuracy}; ${where(b.baseline)}`);
    const hp = chain.model.hyperparameters || {};
    add(list, "model", `${hp.model} (hidden layers ${JSON.stringify(hp.hidden_units)}, ` +
        `${hp.epochs} epochs, ${hp.optimizer}, learning rate ${hp.learning_rate}); ${where(chain.model)}`);
    add(list, "transform", `code ${chain.transform_graph.code}; ${where(chain.transform_graph)}`);
    const counts = Object.entries(chain.examples.counts || {}).map(([s, n]) => `${s} ${n}`).join(", ");
    add(list, "examples", `${counts} from ${chain.examples.input_base}; ${where(chain.examples)}`);
    for (const [file, digest] of Object.entries(chain.examples.files || {})) {
      add(list, file, `SHA-256 ${digest.sha256}`);
    }
    box.textContent = "";
    box.appendChild(list);
  }

  // --- traffic -------------------------------------------------------------
  async function refreshTraffic() {
    let found;
    try {
      found = await get("api/metrics");
    } catch (e) {
      $("traffic-summary").textContent = `No metrics: ${e.message}`;
      return;
    }
    const steps = found.steps;
    const requests = steps.reduce((n, s) => n + s.requests, 0);
    const errors = steps.reduce((n, s) => n + s.errors, 0);
    const timed = steps.filter((s) => s.latency_ms !== null);
    const okCount = timed.reduce((n, s) => n + s.requests - s.errors, 0);
    const latency = okCount ? timed.reduce((t, s) => t + s.latency_ms * (s.requests - s.errors), 0) / okCount : null;
    const last = steps[steps.length - 1];
    $("traffic-summary").textContent =
      `${requests} requests (${errors} errors) in the last ${steps.length * found.step_seconds / 60} minutes; ` +
      `mean latency ${latency === null ? "–" : latency.toFixed(2) + " ms"}; ` +
      `now ${last.rate.toFixed(1)} requests/s`;
    const top = Math.max(1, ...steps.map((s) => s.requests));
    const bars = $("traffic-bars");
    bars.textContent = "";
    for (const s of steps) {
      const bar = document.createElement("span");
      bar.style.height = `${Math.round(60 * s.requests / top)}px`;
      if (s.errors) bar.className = "errors";
      bar.title = `${new Date(s.start * 1000).toLocaleTimeString()}: ${s.requests} requests, ${s.errors} errors`;
      bars.appendChild(bar);
    }
  }

  // --- runs ----------------------------------------------------------------
  async function refreshRuns() {
    let found;
    try {
      found = await get("api/runs");
    } catch (e) {
      $("runs-note").textContent = `No runs: ${e.message}`;
      return;
    }
    $("runs-note").textContent = found.note ||
      `${found.runs.length} run${found.runs.length === 1 ? "" : "s"} in ML Metadata, newest first`;
    const body = $("runs").tBodies[0];
    body.textContent = "";
    for (const r of found.runs) {
      const row = body.insertRow();
      row.dataset.run = r.run;
      const cells = [
        r.run, r.time, r.status + (r.stopped_in ? ` in ${r.stopped_in}` : ""), r.model || "–",
        r.accuracy === null ? "–" : r.accuracy.toFixed(4),
        r.blessed === null ? "–" : (r.blessed ? "yes" : "no"), r.why || "",
        r.pushed_version === null ? "–" : String(r.pushed_version) + (r.pushed_new ? "" : " (already there)")];
      const names = ["run", "time", "status", "model", "accuracy", "blessed", "why", "pushed"];
      cells.forEach((text, i) => {
        const cell = row.insertCell();
        cell.className = names[i];
        cell.textContent = text;
      });
      row.cells[4].dataset.value = r.accuracy === null ? "" : String(r.accuracy);
      const report = row.insertCell();
      report.className = "report";
      if (found.reports[r.run]) {
        const link = document.createElement("a");
        link.href = found.reports[r.run];
        link.textContent = "report";
        report.appendChild(link);
      } else {
        report.textContent = "–";
      }
    }
  }

  clearPad();
  refreshModels().then(() => Promise.all([refreshRuns(), refreshTraffic()])).finally(() => {
    document.body.dataset.ready = "true";
  });
  setInterval(refreshModels, 10000);
  setInterval(refreshTraffic, 5000);
  setInterval(refreshRuns, 15000);
})();
