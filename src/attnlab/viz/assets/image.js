// attnlab attention over image patches (a ViT's, or a captioner's per word). Labels and words reach the page
// through textContent or DOM properties only, never as markup.
(function () {
  "use strict";
  // matplotlib's "inferno" at 17 stops: perceptually uniform, still ordered in grey and for colour-blind readers.
  var INFERNO = [[0, 0, 4], [11, 7, 36], [33, 12, 74], [61, 9, 101], [87, 16, 110], [113, 25, 110],
    [138, 34, 106], [163, 44, 97], [188, 55, 84], [210, 70, 68], [228, 90, 49], [241, 115, 29], [249, 142, 9],
    [252, 172, 17], [249, 203, 53], [242, 234, 105], [252, 255, 164]];
  var data = JSON.parse(document.getElementById("attnlab-image-data").textContent);
  var gh = data.grid[0], gw = data.grid[1], n = gh * gw;
  var stage = byId("stage"), image = byId("image"), canvas = byId("overlay"), ctx = canvas.getContext("2d");
  var state = { layer: 0, head: "mean", patch: null, mode: "to", step: 0, timer: null };
  var wordButtons = [];

  function byId(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  // Colour of a share of the largest weight shown, t in [0, 1], interpolated between the stops.
  function colour(t) {
    var x = Math.max(0, Math.min(1, t)) * (INFERNO.length - 1);
    var i = Math.min(Math.floor(x), INFERNO.length - 2), f = x - i, a = INFERNO[i], b = INFERNO[i + 1];
    return [0, 1, 2].map(function (k) { return Math.round(a[k] + f * (b[k] - a[k])); });
  }
  // An interface string in the page's language, its {0}, {1}... replaced by the arguments (in one pass).
  function tr(key) {
    var args = Array.prototype.slice.call(arguments, 1);
    return data.ui[key].replace(/\{(\d+)\}/g, function (_, i) { return String(args[Number(i)]); });
  }
  function patchName(p) { return tr("patchName", p, Math.floor(p / gw), p % gw); }

  // One canvas pixel per patch, stretched over the image: patch k is pixel (k % gw, k // gw).
  function draw(values) {
    var max = 0, top = 0, k;
    for (k = 0; k < n; k++) { if (values[k] > max) { max = values[k]; top = k; } }
    var pixels = ctx.createImageData(gw, gh);
    for (k = 0; k < n; k++) {
      var c = colour(max > 0 ? values[k] / max : 0);
      pixels.data.set([c[0], c[1], c[2], 255], 4 * k);
    }
    ctx.putImageData(pixels, 0, 0);
    byId("vmax").textContent = max.toPrecision(3);
    stage.dataset.top = String(top);
    return top;
  }
  function place(node, top, left, bottom, right) {  // in pixels of the image, as percentages of the stage
    node.style.top = (100 * top / data.height) + "%";
    node.style.left = (100 * left / data.width) + "%";
    node.style.height = (100 * (bottom - top) / data.height) + "%";
    node.style.width = (100 * (right - left) / data.width) + "%";
  }
  function showCursor() {
    var cursor = byId("cursor"), p = state.patch, size = data.patchSize;
    cursor.hidden = p === null;
    if (p === null) { delete stage.dataset.patch; return; }
    stage.dataset.patch = String(p);
    var r = Math.floor(p / gw), c = p % gw;
    place(cursor, r * size, c * size, (r + 1) * size, (c + 1) * size);
  }

  // ------------------------------------------------------------------------------------------ ViT page
  function weight(q, k) {  // entry (q, k) of the selected matrix; token 0 is the class token
    if (state.head === "rollout") { return data.rollout[q][k]; }
    var layer = data.weights[state.layer];
    if (state.head !== "mean") { return layer[Number(state.head)][q][k]; }
    var sum = 0;
    for (var h = 0; h < data.heads; h++) { sum += layer[h][q][k]; }
    return sum / data.heads;
  }
  function showVit() {
    var values = [], p = state.patch, k;
    for (k = 0; k < n; k++) {
      values.push(p === null ? weight(0, k + 1) : (state.mode === "to" ? weight(k + 1, p + 1) : weight(p + 1, k + 1)));
    }
    var top = draw(values), text;
    stage.dataset.mode = p === null ? "cls" : state.mode;
    if (p === null) {
      text = tr("clsIdle");
    } else {
      text = tr(state.mode === "to" ? "patchTo" : "patchFrom", patchName(p));
    }
    var which = state.head === "rollout" ? tr("rolloutAll") :
      tr("layerHead", state.layer, state.head === "mean" ? tr("meanHeads") : tr("headN", state.head));
    byId("status").textContent = tr("statusVit", text, which, top);
    showCursor();
  }
  function option(select, value, text) {
    var node = el("option", null, text);
    node.value = value;
    select.appendChild(node);
  }
  function buildVit() {
    var layer = byId("layer"), head = byId("head"), i;
    for (i = 0; i < data.layers; i++) { option(layer, String(i), tr("layerN", i)); }
    for (i = 0; i < data.heads; i++) { option(head, String(i), tr("headN", i)); }
    option(head, "mean", tr("optMean"));
    option(head, "rollout", tr("optRollout"));
    state.layer = data.layers - 1;
    layer.value = String(state.layer);
    head.value = state.head;
    layer.addEventListener("change", function () { state.layer = Number(layer.value); showVit(); });
    head.addEventListener("change", function () {
      state.head = head.value;
      layer.disabled = state.head === "rollout";  // rollout chains every layer
      showVit();
    });
    byId("verdict").hidden = data.label === null;
    byId("pred-label").textContent = data.label === null ? "" : data.label;
    byId("pred-prob").textContent = data.probability === null ? "" : "(p = " + data.probability.toFixed(3) + ")";
    var table = byId("probs"), body = table.tBodies[0];
    table.hidden = data.probabilities.length === 0;
    data.probabilities.slice(0, 10).forEach(function (item) {
      var row = el("tr");
      if (item[0] === data.label) { row.className = "predicted"; }
      row.appendChild(el("td", "name", item[0]));
      row.appendChild(el("td", "num", item[1].toFixed(4)));
      body.appendChild(row);
    });
    if (data.probabilities.length > 10) {
      var more = el("tr"), cell = el("td", "note", tr("more", data.probabilities.length - 10));
      cell.colSpan = 2;
      more.appendChild(cell);
      body.appendChild(more);
    }
  }

  // -------------------------------------------------------------------------------------- caption page
  function showCaption() {
    var step = state.step, box = data.boxes[step], values = data.maps[step];
    draw(values);
    stage.dataset.step = String(step);
    wordButtons.forEach(function (button, i) {
      button.classList.toggle("selected", i === step);
      button.setAttribute("aria-current", i === step ? "true" : "false");
    });
    byId("box").hidden = box === null;
    if (box !== null) { place(byId("box"), box[0], box[1], box[2], box[3]); }
    var text = tr("wordStep", step + 1, data.words.length, data.words[step]);
    if (box !== null) { text += tr("boxNote", box.join(", ")); }
    if (state.patch !== null) { text += tr("patchWeight", patchName(state.patch), values[state.patch]); }
    byId("status").textContent = text;
    showCursor();
  }
  function go(step) {
    state.step = Math.max(0, Math.min(data.words.length - 1, step));
    showCaption();
  }
  function stop() {
    if (state.timer !== null) { clearInterval(state.timer); state.timer = null; }
    byId("play").textContent = tr("play");
  }
  function buildCaption() {
    var box = byId("words");
    wordButtons = data.words.map(function (word, i) {
      if (i) { box.appendChild(document.createTextNode(" ")); }
      var button = el("button", "word", word);
      button.type = "button";
      button.dataset.index = String(i);
      button.addEventListener("click", function () { stop(); go(i); });
      box.appendChild(button);
      return button;
    });
    byId("play").addEventListener("click", function () {
      if (state.timer !== null) { stop(); return; }
      if (state.step === data.words.length - 1) { go(0); }
      byId("play").textContent = tr("pause");
      state.timer = setInterval(function () {
        if (state.step >= data.words.length - 1) { stop(); } else { go(state.step + 1); }
      }, 900);
    });
    var STEPS = { ArrowRight: 1, ArrowLeft: -1 };
    document.addEventListener("keydown", function (event) {
      if (event.altKey || event.ctrlKey || event.metaKey) { return; }
      var target = STEPS[event.key] !== undefined ? state.step + STEPS[event.key] :
        event.key === "Home" ? 0 : event.key === "End" ? data.words.length - 1 : null;
      if (target === null) { return; }
      event.preventDefault();
      stop();
      go(target);
    });
  }

  // ------------------------------------------------------------------------------------------- shared
  var show = data.kind === "vit" ? showVit : showCaption;
  function patchAt(event) {
    var r = image.getBoundingClientRect();
    var x = (event.clientX - r.left) / r.width, y = (event.clientY - r.top) / r.height;
    if (!(x >= 0 && x < 1 && y >= 0 && y < 1)) { return null; }
    return Math.min(gh - 1, Math.floor(y * gh)) * gw + Math.min(gw - 1, Math.floor(x * gw));
  }
  stage.addEventListener("mousemove", function (event) {
    var p = patchAt(event);
    if (p !== state.patch) { state.patch = p; show(); }
  });
  stage.addEventListener("mouseleave", function () { state.patch = null; show(); });
  stage.addEventListener("click", function (event) {
    if (data.kind !== "vit") { return; }
    state.mode = state.mode === "to" ? "from" : "to";
    state.patch = patchAt(event);
    show();
  });
  var opacity = byId("opacity");
  opacity.addEventListener("input", function () { canvas.style.opacity = opacity.value; });
  canvas.style.opacity = opacity.value;

  // Drawn large and sharp: an integer zoom up to 512 pixels, or shrunk to 512 when bigger.
  var longest = Math.max(data.height, data.width);
  var zoom = longest >= 512 ? 512 / longest : Math.floor(512 / longest);
  image.style.width = (data.width * zoom) + "px";
  image.style.height = (data.height * zoom) + "px";
  canvas.width = gw;
  canvas.height = gh;
  byId("bar").style.backgroundImage = "linear-gradient(to right, " + INFERNO.map(function (c) {
    return "rgb(" + c.join(", ") + ")";
  }).join(", ") + ")";
  byId("title").textContent = data.title;
  if (data.kind === "vit") { buildVit(); } else { buildCaption(); }
  show();
  image.addEventListener("load", function () { document.documentElement.dataset.ready = "1"; });
  image.src = "data:image/png;base64," + data.image;
}());
