// The user's journey through Faceoff in Debian's Chromium, driven by playwright-core.
//
// Starts the real server (target/debug/faceoff) on a free port over a fresh database, then
// walks through the product as a person would, waiting on conditions (never fixed sleeps).
// Every step is screenshotted at desktop (1280 px) and mobile (390 px) widths under
// target/e2e/. Any JavaScript console error, page error or failed request fails the run.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { ROOT, launchBrowser, mailLink as readMail, startServer, waitFor } from "./server.mjs";

const SHOTS = join(ROOT, "target", "e2e");
const STEP_TIMEOUT = 30_000;

mkdirSync(SHOTS, { recursive: true });
const problems = [];
let browser;
let server;
let failed = false;
try {
  server = await startServer({ name: "faceoff_e2e", sandboxLatencyMs: 1500 });
  const { base } = server;
  browser = await launchBrowser();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error on ${page.url()}: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error on ${page.url()}: ${err.message}`));
  page.on("requestfailed", (req) => {
    const failure = req.failure()?.errorText || "";
    // A live stream, a (lazy) image or the favicon still loading, cancelled by navigating away
    // is not a failure of the app; a broken one shows up as an HTTP error status below.
    const aborted = failure.includes("ERR_ABORTED");
    if (aborted && ["eventsource", "image"].includes(req.resourceType())) return;
    if (aborted && new URL(req.url()).pathname === "/assets/favicon.svg") return;
    problems.push(`request failed: ${req.method()} ${req.url()} (${req.resourceType()}) ${failure}`);
  });
  page.on("response", (res) => {
    if (res.status() >= 400) problems.push(`HTTP ${res.status()} for ${res.request().method()} ${res.url()}`);
  });

  let stepNo = 0;
  async function step(name, fn) {
    stepNo += 1;
    const label = `${String(stepNo).padStart(2, "0")}-${name}`;
    process.stdout.write(`step ${label} ... `);
    await fn();
    if (problems.length) throw new Error(`problems during ${label}:\n  ${problems.join("\n  ")}`);
    await page.screenshot({ path: join(SHOTS, `${label}-desktop.png`), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: join(SHOTS, `${label}-mobile.png`), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });
    if (problems.length) throw new Error(`problems during ${label}:\n  ${problems.join("\n  ")}`);
    console.log("ok");
  }

  const balance = async () => Number((await page.locator('[data-testid="balance"]').first().textContent()).trim());
  const imagesLoaded = (selector) =>
    page.locator(selector).evaluateAll((imgs) => imgs.length > 0 && imgs.every((img) => img.complete && img.naturalWidth > 0));

  const mailLink = (to, prefix) => readMail(server.env, to, prefix);

  const { journey } = await import("./steps.mjs");
  await journey({ page, base, step, waitFor, balance, imagesLoaded, mailLink, expect: assert });
  console.log(`\njourney passed; screenshots in ${SHOTS}`);
} catch (err) {
  failed = true;
  console.error(`\nFAILED: ${err.stack || err}`);
  if (problems.length) console.error(`problems:\n  ${problems.join("\n  ")}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server) await server.stop();
}
process.exit(failed ? 1 : 0);

function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}
