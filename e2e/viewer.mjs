// The comparison viewer (/runs/{id}/compare) in a real browser: zoom on one image moves the
// others to the same region (the visible rectangle of each, in image fractions), keyboard and
// drag keep them together, the swipe divider moves by keyboard, the fit/100 % toggle, the
// original is requested only once the zoom passes the web rendition, and a blind run's viewer
// names no model before the vote. Prints the viewer's script size and the load figures of the
// run page and the viewer (bytes transferred, load time) as the browser measured them.
//
//   node e2e/viewer.mjs        (after `cargo build --bin faceoff`; e2e/run runs it)

import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { BINARY, ROOT, launchBrowser, startServer, waitFor } from "./server.mjs";

const PASSWORD = "a long and happy password";
let server;
let browser;
let failed = false;
const problems = [];
const expect = (ok, what) => {
  if (!ok) throw new Error(`expected: ${what}`);
};

try {
  server = await startServer({ name: "faceoff_viewer", sandboxLatencyMs: 50 });
  const { base, env } = server;
  browser = await launchBrowser();
  // Reduced motion: the viewer must not animate (and the rectangles are read without waiting).
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, reducedMotion: "reduce" });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error on ${page.url()}: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error on ${page.url()}: ${err.message}`));
  const requests = [];
  page.on("request", (r) => requests.push(new URL(r.url()).pathname));

  // A user with credits.
  const email = `viewer-${Date.now()}@example.com`;
  await page.goto(`${base}/signup`);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.waitForURL("**/signup/check-email**");
  execFileSync(BINARY, ["admin", "grant", "--email", email, "--credits", "1000", "--reason", "viewer test"], { env, stdio: ["ignore", "ignore", "inherit"] });
  await page.goto(`${base}/login`);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await waitFor("the header balance", async () => (await page.locator('[data-testid="balance"]').count()) > 0);

  async function run(models, blind) {
    await page.goto(`${base}/studio?models=${models.join(",")}`);
    const box = page.locator('input[name="blind"]');
    if ((await box.isChecked()) !== blind) await box.click();
    await page.locator('input[name="mode"][value="2k"]').check();
    await page.locator("#prompt").fill("A close portrait of an old fisherman, wet skin, fine beard hair, harbour behind");
    await page.getByRole("button", { name: "Run", exact: true }).click();
    await page.waitForURL("**/runs/*");
    const path = new URL(page.url()).pathname;
    await waitFor("the images", async () => (await page.locator('figure.result[data-status="delivered"] img').count()) === models.length, 60_000);
    return path;
  }

  // Load figures of a page: bytes transferred (document and every resource) and load time.
  async function loadFigures(path) {
    // A first visit: nothing cached.
    await cdp.send("Network.clearBrowserCache");
    await page.goto(`${base}${path}`, { waitUntil: "load" });
    await page.waitForFunction(() => [...document.images].every((img) => img.complete));
    return page.evaluate(() => {
      const nav = performance.getEntriesByType("navigation")[0];
      const resources = performance.getEntriesByType("resource");
      const bytes = nav.transferSize + resources.reduce((sum, r) => sum + r.transferSize, 0);
      const images = resources.filter((r) => r.initiatorType === "img").reduce((sum, r) => sum + r.transferSize, 0);
      return { bytes, images, requests: resources.length + 1, loadMs: Math.round(nav.loadEventEnd - nav.startTime) };
    });
  }

  // Each pane's visible rectangle in fractions of its image, and its zoom.
  const rects = () =>
    page.$$eval("[data-pane]", (panes) =>
      panes.map((pane) => {
        const stage = pane.querySelector("[data-stage]").getBoundingClientRect();
        const img = pane.querySelector("img").getBoundingClientRect();
        return {
          x0: (stage.left - img.left) / img.width,
          y0: (stage.top - img.top) / img.height,
          x1: (stage.right - img.left) / img.width,
          y1: (stage.bottom - img.top) / img.height,
          scale: img.width,
        };
      }),
    );
  async function sameRegion(what) {
    const all = await rects();
    for (const r of all.slice(1)) {
      for (const k of ["x0", "y0", "x1", "y1"]) {
        expect(Math.abs(r[k] - all[0][k]) < 0.005, `${what}: every pane shows the same region (${JSON.stringify(all)})`);
      }
    }
    return all;
  }

  // 1. A plain run of two models: the run page (before) and the viewer (after).
  const runPath = await run(["flux-2", "flux-ultra-1-1"], false);
  const cdp = await context.newCDPSession(page);
  const before = await loadFigures(runPath);
  requests.length = 0;
  const after = await loadFigures(`${runPath}/compare`);
  const originals = await page.$$eval("[data-pane] img", (imgs) => imgs.map((i) => i.dataset.original));
  expect(originals.length === 2 && originals.every((o) => o.startsWith("/media/")), `two originals (${originals})`);
  expect(!requests.some((r) => originals.includes(r)), `no original requested at fit (${requests})`);
  expect((await page.getByRole("toolbar", { name: "Viewer controls" }).count()) === 1, "the toolbar");
  const transition = await page.$eval("[data-pane] img", (img) => getComputedStyle(img).transitionDuration);
  expect(transition === "0s", `no animation with reduced motion (${transition})`);
  await sameRegion("at fit");
  expect((await page.locator("[data-role=dimensions]").allTextContents()).every((t) => /^\d+ × \d+ px$/.test(t)), "sizes shown");

  // Wheel over the first image, off centre: both move to the same region, and past the
  // rendition the originals are requested.
  const stage = await page.locator("[data-stage]").first().boundingBox();
  await page.mouse.move(stage.x + stage.width * 0.3, stage.y + stage.height * 0.35);
  await page.mouse.wheel(0, -400);
  await waitFor("the zoom", async () => Number(await page.getAttribute("[data-viewer]", "data-zoom")) > 1.5);
  const zoomed = await sameRegion("after the wheel");
  expect(zoomed[0].x0 > 0.01 && zoomed[0].x1 < 0.99, `zoomed into a region (${JSON.stringify(zoomed[0])})`);
  await waitFor("the originals to be requested", async () => originals.every((o) => requests.includes(o)));
  await waitFor("the originals shown", async () => (await page.locator('[data-pane] img[data-loaded="original"]').count()) === 2);
  await sameRegion("with the originals");

  // Drag the second image: the first follows.
  const second = await page.locator("[data-stage]").nth(1).boundingBox();
  await page.mouse.move(second.x + second.width / 2, second.y + second.height / 2);
  await page.mouse.down();
  await page.mouse.move(second.x + second.width / 2 + 60, second.y + second.height / 2 + 40, { steps: 4 });
  await page.mouse.up();
  const dragged = await sameRegion("after a drag");
  expect(Math.abs(dragged[0].x0 - zoomed[0].x0) > 0.001, "the drag moved the view");

  // Keyboard: + and the arrows on the second image, 0 fits again.
  await page.locator("[data-stage]").nth(1).focus();
  const zoomBefore = Number(await page.getAttribute("[data-viewer]", "data-zoom"));
  await page.keyboard.press("+");
  expect(Number(await page.getAttribute("[data-viewer]", "data-zoom")) > zoomBefore, "+ zooms in");
  await page.keyboard.press("ArrowRight");
  await page.keyboard.press("ArrowDown");
  await sameRegion("after the keyboard");
  await page.keyboard.press("-");
  await page.keyboard.press("0");
  expect(Number(await page.getAttribute("[data-viewer]", "data-zoom")) === 1, "0 fits");
  await sameRegion("after 0");

  // 100 %: one image pixel per screen pixel, and back.
  await page.getByRole("button", { name: /Show at 100/ }).click();
  expect((await page.getAttribute('[data-action="actual"]', "aria-pressed")) === "true", "100 % pressed");
  const width = Number(await page.getAttribute("[data-pane] img", "data-width"));
  const actual = await rects();
  expect(Math.abs(actual[0].scale - width) < 2, `100 % shows ${width} px wide (${actual[0].scale})`);
  await page.getByRole("button", { name: /Show at 100/ }).click();

  // Swipe overlay by keyboard.
  await page.getByRole("button", { name: /Swipe overlay/ }).click();
  expect((await page.getAttribute('[data-action="swipe"]', "aria-pressed")) === "true", "swipe pressed");
  const divider = page.getByRole("slider", { name: /Swipe divider/ });
  await divider.focus();
  await page.keyboard.press("ArrowLeft");
  await page.keyboard.press("ArrowLeft");
  expect((await divider.getAttribute("aria-valuenow")) === "40", "two steps left: 40");
  const clip = await page.$eval("[data-pane]:nth-child(2) [data-stage]", (s) => s.style.clipPath);
  expect(clip.includes("40%"), `the second image is clipped at 40 % (${clip})`);
  await page.keyboard.press("End");
  expect((await divider.getAttribute("aria-valuenow")) === "100", "End: 100");
  const stacked = await page.$$eval("[data-stage]", (s) => s.map((e) => JSON.stringify(e.getBoundingClientRect())));
  expect(stacked[0] === stacked[1], "the images lie one over the other");
  await sameRegion("in the swipe overlay");

  // 2. A blind run: nothing in the viewer names a model, and no address carries a model's.
  const blindPath = await run(["flux-2", "flux-ultra-1-1"], true);
  requests.length = 0;
  await page.goto(`${base}${blindPath}/compare`);
  await page.waitForFunction(() => [...document.images].every((img) => img.complete));
  const blindStage = await page.locator("[data-stage]").first().boundingBox();
  await page.mouse.move(blindStage.x + blindStage.width / 2, blindStage.y + blindStage.height / 2);
  await page.mouse.wheel(0, -800);
  await waitFor("the zoom", async () => Number(await page.getAttribute("[data-viewer]", "data-zoom")) > 2);
  const html = await page.content();
  const text = await page.locator("body").innerText();
  for (const secret of ["flux", "Flux", "/media/", " px"]) {
    expect(!html.includes(secret) || secret === " px", `the blind viewer's HTML has no ${secret}`);
    expect(!text.includes(secret), `the blind viewer's text has no ${secret}`);
  }
  expect(!requests.some((r) => r.startsWith("/media/") || /flux/i.test(r)), `no model-naming request (${requests})`);
  const labels = await page.locator("[data-pane] [data-role=label]").allTextContents();
  expect(labels.join(",") === "Model A,Model B", `labels ${labels}`);

  const script = readFileSync(join(ROOT, "assets", "viewer.js"));
  console.log(`viewer.js: ${script.length} bytes, ${gzipSync(script).length} gzipped`);
  console.log(`run page  (before): ${before.bytes} bytes transferred (images ${before.images}), ${before.requests} requests, load ${before.loadMs} ms`);
  console.log(`viewer    (after):  ${after.bytes} bytes transferred (images ${after.images}), ${after.requests} requests, load ${after.loadMs} ms`);
  if (problems.length) throw new Error(`problems:\n  ${problems.join("\n  ")}`);
  console.log("viewer: all checks passed");
} catch (err) {
  failed = true;
  console.error(`\nFAILED: ${err.stack || err}`);
  if (problems.length) console.error(`problems:\n  ${problems.join("\n  ")}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server) await server.stop();
}
process.exit(failed ? 1 : 0);
