// The comparison viewer: every [data-viewer] shows its images side by side with one zoom and
// one centre for all (mouse wheel and drag, pinch and drag, keyboard + − arrows 0), a fit/100 %
// toggle, and for two images a swipe overlay with a draggable, keyboard-operable divider. Each
// image starts as its web rendition; the original is fetched only once the zoom shows more
// pixels than the rendition has. Without this script the page shows the images and links.
"use strict";
(() => {
  const MAX_SCALE = 8; // at most 8 screen pixels per image pixel
  const STEP = 1.5;

  function button(text, label, action) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "button button-ghost viewer-button";
    b.textContent = text;
    b.setAttribute("aria-label", label);
    b.dataset.action = action;
    return b;
  }

  function setUp(root) {
    const panesBox = root.querySelector("[data-panes]");
    const panes = [...root.querySelectorAll("[data-pane]")].map((pane) => {
      const stage = pane.querySelector("[data-stage]");
      const img = stage.querySelector("img");
      return { pane, stage, img, original: img.dataset.original, full: img.dataset.original === img.getAttribute("src") };
    });
    if (!panes.length) return;
    // One state for all: zoom relative to each image's fit, and the centre of the view in image
    // fractions (0–1), so every pane shows the same region whatever its images' pixel sizes.
    const state = { zoom: 1, cx: 0.5, cy: 0.5, mode: "side", split: 50 };

    // Each image's size in its own pixels (the original's when known).
    const size = (p) => ({
      w: Number(p.img.dataset.width) || p.img.naturalWidth || Number(p.img.getAttribute("width")) || 1,
      h: Number(p.img.dataset.height) || p.img.naturalHeight || Number(p.img.getAttribute("height")) || 1,
    });
    const fit = (p) => {
      const { w, h } = size(p);
      return Math.min(p.stage.clientWidth / w, p.stage.clientHeight / h) || 1;
    };
    const maxZoom = () => Math.max(1, ...panes.map((p) => MAX_SCALE / fit(p)));

    // The toolbar.
    const bar = document.createElement("div");
    bar.className = "viewer-toolbar";
    bar.setAttribute("role", "toolbar");
    bar.setAttribute("aria-label", "Viewer controls");
    const zoomIn = button("+", "Zoom in", "in");
    const zoomOut = button("−", "Zoom out", "out");
    const actual = button("100 %", "Show at 100 % (one image pixel per screen pixel)", "actual");
    actual.setAttribute("aria-pressed", "false");
    const reset = button("Fit", "Fit the images", "fit");
    bar.append(zoomIn, zoomOut, actual, reset);
    let swipe;
    if (panes.length === 2) {
      swipe = button("Swipe", "Swipe overlay: one image over the other", "swipe");
      swipe.setAttribute("aria-pressed", "false");
      bar.append(swipe);
    }
    const status = document.createElement("p");
    status.className = "viewer-status small muted";
    status.setAttribute("aria-live", "polite");
    status.dataset.role = "zoom";
    bar.append(status);
    root.insertBefore(bar, panesBox);
    const help = root.querySelector(".viewer-help");
    if (help) help.hidden = false;
    root.classList.add("is-live");

    // The swipe divider (two images only).
    let divider;
    if (swipe) {
      divider = document.createElement("div");
      divider.className = "viewer-divider";
      divider.tabIndex = 0;
      divider.setAttribute("role", "slider");
      divider.setAttribute("aria-label", "Swipe divider: how much of the first image shows");
      divider.setAttribute("aria-valuemin", "0");
      divider.setAttribute("aria-valuemax", "100");
      divider.hidden = true;
      panesBox.append(divider);
    }

    for (const p of panes) {
      p.stage.tabIndex = 0;
      p.stage.setAttribute("role", "group");
      p.stage.setAttribute("aria-label", `${p.img.alt}: zoom and pan (+ − arrows 0)`);
      p.stage.setAttribute("aria-describedby", "viewer-help");
      p.img.draggable = false;
    }

    function loadOriginal(p) {
      if (p.full || p.loading) return;
      p.loading = true;
      const pre = new Image();
      pre.onload = () => {
        p.img.src = p.original;
        p.full = true;
        p.img.dataset.loaded = "original";
      };
      pre.onerror = () => { p.loading = false; };
      pre.src = p.original;
    }

    function render() {
      const dpr = window.devicePixelRatio || 1;
      for (const p of panes) {
        const { w, h } = size(p);
        const k = fit(p) * state.zoom;
        const tx = p.stage.clientWidth / 2 - state.cx * w * k;
        const ty = p.stage.clientHeight / 2 - state.cy * h * k;
        p.img.style.width = `${w}px`;
        p.img.style.height = `${h}px`;
        p.img.style.transform = `translate(${tx}px, ${ty}px) scale(${k})`;
        // Past the rendition's resolution: fetch the original.
        const renditionWidth = Number(p.img.dataset.renditionWidth) || 0;
        if (!p.full && renditionWidth && w * k * dpr > renditionWidth * 1.01) loadOriginal(p);
      }
      const atActual = Math.abs(fit(panes[0]) * state.zoom - 1) < 0.01;
      actual.setAttribute("aria-pressed", String(atActual));
      status.textContent = `Zoom ${Math.round(fit(panes[0]) * state.zoom * 100)} %`;
      root.dataset.zoom = state.zoom.toFixed(3);
      if (divider) {
        const swiping = state.mode === "swipe";
        divider.hidden = !swiping;
        divider.style.left = `${state.split}%`;
        divider.setAttribute("aria-valuenow", String(Math.round(state.split)));
        divider.setAttribute("aria-valuetext", `${Math.round(state.split)} % of ${panes[0].img.alt}`);
        panes[1].stage.style.clipPath = swiping ? `inset(0 0 0 ${state.split}%)` : "";
      }
    }

    function clampCentre() {
      state.cx = Math.min(1, Math.max(0, state.cx));
      state.cy = Math.min(1, Math.max(0, state.cy));
    }

    // Zooms to `zoom`, keeping the image point under (x, y) of pane `p` where it is.
    function zoomTo(zoom, p = panes[0], x, y) {
      const next = Math.min(maxZoom(), Math.max(1, zoom));
      const { w, h } = size(p);
      const pw = p.stage.clientWidth;
      const ph = p.stage.clientHeight;
      const px = x ?? pw / 2;
      const py = y ?? ph / 2;
      const k = fit(p) * state.zoom;
      const ix = state.cx + (px - pw / 2) / (w * k);
      const iy = state.cy + (py - ph / 2) / (h * k);
      const k2 = fit(p) * next;
      state.zoom = next;
      state.cx = ix - (px - pw / 2) / (w * k2);
      state.cy = iy - (py - ph / 2) / (h * k2);
      if (next === 1) { state.cx = 0.5; state.cy = 0.5; }
      clampCentre();
      render();
    }

    function panBy(p, dx, dy) {
      const { w, h } = size(p);
      const k = fit(p) * state.zoom;
      state.cx -= dx / (w * k);
      state.cy -= dy / (h * k);
      clampCentre();
      render();
    }

    function setMode(mode) {
      state.mode = mode;
      root.classList.toggle("is-swipe", mode === "swipe");
      if (swipe) swipe.setAttribute("aria-pressed", String(mode === "swipe"));
      render();
    }

    bar.addEventListener("click", (event) => {
      const action = event.target.closest("button")?.dataset.action;
      if (action === "in") zoomTo(state.zoom * STEP);
      else if (action === "out") zoomTo(state.zoom / STEP);
      else if (action === "fit") zoomTo(1);
      else if (action === "actual") zoomTo(actual.getAttribute("aria-pressed") === "true" ? 1 : 1 / fit(panes[0]));
      else if (action === "swipe") setMode(state.mode === "swipe" ? "side" : "swipe");
    });

    for (const p of panes) {
      p.stage.addEventListener("wheel", (event) => {
        event.preventDefault();
        const rect = p.stage.getBoundingClientRect();
        const factor = Math.exp(-event.deltaY * (event.deltaMode === 1 ? 0.05 : 0.002));
        zoomTo(state.zoom * factor, p, event.clientX - rect.left, event.clientY - rect.top);
      }, { passive: false });

      p.stage.addEventListener("keydown", (event) => {
        const step = 40;
        const keys = {
          "+": () => zoomTo(state.zoom * STEP, p),
          "=": () => zoomTo(state.zoom * STEP, p),
          "-": () => zoomTo(state.zoom / STEP, p),
          "_": () => zoomTo(state.zoom / STEP, p),
          "0": () => zoomTo(1, p),
          ArrowLeft: () => panBy(p, step, 0),
          ArrowRight: () => panBy(p, -step, 0),
          ArrowUp: () => panBy(p, 0, step),
          ArrowDown: () => panBy(p, 0, -step),
        };
        const act = keys[event.key];
        if (act && !event.ctrlKey && !event.metaKey && !event.altKey) {
          event.preventDefault();
          act();
        }
      });

      // Drag with one pointer, pinch with two.
      const pointers = new Map();
      let pinch = null;
      p.stage.addEventListener("pointerdown", (event) => {
        p.stage.setPointerCapture(event.pointerId);
        pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
        root.classList.add("is-dragging");
        if (pointers.size === 2) {
          const [a, b] = [...pointers.values()];
          pinch = { distance: Math.hypot(a.x - b.x, a.y - b.y) || 1, zoom: state.zoom };
        }
      });
      p.stage.addEventListener("pointermove", (event) => {
        const last = pointers.get(event.pointerId);
        if (!last) return;
        const now = { x: event.clientX, y: event.clientY };
        pointers.set(event.pointerId, now);
        if (pointers.size === 2 && pinch) {
          const [a, b] = [...pointers.values()];
          const rect = p.stage.getBoundingClientRect();
          const distance = Math.hypot(a.x - b.x, a.y - b.y) || 1;
          zoomTo(pinch.zoom * (distance / pinch.distance), p, (a.x + b.x) / 2 - rect.left, (a.y + b.y) / 2 - rect.top);
        } else if (pointers.size === 1) {
          panBy(p, now.x - last.x, now.y - last.y);
        }
      });
      const release = (event) => {
        pointers.delete(event.pointerId);
        if (pointers.size < 2) pinch = null;
        if (!pointers.size) root.classList.remove("is-dragging");
      };
      p.stage.addEventListener("pointerup", release);
      p.stage.addEventListener("pointercancel", release);
      // A size known only once the image has loaded (blind copies carry none in the page).
      p.img.addEventListener("load", render);
    }

    if (divider) {
      const moveTo = (clientX) => {
        const rect = panesBox.getBoundingClientRect();
        state.split = Math.min(100, Math.max(0, ((clientX - rect.left) / rect.width) * 100));
        render();
      };
      divider.addEventListener("pointerdown", (event) => {
        event.stopPropagation();
        divider.setPointerCapture(event.pointerId);
        root.classList.add("is-dragging");
      });
      divider.addEventListener("pointermove", (event) => {
        if (divider.hasPointerCapture(event.pointerId)) moveTo(event.clientX);
      });
      divider.addEventListener("pointerup", () => root.classList.remove("is-dragging"));
      divider.addEventListener("keydown", (event) => {
        const moves = { ArrowLeft: -5, ArrowDown: -5, ArrowRight: 5, ArrowUp: 5, PageDown: -20, PageUp: 20 };
        if (event.key in moves) state.split = Math.min(100, Math.max(0, state.split + moves[event.key]));
        else if (event.key === "Home") state.split = 0;
        else if (event.key === "End") state.split = 100;
        else return;
        event.preventDefault();
        render();
      });
    }

    window.addEventListener("resize", render);
    render();
  }

  const start = () => document.querySelectorAll("[data-viewer]").forEach(setUp);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
