// The user's journey through Faceoff in Debian's Chromium, driven by playwright-core.
//
// Starts the real server (target/debug/faceoff) on a free port over a fresh database, then
// walks through the product as a person would, waiting on conditions (never fixed sleeps).
// Every step is screenshotted at desktop (1280 px) and mobile (390 px) widths under
// target/e2e/. Any JavaScript console error, page error or failed request fails the run.

import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const ROOT = new URL("..", import.meta.url).pathname;
const SHOTS = join(ROOT, "target", "e2e");
const BINARY = join(ROOT, "target", "debug", "faceoff");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const STEP_TIMEOUT = 30_000;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function waitFor(what, fn, timeoutMs = STEP_TIMEOUT) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await fn()) return;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
}

// A fresh database on the same server the app would use by default.
const dbName = `faceoff_e2e_${process.pid}_${Date.now()}`;
const env = { ...process.env };
if (env.DATABASE_URL) {
  const url = new URL(env.DATABASE_URL);
  url.pathname = `/${dbName}`;
  env.DATABASE_URL = url.toString();
} else {
  env.PGDATABASE = dbName;
}

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const dataDir = mkdtempSync(join(tmpdir(), "faceoff-e2e-"));
Object.assign(env, {
  FACEOFF_ADDR: `127.0.0.1:${port}`,
  FACEOFF_PUBLIC_URL: base,
  FACEOFF_DATA_DIR: dataDir,
  FACEOFF_STORAGE_URL: `file://${join(dataDir, "media")}`,
  FACEOFF_SANDBOX_LATENCY_MS: "1500",
  FACEOFF_WORKERS: "4",
  RUST_LOG: env.RUST_LOG || "warn",
});

mkdirSync(SHOTS, { recursive: true });
const server = spawn(BINARY, ["serve"], { env, stdio: ["ignore", "inherit", "inherit"] });
let serverExited = false;
server.on("exit", (code) => {
  serverExited = true;
  if (code !== 0 && code !== null) console.error(`server exited with ${code}`);
});

const problems = [];
let browser;
let failed = false;
try {
  await waitFor("the server to be ready", async () => {
    if (serverExited) throw new Error("server exited");
    const res = await fetch(`${base}/readyz`);
    return res.ok;
  }, 120_000);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-dev-shm-usage",
    ],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error on ${page.url()}: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error on ${page.url()}: ${err.message}`));
  page.on("requestfailed", (req) => {
    const failure = req.failure()?.errorText || "";
    // An EventSource closed by navigating away is not a failure of the app.
    if (failure.includes("ERR_ABORTED") && req.resourceType() === "eventsource") return;
    problems.push(`request failed: ${req.method()} ${req.url()} ${failure}`);
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

  const { journey } = await import("./steps.mjs");
  await journey({ page, base, step, waitFor, balance, imagesLoaded, expect: assert });
  console.log(`\njourney passed; screenshots in ${SHOTS}`);
} catch (err) {
  failed = true;
  console.error(`\nFAILED: ${err.stack || err}`);
  if (problems.length) console.error(`problems:\n  ${problems.join("\n  ")}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  server.kill("SIGTERM");
  await waitFor("the server to stop", async () => serverExited, 30_000).catch(() => server.kill("SIGKILL"));
  rmSync(dataDir, { recursive: true, force: true });
  try {
    const admin = env.DATABASE_URL ? Object.assign(new URL(env.DATABASE_URL), { pathname: "/postgres" }).toString() : "postgres";
    execFileSync("psql", [admin, "-qc", `DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`], { stdio: "ignore", env: { ...process.env, PGDATABASE: "postgres" } });
  } catch {
    // psql missing: the database stays; it is small and named faceoff_e2e_*.
  }
}
process.exit(failed ? 1 : 0);

function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}
