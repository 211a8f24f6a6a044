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
