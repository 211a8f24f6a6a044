// Runs: live updates of a run page over Server-Sent Events, and a live price and option
// picker in the studio. Both pages work without this file (the run page refreshes itself,
// the studio has an "Update price and options" button).
(function () {
  "use strict";

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function badgeClass(status) {
    if (status === "delivered") return "badge badge-good";
    if (status === "queued" || status === "running") return "badge badge-warn";
    return "badge badge-bad";
  }

  function renderJob(figure, job, run) {
    if (figure.getAttribute("data-status") === job.status && job.status !== "running" && job.status !== "queued") return;
    figure.setAttribute("data-status", job.status);
    while (figure.firstChild) figure.removeChild(figure.firstChild);
    if (job.image_url) {
      var link = el("a", { href: job.image_url });
      var img = el("img", { src: job.image_url, alt: job.name + ": " + run.prompt });
      if (job.width) img.setAttribute("width", job.width);
      if (job.height) img.setAttribute("height", job.height);
      link.appendChild(img);
      figure.appendChild(link);
    } else {
      var ph = el("div", { "class": "placeholder", "data-role": "placeholder" });
      ph.appendChild(el("span", {}, job.status_label));
      figure.appendChild(ph);
    }
    var cap = el("figcaption");
    cap.appendChild(el("strong", {}, job.name));
    cap.appendChild(document.createTextNode(" "));
    cap.appendChild(el("span", { "class": badgeClass(job.status), "data-role": "status" }, job.status_label));
    if (job.status === "queued" || job.status === "running") {
      cap.appendChild(el("progress", { max: "100", value: String(job.progress), "data-role": "progress", "aria-label": job.name + " progress" }, job.progress + "%"));
    }
    if (job.queue) {
      cap.appendChild(el("p", { "class": "small job-wait", "data-role": "wait", "data-testid": "wait" }, "Queued: " + job.queue.label + "."));
    }
    var detail = el("p", { "class": "small job-detail", "data-role": "detail" });
    var parts = [];
    if (job.duration_label) parts.push("Took " + job.duration_label + ".");
    if (job.charged === null || job.charged === undefined) parts.push(job.price + " credits held.");
    else if (job.charged > 0 && job.charged < job.price) parts.push("Charged " + job.charged + " credits (billed by usage; " + (job.price - job.charged) + " of " + job.price + " held returned).");
    else if (job.charged > 0) parts.push("Charged " + job.charged + " credits.");
    else parts.push("Not charged (" + job.price + " credits refunded).");
    if (job.route_label) parts.push("Made via " + job.route_label + ".");
    detail.appendChild(document.createTextNode(parts.join(" ") + " "));
    if (job.image_url) detail.appendChild(el("a", { href: job.image_url, download: "" }, "Download"));
    cap.appendChild(detail);
    if (job.message) {
      var msg = el("p", { "class": "notice notice-warn small", "data-role": "message", "data-testid": "not-charged" }, job.message + " ");
      if (job.reason) msg.appendChild(el("span", { "class": "muted" }, "(" + job.reason + ")"));
      cap.appendChild(msg);
    }
    figure.appendChild(cap);
  }

  function renderRun(root, run) {
    root.setAttribute("data-status", run.status);
    if (run.revealed === false) {
      // A blind run: nothing per model until every image is there; then the page shows them.
      var blindSummary = root.querySelector('[data-role="summary"]');
      if (blindSummary && run.status === "pending") blindSummary.textContent = "Generating… " + run.held + " credits held.";
      if (run.status === "done") {
        // Swap in the finished page's run section (the images and the vote form), without a reload.
        fetch(window.location.href, { credentials: "same-origin" })
          .then(function (r) { return r.text(); })
          .then(function (html) {
            var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-run][data-events]");
            if (fresh) root.replaceWith(document.importNode(fresh, true));
            else window.location.reload();
          })
          .catch(function () { window.location.reload(); });
      }
      return;
    }
    run.jobs.forEach(function (job) {
      var figure = root.querySelector('figure[data-job="' + job.id + '"]');
      if (figure) renderJob(figure, job, run);
    });
    var summary = root.querySelector('[data-role="summary"]');
    if (summary) {
      var generating = run.jobs.some(function (job) { return job.status === "running"; });
      summary.textContent = run.status === "pending"
        ? (generating ? "Generating… " : "Waiting in the queue… ") + run.held + " credits held."
        : "Finished: " + run.charged + " credits charged" + (run.refunded > 0 ? ", " + run.refunded + " refunded" : "") + ".";
    }
    // Keep the header's balance in step once everything is settled.
    if (run.status === "done") {
      var held = document.querySelector('[data-testid="held"]');
      if (held && held.parentNode) held.parentNode.setAttribute("hidden", "");
    }
  }

  function liveRun(doc) {
    var root = doc.querySelector("[data-run][data-events]");
    if (!root || !window.EventSource || root.getAttribute("data-status") !== "pending") return;
    var source = new EventSource(root.getAttribute("data-events"));
    function handle(e) {
      try { renderRun(root, JSON.parse(e.data)); } catch (err) { if (window.console) console.warn(err); }
    }
    source.addEventListener("run", handle);
    source.addEventListener("done", function (e) { handle(e); source.close(); });
  }

  function studio(doc) {
    var form = doc.querySelector("form[data-studio]");
    if (!form) return;
    var boxes = Array.prototype.slice.call(form.querySelectorAll('input[name="models"]'));
    var ratioSelect = form.querySelector('select[name="aspect_ratio"]');
    var allRatios = [];
    boxes.forEach(function (b) {
      b.getAttribute("data-ratios").split(",").forEach(function (r) { if (r && allRatios.indexOf(r) < 0) allRatios.push(r); });
    });
    var reference = form.querySelector("[data-reference]");
    var fourK = form.querySelector('input[name="mode"][value="4k"]');
    var lines = form.querySelector("[data-quote-lines]");
    var total = form.querySelector('[data-testid="quote-total"]');
    var available = form.querySelector('[data-testid="quote-available"]');
    var missingBox = form.querySelector("[data-quote-missing]");
    var missing = form.querySelector('[data-testid="quote-missing"]');
    var update = form.querySelector("[data-update-quote]");
    if (update) update.setAttribute("hidden", "");

    function refresh() {
      var chosen = boxes.filter(function (b) { return b.checked; });
      boxes.forEach(function (b) { b.disabled = !b.checked && chosen.length >= 4; });
      var mode = (form.querySelector('input[name="mode"]:checked') || {}).value || "2k";
      var all4k = chosen.every(function (b) { return b.getAttribute("data-price-4k") !== ""; });
      if (fourK) {
        fourK.disabled = chosen.length > 0 && !all4k;
        if (fourK.disabled && fourK.checked) {
          fourK.checked = false;
          var twoK = form.querySelector('input[name="mode"][value="2k"]');
          if (twoK) twoK.checked = true;
          mode = "2k";
        }
      }
      if (ratioSelect) {
        var current = ratioSelect.value;
        var common = chosen.length === 0 ? allRatios : allRatios.filter(function (r) {
          return chosen.every(function (b) { return b.getAttribute("data-ratios").split(",").indexOf(r) >= 0; });
        });
        while (ratioSelect.firstChild) ratioSelect.removeChild(ratioSelect.firstChild);
        common.forEach(function (r) { ratioSelect.appendChild(el("option", { value: r }, r)); });
        ratioSelect.value = common.indexOf(current) >= 0 ? current : (common[0] || "");
      }
      if (reference) {
        var i2i = chosen.length > 0 && chosen.every(function (b) { return b.getAttribute("data-i2i") === "true"; });
        reference.hidden = !i2i;
        var input = reference.querySelector("input");
        if (input) input.disabled = !i2i;
      }
      if (lines && total) {
        while (lines.firstChild) lines.removeChild(lines.firstChild);
        var sum = 0;
        chosen.forEach(function (b) {
          var price = parseInt(b.getAttribute("data-price-" + mode), 10);
          if (isNaN(price)) return;
          sum += price;
          var row = el("tr");
          row.appendChild(el("th", { scope: "row" }, b.getAttribute("data-name")));
          row.appendChild(el("td", {}, price + " credits"));
          lines.appendChild(row);
        });
        total.textContent = String(sum);
        var have = available ? parseInt(available.textContent, 10) || 0 : 0;
        var short = Math.max(0, sum - have);
        if (missing) missing.textContent = String(short);
        if (missingBox) missingBox.hidden = short === 0;
      }
    }
    form.addEventListener("change", refresh);
    refresh();
  }

  window.Faceoff = window.Faceoff || { enhancers: [] };
  window.Faceoff.enhancers.push(liveRun, studio);
})();
