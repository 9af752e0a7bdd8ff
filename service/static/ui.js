// The page of GET / (service/ui.py). Everything it shows comes from the public API (/models,
// /classify, /detect), called with the key of the API key field when there is one.
"use strict";

(() => {
  const KEY_STORE = "dat-serve.api-key";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const COLOURS = ["#ff3b30", "#ffd60a", "#30d158", "#0a84ff", "#bf5af2", "#ff9f0a", "#64d2ff",
                   "#ff375f", "#ac8e68", "#8e8e93"];
  const $ = (id) => document.getElementById(id);

  const state = {
    models: {},                 // "classify" / "detect" -> its entry of GET /models
    task: "classify",
    picture: null,              // {blob, name, url, width, height} (size: as the browser decoded it)
    results: {},                // task -> the last response for the current picture
    pointsRefused: null,        // the server's reason, when it refused ?points=true
    masksRefused: null,         // the server's reason, when it refused ?masks=polygon
    run: 0,                     // a newer request wins over a slower older one
  };

  // -- the API ----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, type, message, requestId) {
      super(message);
      Object.assign(this, {status, type, requestId});
    }
  }

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers.set("Authorization", `Bearer ${key}`);
    let response;
    try {
      response = await fetch(path, {...options, headers});  // relative: works under a path prefix
    } catch (err) {
      throw new ApiError(0, "network_error", `the server could not be reached (${err.message})`);
    }
    if (response.ok) return response.json();
    let error = {};
    try {
      error = (await response.json()).error || {};  // {"error": {status, type, message, request_id}}
    } catch { /* not our JSON (a proxy's page): the status line says enough */ }
    throw new ApiError(response.status, error.type || response.statusText || "error",
                       error.message || `HTTP ${response.status}`,
                       error.request_id || response.headers.get("X-Request-ID"));
  }

  function showError(err, doing) {
    const box = $("error");
    box.replaceChildren();
    const head = document.createElement("strong");
    head.textContent = err.status ? `${err.status} ${err.type}` : err.type || "error";
    const message = document.createElement("span");
    message.textContent = ` ${doing}: ${err.message}`;
    box.append(head, message);
    if (err.requestId) {
      const id = document.createElement("small");
      id.textContent = `request id ${err.requestId}`;
      box.append(id);
    }
    box.hidden = false;
    if (err.status === 401) askForKey(err.message);
  }

  const hideError = () => { $("error").hidden = true; };
  const setStatus = (text) => { $("status").textContent = text; };

  // -- API key ----------------------------------------------------------------------------

  function askForKey(reason) {
    $("key-box").open = true;
    $("key-note").textContent = `This server needs an API key (${reason}). It stays in this tab's session storage.`;
    $("key-box").classList.add("wanted");
    $("api-key").focus();
  }

  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORE, key);
    else sessionStorage.removeItem(KEY_STORE);
    $("key-box").classList.remove("wanted");
    if (await loadModels()) {
      $("key-box").open = false;
      if (state.picture && !state.results[state.task]) await run();
    }
  });

  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    $("api-key").value = "";
  });

  // -- the models -------------------------------------------------------------------------

  async function loadModels() {
    let body;
    try {
      body = await api("models");
    } catch (err) {
      state.models = {};
      renderCard();
      showError(err, "reading /models");
      return false;
    }
    hideError();
    state.models = {};
    for (const model of body.models) state.models[model.task === "classification" ? "classify" : "detect"] = model;
    for (const radio of document.querySelectorAll("input[name=task]")) {
      radio.disabled = !state.models[radio.value];
      radio.parentElement.title = radio.disabled ? "not served by this server" : "";
    }
    if (!state.models[state.task] && state.models.classify) selectTask("classify", false);
    if (body.models.some((m) => !m.ready)) setTimeout(loadModels, 2000);  // still loading
    renderCard();
    renderPointControls();
    renderMaskControls();
    return true;
  }

  function renderCard() {
    const card = $("card");
    card.replaceChildren();
    const model = state.models[state.task];
    const row = (name, value) => {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = name;
      dd.textContent = value;
      card.append(dt, dd);
    };
    if (!model) {
      row("status", Object.keys(state.models).length ? "not served here" : "unknown (GET /models failed)");
      return;
    }
    const pre = model.preprocessing || {};
    const batching = model.batching;
    row("name", model.name);
    row("task", model.task + (model.ready ? "" : " (loading)"));
    row("version", model.version ?? "-");
    row("backend", `${model.backend} on ${model.device}`);
    row("precision", model.precision);
    row("input size", model.input_size ? `${model.input_size} x ${model.input_size}` : "-");
    row("preprocessing", pre.mode === "letterbox" ? `fit into the square keeping the aspect ratio, pad right and bottom (${pre.interpolation})`
      : `resize to ${pre.resize_size} x ${pre.resize_size}, centre crop (${pre.interpolation})`);
    row("labels", String(model.num_labels ?? "-"));
    if (state.task === "classify") row("points", model.supports_points ? "yes (?points=true)" : "no");
    else row("masks", hasMasks() ? "yes (?masks=polygon)" : "no (boxes only)");
    row("batching", `up to ${batching.max_batch_size} images per batch, waits at most ` +
        `${batching.max_queue_delay_ms} ms; queue of ${batching.max_queue_size} images; ` +
        `${batching.max_images_per_request} images per request; deadline ${batching.default_timeout_ms} ms`);
  }

  // -- the picture ------------------------------------------------------------------------

  async function setPicture(blob, name, task) {
    if (state.picture) URL.revokeObjectURL(state.picture.url);
    const url = URL.createObjectURL(blob);
    state.picture = {blob, name, url, width: 0, height: 0};
    state.results = {};
    state.pointsRefused = null;
    state.masksRefused = null;  // a smaller picture may fit where the last did not
    renderMaskControls();
    const image = new Image();
    image.src = url;
    try {
      await image.decode();
      Object.assign(state.picture, {width: image.naturalWidth, height: image.naturalHeight});
    } catch { /* the browser cannot show it: the server says why it cannot either */ }
    if (task && state.models[task]) selectTask(task, false);
    render();
    await run();
  }

  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    $("file").value = "";  // choosing the same file again is a change too
    if (file) setPicture(file, file.name);
  });

  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) setPicture(file, file.name);
  });
  // a file dropped beside the drop zone must not make the browser navigate to it
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => event.preventDefault());

  for (const button of document.querySelectorAll("button.sample")) {
    button.addEventListener("click", async () => {
      const response = await fetch(`ui/samples/${button.dataset.name}`);
      if (!response.ok) {
        showError(new ApiError(response.status, "not_found", response.statusText), `GET ${response.url}`);
        return;
      }
      setPicture(await response.blob(), button.dataset.name, button.dataset.task);
    });
  }

  // -- requests ---------------------------------------------------------------------------

  function selectTask(task, rerun = true) {
    state.task = task;
    document.querySelector(`input[name=task][value=${task}]`).checked = true;
    $("classify-panel").hidden = task !== "classify";
    $("detect-panel").hidden = task !== "detect";
    renderCard();
    render();
    if (rerun && state.picture && !state.results[task]) run();
  }

  for (const radio of document.querySelectorAll("input[name=task]")) {
    radio.addEventListener("change", () => selectTask(radio.value));
  }

  const pointsWanted = () => Boolean(state.models.classify?.supports_points) && !state.pointsRefused;
  const hasMasks = () => state.models.detect?.task === "instance_segmentation";
  const masksWanted = () => hasMasks() && $("show-masks").checked && !state.masksRefused;

  async function run() {
    const picture = state.picture;
    if (!picture) return;
    const task = state.task;
    const id = ++state.run;
    const withPoints = task === "classify" && pointsWanted();
    const withMasks = task === "detect" && masksWanted();
    // the detector's own floor: the slider then filters without asking again
    const labels = state.models.classify?.num_labels || 5;
    const query = task === "classify" ? `classify?top_k=${Math.min(5, labels)}${withPoints ? "&points=true" : ""}`
      : `detect?score_threshold=0.05${withMasks ? "&masks=polygon" : ""}`;
    const form = new FormData();
    form.append("file", picture.blob, picture.name);
    setStatus(`${task === "classify" ? "classifying" : "detecting objects in"} ${picture.name}...`);
    try {
      const body = await api(query, {method: "POST", body: form});
      if (id !== state.run) return;
      body.withMasks = withMasks;
      state.results[task] = body;
      hideError();
      setStatus("");
    } catch (err) {
      if (id !== state.run) return;
      setStatus("");
      if (withPoints && err.status === 422 && /points/.test(err.message)) {
        state.pointsRefused = err.message;  // e.g. points disabled on this server: ask without
        renderPointControls();
        return run();
      }
      // masks over the server's max_mask_pixels, or not pasted in time: the boxes without them
      if (withMasks && (err.status === 413 || err.status === 504) && /mask/.test(err.message)) {
        state.masksRefused = err.message;
        renderMaskControls();
        return run();
      }
      delete state.results[task];
      showError(err, `POST /${task}`);
    }
    render();
  }

  // -- drawing ----------------------------------------------------------------------------

  function svg(name, attributes, parent) {
    const element = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
    if (parent) parent.append(element);
    return element;
  }

  function render() {
    if (state.task === "classify") renderPointControls();  // a new response brings its blocks
    draw();
  }

  function draw() {
    const picture = state.picture;
    const view = $("view");
    for (const layer of ["masks", "boxes", "points"]) $(layer).replaceChildren();
    $("top5").replaceChildren();
    $("detections").replaceChildren();
    $("detect-count").textContent = "";
    $("timing").textContent = "";
    const body = state.results[state.task];
    const result = body?.results[0];
    // the server's decoded, upright size is the frame its coordinates are in
    const width = result?.width || picture?.width;
    const height = result?.height || picture?.height;
    if (!picture || !width) {
      view.classList.add("empty");
      return;
    }
    view.classList.remove("empty");
    view.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const shown = $("shown");
    shown.setAttribute("href", picture.url);
    shown.setAttribute("width", width);
    shown.setAttribute("height", height);
    if (!result) return;
    const box = view.getBoundingClientRect();
    // picture pixels per screen pixel: strokes, dots and text keep one screen size
    const perPixel = Math.max(width / box.width, height / box.height);
    const unit = Number.isFinite(perPixel) && perPixel > 0 ? perPixel : 1;
    if (state.task === "classify") {
      renderTop5(result);
      if ($("show-points").checked) drawPoints(result, unit);
    } else {
      drawDetections(result, unit);
    }
    const t = body.timing;
    $("timing").textContent = `${body.model.name} (${body.model.backend}, ${body.model.precision}): ` +
      `${t.total_ms.toFixed(1)} ms in all, ${t.inference_ms.toFixed(1)} ms inference in a batch of ${t.batch_size}`;
  }

  function renderTop5(result) {
    for (const p of result.predictions) {
      const item = document.createElement("li");
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = p.label;
      const bar = document.createElement("span");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.style.width = `${(100 * p.probability).toFixed(2)}%`;  // CSSOM: allowed by the CSP
      bar.append(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = `${(100 * p.probability).toFixed(1)}%`;
      item.append(label, bar, value);
      $("top5").append(item);
    }
  }

  function drawDetections(result, unit) {
    const threshold = Number($("score").value);
    const kept = result.detections.filter((d) => d.score >= threshold);
    $("detect-count").textContent = `${kept.length} of ${result.detections.length} detections ` +
      `(the model keeps none under 0.05)`;
    for (const d of kept) {
      const colour = COLOURS[d.index % COLOURS.length];
      drawMask($("masks"), d, colour);
      const {x1, y1, x2, y2} = d.box;
      const group = svg("g", {class: "detection"}, $("boxes"));
      svg("rect", {class: "box", x: x1, y: y1, width: x2 - x1, height: y2 - y1, stroke: colour,
                   "stroke-width": 2 * unit}, group);
      const size = 13 * unit;
      const text = `${d.label} ${d.score.toFixed(2)}`;
      const back = svg("rect", {class: "tag", x: x1, y: Math.max(0, y1 - size * 1.3), height: size * 1.3,
                                width: size * 0.62 * text.length + 4 * unit, fill: colour}, group);
      const label = svg("text", {class: "box-label", x: x1 + 2 * unit, y: Math.max(0, y1 - size * 1.3) + size,
                                 "font-size": size}, group);
      label.textContent = text;
      back.setAttribute("width", label.getComputedTextLength() + 4 * unit);
      const item = document.createElement("li");
      item.textContent = `${text}  (${x1.toFixed(0)}, ${y1.toFixed(0)})-(${x2.toFixed(0)}, ${y2.toFixed(0)})`;
      $("detections").append(item);
    }
  }

  // A detection's polygons (masks=polygon: flat [x1, y1, x2, y2, ...] lists in picture
  // pixels), filled in its box's colour under the boxes (ui.css makes them see-through).
  function drawMask(layer, detection, colour) {
    if (!$("show-masks").checked || !Array.isArray(detection.segmentation)) return;
    for (const flat of detection.segmentation) {
      const points = [];
      for (let i = 0; i + 1 < flat.length; i += 2) points.push(`${flat[i]},${flat[i + 1]}`);
      svg("polygon", {class: "mask", points: points.join(" "), fill: colour}, layer);
    }
  }

  function renderMaskControls() {
    $("masks-toggle").hidden = !hasMasks();
    $("masks-note").textContent = hasMasks() && state.masksRefused ? `boxes only: ${state.masksRefused}` : "";
  }

  $("show-masks").addEventListener("change", () => {
    const body = state.results.detect;
    if (masksWanted() && state.picture && body && !body.withMasks) {
      delete state.results.detect;
      run();
    } else {
      render();
    }
  });

  $("score").addEventListener("input", () => {
    $("score-value").textContent = Number($("score").value).toFixed(2);
    render();
  });

  // -- where it looked: the D blocks' sampling points ----------------------------------------

  function roundHalfEven(value) {  // Python's round(), as models/transforms.py crops
    const floor = Math.floor(value);
    const rest = value - floor;
    if (rest !== 0.5) return Math.round(value);
    return floor % 2 === 0 ? floor : floor + 1;
  }

  // The stage's feature-map size (rows, columns), which the response does not give. A D block
  // samples height x width points from a map `stride` times larger (v1: stride 1; DAT++:
  // 8, 4, 2, 1 by stage), and the official stems downsample by 4, so stage s has S / 2^(s+2)
  // rows; dat_digits' stem downsamples by 2, with v1's stride 1, so there the block's size is
  // the map's. The larger of the two is exact for every registered model.
  function featureSize(block, inputSize) {
    const official = inputSize / 2 ** (block.stage + 2);
    return [Math.max(block.height, official), Math.max(block.width, official)];
  }

  // Reference points (before the offsets) as the official code makes them: cell centres
  // (i + 0.5) / n in v1, (i + 0.5) / (n - 1) in DAT++, mapped to [-1, 1]. Only DAT++ has D
  // blocks in stages 0 and 1.
  function referenceGrid(rows, columns, plusPlus) {
    const along = (n) => Array.from({length: n}, (_, i) => (i + 0.5) / (plusPlus ? Math.max(n - 1, 1) : n) * 2 - 1);
    const ys = along(rows);
    const xs = along(columns);
    return ys.map((y) => xs.map((x) => [y, x]));
  }

  // Normalised (y, x) of a D block -> pixels of the picture as uploaded (width x height). The
  // points were sampled on the stage's feature map (grid_sample, align_corners=True): -1 and 1
  // are the centres of its first and last cells, each S / rows input pixels tall. The input is
  // the picture resized to R x R (aspect ratio not kept), then centre-cropped to S x S
  // (models/transforms.py, Preprocessing).
  function pointMapper(preprocessing, width, height, rows, columns) {
    const S = preprocessing.input_size;
    const R = preprocessing.resize_size ?? S;
    const crop = roundHalfEven((R - S) / 2);
    const cellY = S / rows;
    const cellX = S / columns;
    return (y, x) => {
      const u = cellX / 2 + (x + 1) / 2 * (S - cellX);  // input pixels, 0 = the crop's left edge
      const v = cellY / 2 + (y + 1) / 2 * (S - cellY);
      return [(u + crop) * width / R, (v + crop) * height / R];
    };
  }

  function renderPointControls() {
    const model = state.models.classify;
    const result = state.results.classify?.results[0];
    const blocks = result?.points || [];
    const checkbox = $("show-points");
    let note = "";
    if (!model) note = "no classifier on this server";
    else if (!model.supports_points) note = `the ${model.backend} backend cannot give them; the torch backend can (--backend torch)`;
    else if (model.preprocessing?.mode === "letterbox") note = "not for letterboxed inputs";
    else if (state.pointsRefused) note = state.pointsRefused;
    else if (!blocks.length) note = "classify a picture to see them";
    $("points-note").textContent = note;
    checkbox.disabled = Boolean(note && note !== "classify a picture to see them");

    const blockSelect = $("points-block");
    const previous = blockSelect.value;
    blockSelect.replaceChildren(...blocks.map((b, i) => new Option(
      `stage ${b.stage}, block ${b.block}: ${b.height} x ${b.width} x ${b.groups} groups`, String(i))));
    if (blocks[previous]) blockSelect.value = previous;
    $("points-choice").hidden = !blocks.length;
    renderGroupOptions();
  }

  function renderGroupOptions() {
    const blocks = state.results.classify?.results[0]?.points || [];
    const block = blocks[Number($("points-block").value)];
    const groupSelect = $("points-group");
    const previous = groupSelect.value;
    const options = block ? [new Option("all", "all"), ...Array.from({length: block.groups}, (_, g) => new Option(String(g), String(g)))] : [];
    groupSelect.replaceChildren(...options);
    if (options.some((o) => o.value === previous)) groupSelect.value = previous;
  }

  function drawPoints(result, unit) {
    const model = state.models.classify;
    const blocks = result.points || [];
    const block = blocks[Number($("points-block").value)];
    if (!model || !block || model.preprocessing?.mode === "letterbox") return;
    const [rows, columns] = featureSize(block, model.input_size);
    const place = pointMapper(model.preprocessing, result.width, result.height, rows, columns);
    const reference = referenceGrid(block.height, block.width, blocks.some((b) => b.stage < 2));
    const chosen = $("points-group").value;
    const groups = chosen === "all" ? Array.from({length: block.groups}, (_, g) => g) : [Number(chosen)];
    const layer = $("points");
    const offsets = svg("g", {class: "offsets"}, layer);
    const refs = svg("g", {class: "references"}, layer);
    const dots = svg("g", {class: "samples"}, layer);
    const r = 3.5 * unit;
    reference.forEach((row) => row.forEach(([y, x]) => {
      const [px, py] = place(y, x);
      svg("rect", {class: "reference", x: px - r, y: py - r, width: 2 * r, height: 2 * r,
                   "stroke-width": 1.5 * unit}, refs);
    }));
    for (const g of groups) {
      const colour = COLOURS[g % COLOURS.length];
      block.yx[g].forEach((row, i) => row.forEach(([y, x], j) => {
        const [px, py] = place(y, x);
        const [rx, ry] = place(...reference[i][j]);
        svg("line", {class: "offset", x1: rx, y1: ry, x2: px, y2: py, stroke: colour,
                     "stroke-width": 1.5 * unit}, offsets);
        svg("circle", {class: "point", cx: px, cy: py, r, fill: colour, "stroke-width": unit,
                       "data-group": g, "data-yx": `${y},${x}`}, dots);
      }));
    }
  }

  $("show-points").addEventListener("change", () => {
    if ($("show-points").checked && state.picture && !state.results.classify?.results[0]?.points && pointsWanted()) {
      delete state.results.classify;
      run();
    } else {
      render();
    }
  });
  $("points-block").addEventListener("change", () => { renderGroupOptions(); render(); });
  $("points-group").addEventListener("change", render);

  let resizing = 0;
  window.addEventListener("resize", () => {
    cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(render);
  });

  // the pure functions, for the console and tests/service/test_ui.py
  window.datUi = {featureSize, pointMapper, referenceGrid, roundHalfEven};

  // -- start ------------------------------------------------------------------------------

  $("api-key").value = sessionStorage.getItem(KEY_STORE) || "";
  selectTask("classify", false);
  loadModels();
})();
