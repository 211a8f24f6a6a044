// Faceoff progressive enhancement. Every page works without this file; it only adds live
// updates and conveniences. Modules register on elements marked with data-* attributes.
(function () {
  "use strict";
  window.Faceoff = window.Faceoff || { enhancers: [] };
  document.addEventListener("DOMContentLoaded", function () {
    window.Faceoff.enhancers.forEach(function (fn) {
      try { fn(document); } catch (e) { if (window.console) console.warn(e); }
    });
  });
})();

// Comparison picker (/compare): shows "2/4 selected" live and disables further boxes at the
// limit. Without JavaScript the server checks the count and explains.
window.Faceoff.enhancers.push(function (root) {
  root.querySelectorAll("form[data-compare-picker]").forEach(function (form) {
    var max = parseInt(form.getAttribute("data-max"), 10) || 4;
    var status = form.querySelector("[data-picker-status]");
    var boxes = Array.prototype.slice.call(form.querySelectorAll("input[type=checkbox][name=models]"));
    function update() {
      var count = boxes.filter(function (b) { return b.checked; }).length;
      boxes.forEach(function (b) { b.disabled = !b.checked && count >= max; });
      if (status) {
        status.textContent = count + "/" + max + " selected" +
          (count >= max ? " — that's the most you can compare at once." : count < 2 ? " — choose at least two." : ".");
      }
    }
    boxes.forEach(function (b) { b.addEventListener("change", update); });
    update();
  });
});
