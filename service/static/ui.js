// The page of GET / (service/ui.py). Everything it shows comes from the public API (/models,
// /classify, /detect), called with the key of the API key field when there is one. This
// module holds the page's state and wires its controls; what each answer looks like is drawn
// by predictions.js, detections.js and points.js.

import {api, ApiError, KEY_STORE} from "./api.js";
import {drawDetections, renderMaskControls} from "./detections.js";
import {$} from "./dom.js";
import {renderCard} from "./model-card.js";
import {
  drawPoints, featureSize, pointMapper, referenceGrid, renderGroupOptions, renderPointControls, roundHalfEven,
} from "./points.js";
import {renderTop5} from "./predictions.js";

const state = {
  models: {},                 // "classify" / "detect" -> its entry of GET /models
  task: "classify",
  picture: null,              // {blob, name, url, width, height} (size: as the browser decoded it)
  results: {},                // task -> the last response for the current picture
  pointsRefused: null,        // the server's reason, when it refused ?points=true
  masksRefused: null,         // the server's reason, when it refused ?masks=polygon
  run: 0,                     // a newer request wins over a slower older one
};

const pointsWanted = () => Boolean(state.models.classify?.supports_points) && !state.pointsRefused;
const hasMasks = () => state.models.detect?.task === "instance_segmentation";
const masksWanted = () => hasMasks() && $("show-masks").checked && !state.masksRefused;

// -- errors and status --------------------------------------------------------------------

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

// -- API key ------------------------------------------------------------------------------

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

// -- the models ---------------------------------------------------------------------------

async function loadModels() {
  let body;
  try {
    body = await api("models");
  } catch (err) {
    state.models = {};
    showCard();
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
  showCard();
  showPointControls();
  renderMaskControls(hasMasks(), state.masksRefused);
  return true;
}

function showCard() {
  renderCard(state.models[state.task], state.task, Object.keys(state.models).length > 0, hasMasks());
}

// -- the picture --------------------------------------------------------------------------

async function setPicture(blob, name, task) {
  if (state.picture) URL.revokeObjectURL(state.picture.url);
  const url = URL.createObjectURL(blob);
  state.picture = {blob, name, url, width: 0, height: 0};
  state.results = {};
  state.pointsRefused = null;
  state.masksRefused = null;  // a smaller picture may fit where the last did not
  renderMaskControls(hasMasks(), state.masksRefused);
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

// -- requests -----------------------------------------------------------------------------

function selectTask(task, rerun = true) {
  state.task = task;
  document.querySelector(`input[name=task][value=${task}]`).checked = true;
  $("classify-panel").hidden = task !== "classify";
  $("detect-panel").hidden = task !== "detect";
  showCard();
  render();
  if (rerun && state.picture && !state.results[task]) run();
}

for (const radio of document.querySelectorAll("input[name=task]")) {
  radio.addEventListener("change", () => selectTask(radio.value));
}

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
      showPointControls();
      return run();
    }
    // masks over the server's max_mask_pixels, or not pasted in time: the boxes without them
    if (withMasks && (err.status === 413 || err.status === 504) && /mask/.test(err.message)) {
      state.masksRefused = err.message;
      renderMaskControls(hasMasks(), state.masksRefused);
      return run();
    }
    delete state.results[task];
    showError(err, `POST /${task}`);
  }
  render();
}

// -- drawing ------------------------------------------------------------------------------

const pointBlocks = () => state.results.classify?.results[0]?.points || [];

function showPointControls() {
  renderPointControls(state.models.classify, state.results.classify?.results[0], state.pointsRefused);
}

function render() {
  if (state.task === "classify") showPointControls();  // a new response brings its blocks
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
    if ($("show-points").checked) drawPoints(state.models.classify, result, unit);
  } else {
    drawDetections(result, unit);
  }
  const t = body.timing;
  $("timing").textContent = `${body.model.name} (${body.model.backend}, ${body.model.precision}): ` +
    `${t.total_ms.toFixed(1)} ms in all, ${t.inference_ms.toFixed(1)} ms inference in a batch of ${t.batch_size}`;
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

$("show-points").addEventListener("change", () => {
  if ($("show-points").checked && state.picture && !state.results.classify?.results[0]?.points && pointsWanted()) {
    delete state.results.classify;
    run();
  } else {
    render();
  }
});
$("points-block").addEventListener("change", () => { renderGroupOptions(pointBlocks()); render(); });
$("points-group").addEventListener("change", render);

let resizing = 0;
window.addEventListener("resize", () => {
  cancelAnimationFrame(resizing);
  resizing = requestAnimationFrame(render);
});

// the pure functions, for the console and tests/service/test_ui.py
window.datUi = {featureSize, pointMapper, referenceGrid, roundHalfEven};

// -- start --------------------------------------------------------------------------------

$("api-key").value = sessionStorage.getItem(KEY_STORE) || "";
selectTask("classify", false);
loadModels();
