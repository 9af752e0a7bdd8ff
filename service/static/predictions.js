// The classifier's answer: its top predictions as labelled bars.

import {$} from "./dom.js";

export function renderTop5(result) {
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
