// The model card: the served model of the chosen task, as GET /models describes it.

import {$} from "./dom.js";

// model: its entry of GET /models, or none; anyKnown: whether GET /models answered at all.
export function renderCard(model, task, anyKnown, hasMasks) {
  const card = $("card");
  card.replaceChildren();
  const row = (name, value) => {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = name;
    dd.textContent = value;
    card.append(dt, dd);
  };
  if (!model) {
    row("status", anyKnown ? "not served here" : "unknown (GET /models failed)");
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
  if (task === "classify") row("points", model.supports_points ? "yes (?points=true)" : "no");
  else row("masks", hasMasks ? "yes (?masks=polygon)" : "no (boxes only)");
  row("batching", `up to ${batching.max_batch_size} images per batch, waits at most ` +
      `${batching.max_queue_delay_ms} ms; queue of ${batching.max_queue_size} images; ` +
      `${batching.max_images_per_request} images per request; deadline ${batching.default_timeout_ms} ms`);
}
