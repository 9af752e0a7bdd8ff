// Where it looked: the D blocks' sampling points (?points=true) over the picture, per stage,
// block and group, with their reference grid; and the controls that choose them.

import {$, COLOURS, svg} from "./dom.js";

export function roundHalfEven(value) {  // Python's round(), as models/transforms.py crops
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
export function featureSize(block, inputSize) {
  const official = inputSize / 2 ** (block.stage + 2);
  return [Math.max(block.height, official), Math.max(block.width, official)];
}

// Reference points (before the offsets) as the official code makes them: cell centres
// (i + 0.5) / n in v1, (i + 0.5) / (n - 1) in DAT++, mapped to [-1, 1]. Only DAT++ has D
// blocks in stages 0 and 1.
export function referenceGrid(rows, columns, plusPlus) {
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
export function pointMapper(preprocessing, width, height, rows, columns) {
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

// model: the classifier's entry of GET /models; result: its last answer for the picture;
// refused: the server's reason, when it refused ?points=true.
export function renderPointControls(model, result, refused) {
  const blocks = result?.points || [];
  const checkbox = $("show-points");
  let note = "";
  if (!model) note = "no classifier on this server";
  else if (!model.supports_points) note = `the ${model.backend} backend cannot give them; the torch backend can (--backend torch)`;
  else if (model.preprocessing?.mode === "letterbox") note = "not for letterboxed inputs";
  else if (refused) note = refused;
  else if (!blocks.length) note = "classify a picture to see them";
  $("points-note").textContent = note;
  checkbox.disabled = Boolean(note && note !== "classify a picture to see them");

  const blockSelect = $("points-block");
  const previous = blockSelect.value;
  blockSelect.replaceChildren(...blocks.map((b, i) => new Option(
    `stage ${b.stage}, block ${b.block}: ${b.height} x ${b.width} x ${b.groups} groups`, String(i))));
  if (blocks[previous]) blockSelect.value = previous;
  $("points-choice").hidden = !blocks.length;
  renderGroupOptions(blocks);
}

export function renderGroupOptions(blocks) {
  const block = blocks[Number($("points-block").value)];
  const groupSelect = $("points-group");
  const previous = groupSelect.value;
  const options = block ? [new Option("all", "all"), ...Array.from({length: block.groups}, (_, g) => new Option(String(g), String(g)))] : [];
  groupSelect.replaceChildren(...options);
  if (options.some((o) => o.value === previous)) groupSelect.value = previous;
}

export function drawPoints(model, result, unit) {
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
