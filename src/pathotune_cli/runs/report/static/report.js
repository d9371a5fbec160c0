// pathotune report: sorting, filtering, map overlays and zoom. Vanilla JS, no network, no storage.
(function () {
  "use strict";

  function cellValue(cell) {
    var raw = cell.getAttribute("data-value");
    if (raw === null) { raw = cell.textContent.trim(); }
    var num = parseFloat(raw);
    return { num: isNaN(num) ? null : num, text: raw.toLowerCase() };
  }

  function sortTable(table, column, th) {
    var body = table.tBodies[0];
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a.cells[column]), y = cellValue(b.cells[column]);
      var order;
      if (x.num !== null && y.num !== null) { order = x.num - y.num; }
      else if (x.num !== null) { order = -1; }
      else if (y.num !== null) { order = 1; }
      else { order = x.text < y.text ? -1 : x.text > y.text ? 1 : 0; }
      return ascending ? order : -order;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  function initSortable(table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      var button = th.querySelector("button");
      if (button) { button.addEventListener("click", function () { sortTable(table, column, th); }); }
    });
  }

  function initFilter(box) {
    var table = document.getElementById(box.getAttribute("data-table"));
    var text = box.querySelector("input[type=search]");
    var pick = box.querySelector("select");
    var count = box.querySelector(".count");
    function apply() {
      var needle = text.value.trim().toLowerCase();
      var want = pick ? pick.value : "";
      var shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var ok = (!needle || row.textContent.toLowerCase().indexOf(needle) >= 0) &&
                 (!want || row.getAttribute("data-top") === want);
        row.hidden = !ok;
        if (ok) { shown += 1; }
      });
      if (count) { count.textContent = shown + " of " + table.tBodies[0].rows.length + " slides shown"; }
    }
    text.addEventListener("input", apply);
    if (pick) { pick.addEventListener("change", apply); }
    apply();
  }

  function initSlide(card) {
    var overlays = card.querySelectorAll("img.overlay");
    var legends = card.querySelectorAll(".legend[data-key]");
    var opacity = card.querySelector("input.opacity");
    function show(key) {
      Array.prototype.forEach.call(overlays, function (img) { img.hidden = img.getAttribute("data-key") !== key; });
      Array.prototype.forEach.call(legends, function (l) { l.hidden = l.getAttribute("data-key") !== key; });
    }
    Array.prototype.forEach.call(card.querySelectorAll("input.map-choice"), function (radio) {
      radio.addEventListener("change", function () { if (radio.checked) { show(radio.value); } });
      if (radio.checked) { show(radio.value); }
    });
    if (opacity) {
      var setOpacity = function () {
        Array.prototype.forEach.call(overlays, function (img) { img.style.opacity = opacity.value / 100; });
      };
      opacity.addEventListener("input", setOpacity);
      setOpacity();
    }
    var viewer = card.querySelector(".viewer");
    if (viewer) { initZoom(viewer, card.querySelector(".zoom")); }
  }

  function initZoom(viewer, buttons) {
    var stage = viewer.querySelector(".stage");
    var scale = 1, x = 0, y = 0, drag = null;
    function clamp() {
      var w = viewer.clientWidth, h = viewer.clientHeight;
      x = Math.min(0, Math.max(w - w * scale, x));
      y = Math.min(0, Math.max(h - h * scale, y));
    }
    function apply() { clamp(); stage.style.transform = "translate(" + x + "px," + y + "px) scale(" + scale + ")"; }
    function zoomAt(factor, cx, cy) {
      var next = Math.min(16, Math.max(1, scale * factor));
      x = cx - (cx - x) * next / scale;
      y = cy - (cy - y) * next / scale;
      scale = next;
      apply();
    }
    function centre(factor) { zoomAt(factor, viewer.clientWidth / 2, viewer.clientHeight / 2); }
    viewer.addEventListener("wheel", function (e) {
      e.preventDefault();
      var box = viewer.getBoundingClientRect();
      zoomAt(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - box.left, e.clientY - box.top);
    }, { passive: false });
    viewer.addEventListener("pointerdown", function (e) {
      drag = { px: e.clientX, py: e.clientY, x: x, y: y };
      viewer.setPointerCapture(e.pointerId);
    });
    viewer.addEventListener("pointermove", function (e) {
      if (!drag) { return; }
      x = drag.x + e.clientX - drag.px;
      y = drag.y + e.clientY - drag.py;
      apply();
    });
    viewer.addEventListener("pointerup", function () { drag = null; });
    viewer.addEventListener("dblclick", function () { scale = 1; x = 0; y = 0; apply(); });
    viewer.addEventListener("keydown", function (e) {
      if (e.key === "+" || e.key === "=") { centre(1.25); }
      else if (e.key === "-") { centre(0.8); }
      else if (e.key === "0") { scale = 1; x = 0; y = 0; apply(); }
    });
    if (buttons) {
      buttons.querySelector(".in").addEventListener("click", function () { centre(1.5); });
      buttons.querySelector(".out").addEventListener("click", function () { centre(1 / 1.5); });
      buttons.querySelector(".reset").addEventListener("click", function () { scale = 1; x = 0; y = 0; apply(); });
    }
  }

  document.querySelectorAll("table.sortable").forEach(initSortable);
  document.querySelectorAll(".filter").forEach(initFilter);
  document.querySelectorAll(".slide").forEach(initSlide);
  document.body.setAttribute("data-ready", "1");
  // After every picture decoded: how many of them did (a self-check a headless browser can read back).
  window.addEventListener("load", function () {
    var images = document.images, loaded = 0;
    for (var i = 0; i < images.length; i += 1) {
      if (images[i].complete && images[i].naturalWidth > 0) { loaded += 1; }
    }
    document.body.setAttribute("data-images", loaded + "/" + images.length);
  });
})();
