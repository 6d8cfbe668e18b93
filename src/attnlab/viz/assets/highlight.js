// attnlab attention highlights. Every token and label reaches the page through textContent or a DOM property,
// never as markup.
(function () {
  "use strict";
  // ColorBrewer "Blues": one hue, lightness falling evenly, readable with any colour-vision deficiency.
  var BLUES = [[247, 251, 255], [222, 235, 247], [198, 219, 239], [158, 202, 225], [107, 174, 214],
    [66, 146, 198], [33, 113, 181], [8, 81, 156], [8, 48, 107]];
  var data = JSON.parse(document.getElementById("attnlab-highlight-data").textContent);
  var state = { index: 0 };
  var items = [];

  function byId(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  // An interface string in the page's language, its {0}, {1}... replaced by the arguments (in one pass).
  function tr(key) {
    var args = Array.prototype.slice.call(arguments, 1);
    return data.ui[key].replace(/\{(\d+)\}/g, function (_, i) { return String(args[Number(i)]); });
  }

  // Colour of a share of the example's largest weight, t in [0, 1], interpolated between the Blues stops.
  function colour(t) {
    var x = Math.max(0, Math.min(1, t)) * (BLUES.length - 1);
    var i = Math.min(Math.floor(x), BLUES.length - 2), f = x - i, a = BLUES[i], b = BLUES[i + 1];
    return "rgb(" + [0, 1, 2].map(function (k) { return Math.round(a[k] + f * (b[k] - a[k])); }).join(", ") + ")";
  }
  function maximum(values) { return values.reduce(function (m, w) { return w > m ? w : m; }, 0); }
  function joined(ex) {
    return ex.tokens.map(function (t, i) { return (ex.spaceBefore[i] ? " " : "") + t; }).join("");
  }
  function summary(ex, i) {
    var text = ex.title !== null ? ex.title : (ex.text !== null ? ex.text : joined(ex));
    text = text.replace(/\s+/g, " ").trim();
    return (i + 1) + ". " + (text.length > 80 ? text.slice(0, 79) + "\u2026" : text);
  }
  function verdict(ex) {
    if (ex.trueLabel === null) { return ""; }
    return ex.trueLabel === ex.label ? "right" : "wrong";
  }

  function buildList() {
    var list = byId("list");
    items = data.examples.map(function (ex, i) {
      var li = el("li"), button = el("button", "item"), mark = verdict(ex);
      button.type = "button";
      button.dataset.index = String(i);
      button.appendChild(el("span", "item-text", summary(ex, i)));
      var meta = ex.label + " " + ex.probability.toFixed(2);
      if (mark) { meta += mark === "right" ? " \u2713" : " \u2717"; button.classList.add(mark); }
      button.appendChild(el("span", "item-meta", meta));
      button.addEventListener("click", function () { select(i); });
      li.appendChild(button);
      list.appendChild(li);
      return button;
    });
  }

  function buildTokens(ex, max) {
    var box = byId("tokens");
    clear(box);
    ex.tokens.forEach(function (token, i) {
      if (ex.spaceBefore[i]) { box.appendChild(document.createTextNode(" ")); }
      var w = ex.weights[i], share = max > 0 ? w / max : 0, span = el("span", "tok", token);
      span.dataset.index = String(i);
      span.dataset.weight = String(w);
      span.style.backgroundColor = colour(share);
      if (share > 0.55) { span.classList.add("dark"); }
      span.title = tr("tokenTitle", w, Math.round(100 * share), i);
      box.appendChild(span);
    });
  }

  function buildTop(ex) {
    var body = byId("top").tBodies[0];
    clear(body);
    var order = ex.weights.map(function (_, i) { return i; });
    order.sort(function (a, b) { return ex.weights[b] - ex.weights[a] || a - b; });
    order.slice(0, 5).forEach(function (i, rank) {
      var row = el("tr");
      row.appendChild(el("td", "num", String(rank + 1)));
      row.appendChild(el("td", "tokcell", ex.tokens[i]));
      row.appendChild(el("td", "num", String(i)));
      row.appendChild(el("td", "num", String(ex.weights[i])));
      body.appendChild(row);
    });
  }

  function show() {
    var ex = data.examples[state.index], max = maximum(ex.weights), mark = verdict(ex);
    items.forEach(function (button, i) {
      button.classList.toggle("selected", i === state.index);
      button.setAttribute("aria-current", i === state.index ? "true" : "false");
    });
    byId("ex-title").textContent = ex.title !== null ? ex.title : tr("exampleN", state.index + 1, data.examples.length);
    byId("pred-label").textContent = ex.label;
    byId("pred-prob").textContent = "(p = " + ex.probability.toFixed(3) + ")";
    byId("true-wrap").hidden = ex.trueLabel === null;
    byId("true-label").textContent = ex.trueLabel === null ? "" : ex.trueLabel;
    byId("mark").textContent = mark === "right" ? "\u2713" : (mark === "wrong" ? "\u2717" : "");
    byId("mark").className = mark;
    buildTokens(ex, max);
    byId("vmax").textContent = String(max);
    buildTop(ex);
    byId("text-wrap").hidden = ex.text === null;
    byId("text").textContent = ex.text === null ? "" : ex.text;
  }

  function select(i) {
    state.index = Math.max(0, Math.min(data.examples.length - 1, i));
    show();
    items[state.index].scrollIntoView({ block: "nearest" });
  }

  var STEPS = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 };
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) { return; }
    var target = STEPS[event.key] !== undefined ? state.index + STEPS[event.key] :
      event.key === "Home" ? 0 : event.key === "End" ? data.examples.length - 1 : null;
    if (target === null) { return; }
    event.preventDefault();
    select(target);
    items[state.index].focus();
  });

  byId("title").textContent = data.title;
  byId("bar").style.backgroundImage = "linear-gradient(to right, " +
    [0, 0.25, 0.5, 0.75, 1].map(colour).join(", ") + ")";
  buildList();
  show();
  document.documentElement.dataset.ready = "1";
}());
