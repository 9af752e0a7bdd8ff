// The detector's answer: boxes with label and score over the picture, above the score slider's
// threshold, each detection's mask under its box, and the list beside.

import {$, COLOURS, svg} from "./dom.js";

export function drawDetections(result, unit) {
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

// The masks toggle, for a detector with masks; refused: the server's reason, when it refused them.
export function renderMaskControls(hasMasks, refused) {
  $("masks-toggle").hidden = !hasMasks;
  $("masks-note").textContent = hasMasks && refused ? `boxes only: ${refused}` : "";
}
