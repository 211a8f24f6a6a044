-- wrk script for bench/run: POST /api/v1/runs, rotating over the API keys in $BENCH_KEYS (one
-- per line), each request with a unique Idempotency-Key; counts 2xx (runs accepted) per thread.
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  keys = {}
  for line in io.lines(os.getenv("BENCH_KEYS")) do
    local k = line:match("^(%S+)")
    if k then table.insert(keys, k) end
  end
  n = 0
  ok = 0
  bad = 0
  codes = {}
  prefix = string.format("bench-%d-%d-%d", os.time(), id, math.random(1, 1e9))
  body = '{"prompt": "bench: candid cafe portrait of a woman filming a coffee check-in, window light",'
    .. ' "models": ["flux-2", "flux-ultra-1-1"], "mode": "2k", "aspect_ratio": "1:1"}'
end

function request()
  n = n + 1
  local headers = {
    ["Authorization"] = "Bearer " .. keys[(n + id) % #keys + 1],
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. "-" .. n,
  }
  return wrk.format("POST", "/api/v1/runs", headers, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    bad = bad + 1
    codes[status] = (codes[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local ok_total, bad_total, detail = 0, 0, {}
  for _, t in ipairs(threads) do
    ok_total = ok_total + t:get("ok")
    bad_total = bad_total + t:get("bad")
    local c = t:get("codes")
    for s, v in pairs(c) do detail[s] = (detail[s] or 0) + v end
  end
  local parts = {}
  for s, v in pairs(detail) do table.insert(parts, s .. ":" .. v) end
  local secs = summary.duration / 1e6
  io.write(string.format("BENCH ok=%d bad=%d ok_per_s=%.1f codes=%s\n", ok_total, bad_total, ok_total / secs,
    table.concat(parts, ",")))
end
