// What the browser scripts share: starting the real server (target/debug/faceoff) on a free
// port over a fresh database, waiting on conditions with deadlines, launching Debian's Chromium,
// and stopping and cleaning up afterwards.

import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const ROOT = new URL("..", import.meta.url).pathname;
export const BINARY = join(ROOT, "target", "debug", "faceoff");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

export async function waitFor(what, fn, timeoutMs = 30_000) {
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

/// Starts `faceoff serve` over a fresh database named `<name>_<pid>_<time>` on the server the
/// app would use by default, and waits until it is ready. Returns `{ base, env, stop }`; `env` is
/// the server's environment (for running other subcommands against the same database).
export async function startServer({ name, sandboxLatencyMs }) {
  const dbName = `${name}_${process.pid}_${Date.now()}`;
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
  const dataDir = mkdtempSync(join(tmpdir(), `${name}-`));
  Object.assign(env, {
    FACEOFF_ADDR: `127.0.0.1:${port}`,
    FACEOFF_PUBLIC_URL: base,
    FACEOFF_DATA_DIR: dataDir,
    FACEOFF_STORAGE_URL: `file://${join(dataDir, "media")}`,
    FACEOFF_SANDBOX_LATENCY_MS: String(sandboxLatencyMs),
    FACEOFF_WORKERS: "4",
    // The arena counts a fresh account's votes at once, so the boards have rows to show.
    FACEOFF_ARENA_MIN_ACCOUNT_AGE_HOURS: "0",
    RUST_LOG: env.RUST_LOG || "warn",
  });

  const server = spawn(BINARY, ["serve"], { env, stdio: ["ignore", "inherit", "inherit"] });
  let exited = false;
  server.on("exit", (code) => {
    exited = true;
    if (code !== 0 && code !== null) console.error(`server exited with ${code}`);
  });

  async function stop() {
    server.kill("SIGTERM");
    await waitFor("the server to stop", async () => exited, 30_000).catch(() => server.kill("SIGKILL"));
    rmSync(dataDir, { recursive: true, force: true });
    try {
      const admin = env.DATABASE_URL ? Object.assign(new URL(env.DATABASE_URL), { pathname: "/postgres" }).toString() : "postgres";
      execFileSync("psql", [admin, "-qc", `DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`], {
        stdio: "ignore",
        env: { ...process.env, PGDATABASE: "postgres" },
      });
    } catch {
      // psql missing: the database stays; it is small and named after the script.
    }
  }

  try {
    await waitFor("the server to be ready", async () => {
      if (exited) throw new Error("server exited");
      const res = await fetch(`${base}/readyz`);
      return res.ok;
    }, 120_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return { base, env, stop };
}

/// The first link to `prefix` (e.g. "/verify-email/") in a mail to `to` that the server wrote to
/// its file outbox (`{FACEOFF_DATA_DIR}/outbox/*.eml`: no SMTP configured), waiting for it.
export async function mailLink(env, to, prefix) {
  const outbox = join(env.FACEOFF_DATA_DIR, "outbox");
  let link = null;
  await waitFor(`a mail to ${to} with a ${prefix} link`, async () => {
    if (!existsSync(outbox)) return false;
    for (const name of readdirSync(outbox).filter((n) => n.endsWith(".eml"))) {
      // Undo quoted-printable soft line breaks and escaped "=".
      const raw = readFileSync(join(outbox, name), "utf8").replace(/=\r?\n/g, "").replace(/=3D/g, "=");
      if (!raw.includes(`To: ${to}`)) continue;
      const found = raw.match(new RegExp(`https?://[^\\s"<>]*${prefix}[^\\s"<>]*`));
      if (found) {
        link = found[0];
        return true;
      }
    }
    return false;
  });
  return link;
}

/// Debian's Chromium, headless, without the background traffic a closed network refuses.
export function launchBrowser() {
  return chromium.launch({
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
}
