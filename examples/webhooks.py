#!/usr/bin/env python3
"""Submit a run through the Faceoff API and wait for its `run.completed` webhook, verifying the
signature as documented (HMAC-SHA256 with the endpoint's secret over "{t}.{body}", any v1,
at most 5 minutes old). Standard library only.

    FACEOFF=http://127.0.0.1:3000 KEY=fo_... python3 examples/webhooks.py

It listens on 127.0.0.1:8765 for the delivery, so the server must allow private webhook targets
(`FACEOFF_WEBHOOK_ALLOW_PRIVATE=true`: development only). Against a deployed server, run the
receiver behind a public https:// URL and pass it as HOOK_URL.
"""
import hashlib
import hmac
import http.server
import json
import os
import threading
import time
import urllib.request
import uuid

FACEOFF = os.environ.get("FACEOFF", "http://127.0.0.1:3000").rstrip("/")
KEY = os.environ["KEY"]
PORT = int(os.environ.get("PORT", "8765"))
HOOK_URL = os.environ.get("HOOK_URL", f"http://127.0.0.1:{PORT}/faceoff")
TOLERANCE = 300


def api(method, path, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(FACEOFF + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {KEY}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request) as response:
        return json.load(response) if response.status != 204 else None


def verify(secret, header, body, now=None):
    """True when any v1 of the Faceoff-Signature header signs this body, recently."""
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    timestamps = [v for k, v in parts if k == "t"]
    signatures = [v for k, v in parts if k == "v1"]
    if not timestamps or not signatures:
        return False
    t = timestamps[0]
    if abs((now or time.time()) - int(t)) > TOLERANCE:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, s) for s in signatures)


events = []
done = threading.Event()
secret = None


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not verify(secret, self.headers.get("Faceoff-Signature", ""), body):
            self.send_response(400)
            self.end_headers()
            return
        self.send_response(204)  # answer fast; work afterwards
        self.end_headers()
        event = json.loads(body)
        events.append(event)
        print(f"verified {event['type']} (event {event['id']})")
        if event["type"] == "run.completed":
            done.set()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()

endpoint = api("POST", "/api/v1/webhooks", {"url": HOOK_URL, "events": ["run.completed", "job.failed"]})
secret = endpoint["secret"]  # shown once: keep it
print(f"endpoint {endpoint['id']} → {HOOK_URL}")
try:
    run = api(
        "POST",
        "/api/v1/runs",
        {"prompt": "a lighthouse in fog, long exposure", "models": ["flux-2", "flux-ultra-1-1"]},
        {"Idempotency-Key": str(uuid.uuid4())},
    )
    print(f"run {run['id']} submitted ({run['total_price']} credits held)")
    if not done.wait(120):
        raise SystemExit("no run.completed within 2 minutes")
    final = next(e for e in events if e["type"] == "run.completed")["data"]["run"]
    for job in final["jobs"]:
        print(f"  {job['name']}: {job['status']}, {job['charged']} credits")
finally:
    api("DELETE", f"/api/v1/webhooks/{endpoint['id']}")
    server.shutdown()
