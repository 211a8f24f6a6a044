// Visual and HTML check of every page: screenshots at 390 px and 1280 px, plus the Nu Html Checker.
//
// Starts the real server (target/debug/faceoff) on a free port over a fresh database (the same
// start/stop logic as journey.mjs), signs up, promotes the user to admin, runs a comparison,
// triggers a 402 in the studio, buys a pack in the sandbox, and visits every page. For each page it
// writes target/screens/<name>-{mobile,desktop}.png and the HTML the server sent as
// target/screens/<name>.html. It fails when a page overflows horizontally at 390 px, when the
// browser reports a script error, or (when java is available) when vnu.jar reports an HTML error.
//
//   node e2e/screenshots.mjs            # screenshots + validation (needs java for validation)
//   SKIP_VALIDATION=1 node e2e/screenshots.mjs

import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BINARY, ROOT, launchBrowser, mailLink, startServer, waitFor } from "./server.mjs";

const SHOTS = join(ROOT, "target", "screens");
const VNU = join(ROOT, "e2e", "node_modules", "vnu-jar", "build", "dist", "vnu.jar");
const STEP_TIMEOUT = 30_000;
const WIDTHS = { mobile: 390, desktop: 1280 };

rmSync(SHOTS, { recursive: true, force: true });
mkdirSync(SHOTS, { recursive: true });
const problems = [];
// The landing pages' budget (see the README): HTML size and server time; the totals are reported.
const BUDGETED = new Set(["home", "model-flux-2", "use-case-portrait", "comparison-seed"]);
const BUDGET = { html: 60 * 1024, total: 1536 * 1024, ttfb: 500 };
const weights = {};
let browser;
let server;
let failed = false;
try {
  server = await startServer({ name: "faceoff_screens", sandboxLatencyMs: 200 });
  const { base, env } = server;
  browser = await launchBrowser();
  const context = await browser.newContext({ viewport: { width: WIDTHS.desktop, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on("console", (msg) => {
    // Error statuses the check provokes on purpose (404, 402, 422) are logged by Chromium as console errors.
    if (msg.type() === "error" && !/status of (4\d\d)/.test(msg.text())) problems.push(`console error on ${page.url()}: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error on ${page.url()}: ${err.message}`));

  // Screenshots the current page at both widths and saves the HTML the server sent.
  async function shot(name, response, expectedStatus = 200) {
    process.stdout.write(`${name} ... `);
    if (!response) throw new Error(`${name}: no response`);
    if (response.status() !== expectedStatus) throw new Error(`${name}: HTTP ${response.status()} (expected ${expectedStatus}) for ${response.url()}`);
    writeFileSync(join(SHOTS, `${name}.html`), await response.text());
    await page.waitForLoadState("load");
    await page.evaluate(() => document.fonts.ready);
    for (const [label, width] of Object.entries(WIDTHS)) {
      await page.setViewportSize({ width, height: label === "mobile" ? 844 : 900 });
      // Lazy images: scroll through the page so they load before the full-page screenshot.
      await page.evaluate(async () => {
        for (let y = 0; y < document.body.scrollHeight; y += 600) {
          window.scrollTo(0, y);
          await new Promise((r) => requestAnimationFrame(r));
        }
        window.scrollTo(0, 0);
      });
      await page.waitForFunction(() => [...document.images].every((img) => img.complete), null, { timeout: 10_000 }).catch(() => {});
      const overflow = await page.evaluate(() => {
        const doc = document.documentElement;
        if (doc.scrollWidth <= doc.clientWidth) return null;
        const wide = [...document.querySelectorAll("body *")].filter((el) => el.getBoundingClientRect().right > doc.clientWidth + 1);
        const name = (el) => `${el.tagName.toLowerCase()}${el.className ? "." + String(el.className).trim().replace(/\s+/g, ".") : ""}`;
        const culprits = wide
          // Content scrolled inside its own box (a .table-wrap) does not widen the page.
          .filter((el) => {
            for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
              if (getComputedStyle(p).overflowX !== "visible") return false;
            }
            return true;
          })
          .slice(0, 5)
          .map(name);
        // Nothing outside a scroll box: an absolutely positioned descendant escaped it, or text
        // (a long word) sticks out of its box.
        const escaped = wide.filter((el) => getComputedStyle(el).position === "absolute");
        const spilled = [...document.querySelectorAll("body *")].filter((el) => el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0 && getComputedStyle(el).overflowX === "visible");
        const shown = (culprits.length ? culprits : escaped.length ? escaped : spilled).slice(0, 5).map(name);
        return `${doc.scrollWidth}px wide (viewport ${doc.clientWidth}px): ${shown.join(", ")}`;
      });
      if (overflow) problems.push(`${name} overflows at ${width}px: ${overflow}`);
      await page.screenshot({ path: join(SHOTS, `${name}-${label}.png`), fullPage: true });
    }
    await page.setViewportSize({ width: WIDTHS.desktop, height: 900 });
    if (BUDGETED.has(name)) {
      // Weight and timing of the landing pages, as the browser saw them (after scrolling every
      // lazy image in): the HTML, everything transferred, and the first render.
      const m = await page.evaluate(() => {
        const nav = performance.getEntriesByType("navigation")[0];
        const res = performance.getEntriesByType("resource");
        const paint = performance.getEntriesByName("first-contentful-paint")[0];
        return {
          html: nav.encodedBodySize,
          total: nav.transferSize + res.reduce((s, r) => s + (r.transferSize || r.encodedBodySize || 0), 0),
          images: res.filter((r) => r.initiatorType === "img").length,
          ttfb: Math.round(nav.responseStart - nav.requestStart),
          fcp: paint ? Math.round(paint.startTime) : null,
        };
      });
      weights[name] = m;
      if (m.html > BUDGET.html) problems.push(`${name}: HTML ${m.html} bytes over the ${BUDGET.html} budget`);
      if (m.total > BUDGET.total) problems.push(`${name}: ${m.total} bytes transferred, over the ${BUDGET.total} budget`);
      if (m.ttfb > BUDGET.ttfb) problems.push(`${name}: server answered in ${m.ttfb} ms, over the ${BUDGET.ttfb} ms budget`);
      process.stdout.write(`[html ${(m.html / 1024).toFixed(1)} KiB, all ${(m.total / 1024).toFixed(0)} KiB, ${m.images} images, ttfb ${m.ttfb} ms, fcp ${m.fcp} ms] `);
    }
    console.log("ok");
  }
  const visit = async (name, path, status = 200) => shot(name, await page.goto(`${base}${path}`), status);
  // Submits a form by clicking `button` and returns the response to the POST (not the redirect target).
  async function submit(button, urlPart) {
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === "POST" && r.url().includes(urlPart) && r.request().isNavigationRequest()),
      button.click(),
    ]);
    await page.waitForLoadState("load");
    return response;
  }

  const email = `screens-${Date.now()}@example.com`;
  const password = "a long and happy password";

  // The showcase images are generated once at start-up: wait for them so the pages show images.
  await waitFor("the showcase images", async () => {
    for (const path of ["/", "/compare/flux-2-vs-flux-ultra-1-1/portrait", "/compare/gpt-image-2-vs-nano-banana-2/typography", "/models/flux-2", "/use-cases/portrait"]) {
      if ((await (await fetch(`${base}${path}`)).text()).includes("showcase-pending")) return false;
    }
    return true;
  }, 120_000);

  // Anonymous pages.
  await visit("home", "/");
  await visit("models", "/models");
  await visit("model-flux-2", "/models/flux-2");
  await visit("compare", "/compare");
  await visit("compare-picker-3", "/compare?models=flux-2,flux-ultra-1-1,flux-2-max");
  await visit("comparison-seed", "/compare/flux-2-vs-flux-ultra-1-1/portrait");
  await visit("comparison-plain", "/compare/flux-2-max-vs-flux-2-flex");
  await visit("use-case-portrait", "/use-cases/portrait");
  await visit("use-case-typography", "/use-cases/typography");
  // The seed page's picker with JavaScript: the pair preselected, a live count, boxes disabled
  // at four, and the form leading to the four-model comparison.
  {
    const response = await page.goto(`${base}/compare/flux-2-vs-flux-ultra-1-1/portrait`);
    const picker = page.locator('form[data-testid="compare-picker"]');
    await picker.locator("summary").click();
    const status = picker.locator("[data-picker-status]");
    if (!(await status.textContent()).startsWith("2/4 selected")) throw new Error(`picker: ${await status.textContent()}`);
    await picker.locator('input[value="gpt-image-2"]').check();
    await picker.locator('input[value="nano-banana-2"]').check();
    await waitFor("4/4 selected", async () => (await status.textContent()).startsWith("4/4 selected"));
    if (!(await picker.locator('input[value="ideogram-3"]').isDisabled())) throw new Error("picker: a fifth model is not disabled");
    await shot("comparison-seed-picker", response);
    await Promise.all([page.waitForURL("**/compare?models=*"), picker.getByRole("button", { name: "Compare" }).click()]);
    const url = new URL(page.url());
    if (url.searchParams.getAll("models").join(",") !== "flux-2,flux-ultra-1-1,gpt-image-2,nano-banana-2") throw new Error(`picker led to ${url}`);
    if ((await page.locator("table.feature-table thead th[scope=col] a").count()) !== 4) throw new Error("picker: not a four-model comparison");
  }
  await visit("viewer-showcase", "/compare/flux-2-vs-flux-ultra-1-1/portrait/look");
  await visit("model-usage-billed", "/models/gpt-image-2");
  await visit("model-retired", "/models/gpt-image-1");
  await visit("comparison-cross-maker", "/compare/gpt-image-2-vs-nano-banana-2/typography");
  await visit("comparison-generic-cross-maker", "/compare/ideogram-3-vs-hunyuan-image-3");
  await visit("leaderboard", "/leaderboard");
  await visit("leaderboard-demo", "/leaderboard/demo");
  await visit("login", "/login");
  await visit("not-found", "/models/no-such-model", 404);

  // Sign-up with a validation error, then for real.
  await page.goto(`${base}/signup`);
  await page.getByLabel("Email").fill("not-an-email");
  await page.getByLabel("Password").fill("short");
  await page.locator("form").evaluate((form) => form.setAttribute("novalidate", ""));
  await shot("signup-error", await submit(page.getByRole("button", { name: "Sign up" }), "/signup"), 422);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.waitForURL("**/signup/check-email**");
  await visit("signup-check-email", "/signup/check-email");
  await visit("forgot-password", "/forgot-password");
  await visit("link-refused", "/reset-password/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 404);
  // A reset link, read from the server's file outbox: the form it opens.
  await page.goto(`${base}/forgot-password`);
  await page.getByLabel("Email").fill(email);
  await page.getByRole("button", { name: "Send me a link" }).click();
  await page.waitForURL("**/forgot-password");
  await visit("reset-password", new URL(await mailLink(env, email, "/reset-password/")).pathname);
  // Logged in before verifying: the banner shows on every page until the mailed link is opened.
  await page.goto(`${base}/login`);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await waitFor("the header balance", async () => (await page.locator('[data-testid="balance"]').count()) > 0);
  await visit("account-unverified", "/account");
  await visit("confirm-email", new URL(await mailLink(env, email, "/verify-email/")).pathname);
  await page.getByRole("button", { name: "Confirm my email address" }).click();
  await page.waitForURL("**/account?notice=email-verified");

  execFileSync(BINARY, ["admin", "promote", "--email", email], { env, stdio: ["ignore", "ignore", "inherit"] });

  // A comparison run.
  await page.goto(`${base}/studio?models=flux-2,flux-ultra-1-1`);
  await page.locator("#prompt").fill("A lighthouse keeper's cat asleep on a stack of old charts, morning light");
  await page.getByRole("button", { name: "Run", exact: true }).click();
  await page.waitForURL("**/runs/*");
  const runPath = new URL(page.url()).pathname;
  await waitFor("both images on the run page", async () => (await page.locator('figure.result[data-status="delivered"] img').count()) === 2, 60_000);

  // Not enough credits: four models at 4k, repeated until the balance runs out.
  let refused;
  for (let i = 0; i < 10 && !refused; i += 1) {
    await page.goto(`${base}/studio?models=flux-2,flux-ultra-1-1,flux-2-max,flux-2-flex`);
    if (await page.locator('input[name="mode"][value="4k"]').isEnabled()) await page.locator('input[name="mode"][value="4k"]').check();
    await page.locator("#prompt").fill("A glass teapot full of tiny galaxies on a wooden table");
    const response = await submit(page.getByRole("button", { name: "Run", exact: true }), "/runs");
    if (response.status() === 402) refused = response;
  }
  if (!refused) throw new Error("the studio never answered 402");
  await shot("studio-402", refused, 402);

  await visit("studio", "/studio?models=flux-2,flux-ultra-1-1");
  await visit("run", runPath);
  // The comparison viewer of the blind run before the vote (labels only), then after it.
  await visit("viewer-2-blind", `${runPath}/compare`);
  // Vote on the blind run, see the names, and wait for the background recompute (every 30 s) to
  // put it on the sandbox demo board.
  await page.goto(`${base}${runPath}`);
  await page.getByLabel(/Model A is better/).check();
  await page.getByRole("button", { name: "Vote and reveal the names" }).click();
  await waitFor("the vote to be recorded", async () => (await page.locator('[data-testid="vote-summary"]').count()) > 0);
  await visit("run-voted", runPath);
  await visit("viewer-2", `${runPath}/compare`);
  await waitFor("the demo board", async () => {
    await page.goto(`${base}/leaderboard/demo`);
    return (await page.locator('[data-testid="board"]').count()) > 0;
  }, 90_000);
  await visit("leaderboard-demo-votes", "/leaderboard/demo");
  await visit("runs", "/runs");
  await visit("account-arena", "/account/arena");
  await visit("account", "/account");
  await visit("account-email", "/account/email");
  await visit("account-delete", "/account/delete");
  await visit("api-keys", "/account/api-keys");
  await visit("webhooks", "/account/webhooks");
  await visit("api-docs", "/docs/api");
  await visit("admin", "/admin");
  await visit("admin-user", `/admin?email=${encodeURIComponent(email)}`);

  // Buy a pack in the sandbox.
  await page.goto(`${base}/credits`);
  await page.getByRole("button", { name: /Buy 500 credits/ }).click();
  await page.waitForURL("**/checkout/sandbox/**");
  await visit("checkout-sandbox", new URL(page.url()).pathname);
  await page.getByRole("button", { name: /^Pay / }).click();
  await page.waitForURL("**/credits/payments/**");
  await visit("payment", new URL(page.url()).pathname);
  await visit("credits", "/credits");

  // Four models side by side in the comparison viewer (paid from the pack just bought).
  await page.goto(`${base}/studio?models=flux-2,flux-ultra-1-1,flux-2-max,flux-2-flex`);
  if (await page.locator('input[name="blind"]').isChecked()) await page.locator('input[name="blind"]').click();
  await page.locator('input[name="mode"][value="2k"]').check();
  await page.locator("#prompt").fill("A close portrait of an old fisherman, wet skin, fine beard hair, harbour behind");
  await page.getByRole("button", { name: "Run", exact: true }).click();
  await page.waitForURL("**/runs/*");
  const fourPath = new URL(page.url()).pathname;
  await waitFor("four images on the run page", async () => (await page.locator('figure.result[data-status="delivered"] img').count()) === 4, 60_000);
  await visit("viewer-4", `${fourPath}/compare`);

  writeFileSync(join(SHOTS, "weights.json"), JSON.stringify(weights, null, 2));
  if (problems.length) throw new Error(`problems:\n  ${problems.join("\n  ")}`);
  console.log(`\nscreenshots in ${SHOTS}`);
} catch (err) {
  failed = true;
  console.error(`\nFAILED: ${err.stack || err}`);
  if (problems.length) console.error(`problems:\n  ${problems.join("\n  ")}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server) await server.stop();
}

// The Nu Html Checker over every saved page.
if (!failed && !process.env.SKIP_VALIDATION) {
  const java = spawnSync("java", ["-version"], { stdio: "ignore" });
  if (java.error) {
    console.log("HTML validation skipped: java not found");
  } else if (!existsSync(VNU)) {
    console.error(`HTML validation: ${VNU} missing (run npm ci in e2e/)`);
    failed = true;
  } else {
    const files = readdirSync(SHOTS).filter((f) => f.endsWith(".html")).map((f) => join(SHOTS, f));
    const result = spawnSync("java", ["-jar", VNU, "--errors-only", ...files], { encoding: "utf8" });
    const errors = (result.stderr || "").split("\n").filter((line) => line.includes("error:"));
    if (result.status !== 0) {
      console.error(result.stderr);
      console.error(`HTML validation: ${errors.length} error(s) in ${files.length} pages`);
      failed = true;
    } else {
      console.log(`HTML validation: ${files.length} pages, no errors`);
    }
  }
}
process.exit(failed ? 1 : 0);
