-- Closed-loop POST driver for benchmarks.drivers.wrk (wrk 4.x, one thread: -t1).
--
-- Usage: wrk -t1 -c<C> -d<S>s --latency -s wrk_post.lua <url> -- <bodies file>
-- The bodies file holds one JSON request body per line. Every request body is pre-formatted in
-- init(), before wrk starts its clock, and request() cycles through them in file order, so a
-- server with a result cache sees distinct inputs until the file is exhausted.
-- done() prints one machine-readable line, "BENCH_RESULT {json}", with exact figures in µs.

local prepared = {}
local count = 0
local next_index = 0

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  for line in io.lines(args[1]) do
    if #line > 0 then
      count = count + 1
      prepared[count] = wrk.format(nil, nil, nil, line)
    end
  end
  if count == 0 then
    error("no request bodies in " .. tostring(args[1]))
  end
end

function request()
  next_index = next_index % count + 1
  return prepared[next_index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"max_us":%.1f,"mean_us":%.1f,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_timeout":%d,"non_2xx":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.timeout, e.status))
end
