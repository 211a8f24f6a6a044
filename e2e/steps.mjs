// The journey itself: what a person does, step by step (see journey.mjs for the harness).

const SEED_PAIR = "/compare/flux-2-vs-flux-ultra-1-1/portrait";

export async function journey({ page, base, step, waitFor, balance, imagesLoaded, mailLink, expect }) {
  const email = `e2e-${Date.now()}@example.com`;
  const password = "a long and happy password";
  let showcasePrompt = "";
  let runUrl = "";

  await step("home-to-comparison", async () => {
    await page.goto(`${base}/`);
    await page.locator(`a[href="${SEED_PAIR}"]`).first().click();
    await page.waitForURL(`**${SEED_PAIR}`);
    const rows = await page.locator('[data-testid="feature-table"] tbody tr th').allTextContents();
    for (const row of ["Provider", "Subcategories", "1080p / 2k Mode", "4k Mode", "NSFW Rating", "Aspect Ratio", "Model Variant", "Starting Price"]) {
      expect(rows.map((r) => r.trim()).includes(row), `feature table row ${row} (rows: ${rows})`);
    }
    // The showcase images are lazy-loaded below the fold: scroll to them, then wait for both.
    // They are generated once at start-up; until then the page shows placeholders, so a person
    // would come back a moment later.
    const shots = page.locator('[data-testid="showcase"] img');
    await waitFor("two showcase images", async () => {
      if ((await shots.count()) === 2) return true;
      await page.waitForTimeout(500);
      await page.reload();
      return false;
    }, 60_000);
    await shots.first().scrollIntoViewIfNeeded();
    await waitFor("showcase images to load", () => imagesLoaded('[data-testid="showcase"] img'));
    showcasePrompt = (await page.locator('[data-testid="showcase-prompt"]').textContent()).trim();
    expect(showcasePrompt.length > 20, "the showcase prompt is shown");
  });

  await step("sign-up", async () => {
    await page.locator('[data-testid="cta"]').click();
    await page.waitForURL("**/signup**");
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign up" }).click();
    await page.waitForURL("**/signup/check-email**");
    expect((await page.locator('[data-testid="check-email"]').count()) === 1, "sign-up asks to check the inbox");
  });

  await step("verify-email", async () => {
    // The verification mail, read from the server's file outbox (no SMTP configured).
    const link = await mailLink(email, "/verify-email/");
    await page.goto(link);
    await page.getByRole("button", { name: "Confirm my email address" }).click();
    await page.waitForURL("**/account?notice=email-verified");
    await waitFor("the header balance", async () => (await page.locator('[data-testid="balance"]').count()) > 0);
    expect((await page.locator('[data-testid="verify-banner"]').count()) === 0, "no banner once verified");
    expect((await balance()) === 100, `balance after verification is ${await balance()}`);
  });

  await step("studio-run", async () => {
    await page.goto(`${base}${SEED_PAIR}`);
    await page.locator('[data-testid="cta"]').click();
    await page.waitForURL("**/studio?models=**");
    for (const slug of ["flux-2", "flux-ultra-1-1"]) {
      expect(await page.locator(`input[name="models"][value^="${slug}"]`).first().isChecked(), `${slug} is preselected`);
    }
    await page.locator('input[name="mode"][value="2k"]').check();
    await page.locator("#prompt").fill(showcasePrompt);
    await page.getByRole("button", { name: "Run", exact: true }).click();
    await page.waitForURL("**/runs/*");
    runUrl = page.url();
    // Mark the document: if the page reloaded, the mark would be gone.
    await page.evaluate(() => { window.__faceoffNoReload = true; });
    await waitFor("both images on the run page", async () => {
      const delivered = await page.locator('figure.result[data-status="delivered"] img').count();
      return delivered === 2 && (await imagesLoaded("figure.result img"));
    }, 60_000);
    expect(await page.evaluate(() => window.__faceoffNoReload === true), "the images arrived without a reload");
    await waitFor("the header balance to read 62", async () => (await balance()) === 62);
  });

  await step("buy-credits", async () => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Credits" }).click();
    await page.waitForURL("**/credits");
    await page.getByRole("button", { name: /Buy 500 credits/ }).click();
    await page.waitForURL("**/checkout/sandbox/**");
    expect((await page.locator('[data-testid="test-mode"]').count()) > 0, "the sandbox checkout says it is test mode");
    await page.getByRole("button", { name: /^Pay / }).click();
    await waitFor("the balance to include the pack", async () => (await balance()) === 562);
    await page.goto(`${base}/credits`);
    const labels = (await page.locator(".history-line .history-label").allTextContents()).map((t) => t.trim());
    const count = (label) => labels.filter((l) => l === label).length;
    expect(count("Sign-up bonus") === 1, `one sign-up line (${labels})`);
    expect(count("Top-up") === 1, `one top-up line (${labels})`);
    expect(labels.filter((l) => l.startsWith("Run")).length === 2, `two run charges (${labels})`);
  });

  await step("log-out-and-in", async () => {
    await page.getByRole("button", { name: "Log out" }).click();
    await waitFor("the log-in link", async () => (await page.locator('.account-nav a[href="/login"]').count()) > 0);
    await page.goto(runUrl);
    await page.waitForURL("**/login**");
    expect((await page.locator("figure.result").count()) === 0, "the run is not shown when logged out");
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.waitForURL(runUrl);
    await waitFor("the run's images", () => imagesLoaded("figure.result img"));
  });
}
