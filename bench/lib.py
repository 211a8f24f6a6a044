#!/usr/bin/env python3
"""Helpers for bench/run (standard library only).

  lib.py cpu OUT PATTERN...        sample CPU use until SIGTERM, write a summary line to OUT
  lib.py signup BASE N PASSWORD    sign up N users over HTTP, print "email cookie" lines
  lib.py keys BASE USERS            create one API key per signed-in user on /account/api-keys
                                   (with the password in BENCH_PASSWORD)
  lib.py submit BASE KEYS N        submit N runs through the JSON API (8 at a time), print "ok failed"
  lib.py logins BASE USERS RATE SECONDS OUT   log in RATE times a second for SECONDS, summary to OUT
  lib.py verdict CPUFILE NCPU       name the bottleneck from a cpu summary
  lib.py per CPUFILE COUNT          app and PostgreSQL CPU ms per unit of work (COUNT units in the phase)
  lib.py wrk FILE                  parse wrk --latency output: "rps p50_ms p99_ms non2xx socket_errors"

Sign-up and log-in are limited to 10 attempts a minute per client IP, so each attempt binds its
own loopback source address (all of 127.0.0.0/8 is local on Linux).
"""

import concurrent.futures
import http.client
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.parse
import uuid

CSRF_RE = re.compile(r'name="csrf_token"\s+value="([^"]+)"|value="([^"]+)"\s+name="csrf_token"')
COOKIE_NAME = "faceoff_session"  # the session; forms also need the faceoff_csrf cookie


def loopback(i, third=1):
    """A distinct loopback address per attempt: 127.<third+i//250>.<i%250+1>.1 ... spread wide."""
    return f"127.{third + i // 250}.{i % 250 + 1}.{(i // 62500) % 250 + 2}"


class Client:
    """One browser: its own connection, source address and cookies (the session, and the CSRF
    nonce its forms' tokens are bound to)."""

    def __init__(self, base, source=None):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.source = source
        self.cookies = {}
        self.conn = None

    @property
    def cookie(self):
        """The session cookie's value."""
        return self.cookies.get(COOKIE_NAME)

    @cookie.setter
    def cookie(self, value):
        self.cookies[COOKIE_NAME] = value

    def request(self, method, path, body=None, headers=None):
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items() if v)
        for attempt in (1, 2):
            if self.conn is None:
                src = (self.source, 0) if self.source else None
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30, source_address=src)
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                name, _, value = v.split(";", 1)[0].partition("=")
                self.cookies[name.strip()] = value.strip()
        return r.status, data.decode("utf-8", "replace")

    def form(self, path, fields):
        body = urllib.parse.urlencode(fields)
        return self.request("POST", path, body, {"Content-Type": "application/x-www-form-urlencoded"})

    def csrf(self, path):
        status, html = self.request("GET", path)
        m = CSRF_RE.search(html)
        if status != 200 or not m:
            raise RuntimeError(f"GET {path}: {status}, no csrf_token")
        return m.group(1) or m.group(2)

    def close(self):
        if self.conn:
            self.conn.close()


def signup(base, email, password, source):
    c = Client(base, source)
    token = c.csrf("/signup")
    status, body = c.form("/signup", {"email": email, "password": password, "csrf_token": token})
    if status not in (302, 303):
        c.close()
        raise RuntimeError(f"sign-up of {email} from {source}: HTTP {status}: {body[:300]}")
    # Sign-up answers "check your inbox" without signing in: log in (unverified accounts may).
    token = c.csrf("/login")
    status, body = c.form("/login", {"email": email, "password": password, "csrf_token": token})
    c.close()
    if status not in (302, 303) or not c.cookie:
        raise RuntimeError(f"log-in of {email} after sign-up from {source}: HTTP {status}: {body[:300]}")
    return c.cookie


def login(base, email, password, source):
    c = Client(base, source)
    try:
        token = c.csrf("/login")
        status, _ = c.form("/login", {"email": email, "password": password, "csrf_token": token})
        return status
    finally:
        c.close()


def cmd_signup(base, n, password):
    tag = uuid.uuid4().hex[:8]
    emails = [f"bench-{tag}-{i}@example.com" for i in range(int(n))]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        cookies = list(pool.map(lambda ie: signup(base, ie[1], password, loopback(ie[0], 1)), enumerate(emails)))
    for e, c in zip(emails, cookies):
        print(e, c)


def create_key(base, cookie, password):
    """Creates a personal API key on the API-key page as the signed-in user (creating a key asks
    for the password); returns its secret."""
    c = Client(base)
    c.cookie = cookie
    token = c.csrf("/account/api-keys")
    fields = {"action": "create", "name": "bench", "password": password, "csrf_token": token}
    status, html = c.form("/account/api-keys", fields)
    c.close()
    m = re.search(r'data-testid="new-api-key">(fo_[^<\s]+)<', html) or re.search(r"\b(fo_[A-Za-z0-9_-]{20,})", html)
    if status != 200 or not m:
        raise RuntimeError(f"POST /account/api-keys: HTTP {status}, no key in the page")
    return m.group(1)


def cmd_keys(base, users_file):
    cookies = [line.split()[1] for line in open(users_file) if line.strip()]
    password = os.environ["BENCH_PASSWORD"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for key in pool.map(lambda c: create_key(base, c, password), cookies):
            print(key)


def cmd_submit(base, keys_file, n):
    keys = [line.split()[0] for line in open(keys_file) if line.strip()]
    n = int(n)
    ok = failed = 0
    lock = threading.Lock()
    local = threading.local()
    codes = {}

    def one(i):
        nonlocal ok, failed
        if not hasattr(local, "c"):
            local.c = Client(base)
        body = json.dumps(
            {
                "prompt": f"bench pipeline run {i}: candid cafe portrait, window light",
                "models": ["flux-2", "flux-ultra-1-1"],
                "mode": "2k",
                "aspect_ratio": "1:1",
            }
        )
        headers = {
            "Authorization": f"Bearer {keys[i % len(keys)]}",
            "Content-Type": "application/json",
            "Idempotency-Key": f"pipeline-{uuid.uuid4()}",
        }
        status, _ = local.c.request("POST", "/api/v1/runs", body, headers)
        with lock:
            codes[status] = codes.get(status, 0) + 1
            if 200 <= status < 300:
                ok += 1
            else:
                failed += 1

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))
    print(ok, failed, " ".join(f"{k}:{v}" for k, v in sorted(codes.items())))


class Stop:
    """Set by SIGTERM. The handler only flips a flag: calling Event.set() in it can deadlock
    with an Event.wait() the main thread is inside (both take the Event's lock), which hung a
    run of bench/run for minutes."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, *_):
        self.requested = True

    def sleep(self, seconds):
        """Sleeps up to `seconds`, waking within 50 ms of a stop."""
        end = time.monotonic() + seconds
        while not self.requested and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))


def cmd_logins(base, users_file, rate, seconds, out):
    """Paced by a deadline: attempt k starts at t0 + k/rate, on its own thread if one is late."""
    users = [line.split()[0] for line in open(users_file) if line.strip()]
    password = os.environ["BENCH_PASSWORD"]
    rate, seconds = float(rate), float(seconds)
    stop = Stop()
    results = {}
    lock = threading.Lock()
    latencies = []

    def one(k):
        t = time.monotonic()
        try:
            status = login(base, users[k % len(users)], password, loopback(k, 100))
        except Exception:  # noqa: BLE001 - counted as a failed login
            status = "error"
        with lock:
            results[status] = results.get(status, 0) + 1
            latencies.append(time.monotonic() - t)

    t0 = time.monotonic()
    k = 0
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        while not stop.requested and (seconds <= 0 or time.monotonic() - t0 < seconds):
            due = t0 + k / rate
            now = time.monotonic()
            if due > now:
                stop.sleep(due - now)
                continue
            pool.submit(one, k)
            k += 1
    elapsed = time.monotonic() - t0
    done = sum(results.values())
    ok = sum(v for s, v in results.items() if s in (302, 303))
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else 0
    with open(out, "w") as f:
        f.write(
            f"{done / elapsed:.1f} {ok} {done} {p99:.0f} "
            + ",".join(f"{s}:{v}" for s, v in sorted(results.items(), key=str))
            + "\n"
        )


def proc_ticks():
    """{pid: (utime+stime ticks, comm, cmdline)} for every process we can read."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                s = f.read()
            comm = s[s.index("(") + 1 : s.rindex(")")]
            fields = s[s.rindex(")") + 2 :].split()
            ticks = int(fields[11]) + int(fields[12])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except (OSError, ValueError):
            continue
        out[int(pid)] = (ticks, comm, cmd)
    return out


def machine_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle


def cmd_cpu(out, app_pid, *db_names):
    """CPU used by: the app (faceoff), our PostgreSQL backends (+ its shared writers), the load
    generators (wrk, pgbench, bench python, curl), and everything else, in % of one core."""
    hz = os.sysconf("SC_CLK_TCK")
    app_pid = int(app_pid)
    stop = Stop()
    me = os.getpid()

    def category(pid, comm, cmd):
        if pid == app_pid:
            return "app"
        if comm == "postgres" or cmd.startswith("postgres:"):
            if any(db in cmd for db in db_names) or re.search(r"writer|checkpointer|walwriter", cmd):
                return "pg"
            return "other"
        if comm in ("wrk", "oha", "pgbench", "curl") or (comm.startswith("python") and "bench/lib.py" in cmd and pid != me):
            return "load"
        return "other"

    first = proc_ticks()
    m0 = machine_ticks()
    t0 = time.monotonic()
    seen = dict(first)
    while not stop.requested:
        stop.sleep(0.25)
        seen.update(proc_ticks())
    elapsed = time.monotonic() - t0
    busy = (machine_ticks() - m0) / hz / elapsed * 100
    use = {"app": 0.0, "pg": 0.0, "load": 0.0}
    for pid, (ticks, comm, cmd) in seen.items():
        cat = category(pid, comm, cmd)
        if cat == "other":
            continue
        start = first[pid][0] if pid in first else 0
        use[cat] += (ticks - start) / hz / elapsed * 100
    other = max(0.0, busy - sum(use.values()))
    with open(out, "w") as f:
        f.write(f"{use['app']:.0f} {use['pg']:.0f} {use['load']:.0f} {other:.0f} {busy:.0f} {elapsed:.3f}\n")


def cmd_verdict(cpu_file, ncpu):
    """Names the bottleneck of a phase from its CPU sample: which side used the cores."""
    app, pg, load, other, busy, _ = (float(x) for x in open(cpu_file).read().split())
    cap = int(ncpu) * 100
    side = max((app, "the app"), (pg, "PostgreSQL"), (load, "the load generator"), (other, "other processes"))
    if busy >= 0.85 * cap:
        print(f"CPU-bound: {side[1]} ({side[0]:.0f}% of {cap}%)")
    else:
        print(f"not CPU-bound ({busy:.0f}% of {cap}% busy): waits (locks, commits, pool); top: {side[1]}")


def cmd_per(cpu_file, count):
    """CPU time of the app and of PostgreSQL per unit of work (ms), from a cpu summary."""
    app, pg, _, _, _, elapsed = (float(x) for x in open(cpu_file).read().split())
    n = max(float(count), 1e-9)
    print(f"{app / 100 * elapsed / n * 1000:.2f} {pg / 100 * elapsed / n * 1000:.2f}")


def cmd_wrk(path):
    t = open(path).read()

    def ms(v):
        n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups()
        return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[u]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", t).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", t).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    nerr = sum(int(x) for x in errors.groups()) if errors else 0
    print(f"{rps:.0f} {p50:.2f} {p99:.2f} {non2xx.group(1) if non2xx else 0} {nerr}")


if __name__ == "__main__":
    cmds = {"signup": cmd_signup, "keys": cmd_keys, "submit": cmd_submit, "logins": cmd_logins, "cpu": cmd_cpu, "wrk": cmd_wrk,
            "verdict": cmd_verdict, "per": cmd_per}
    cmds[sys.argv[1]](*sys.argv[2:])
