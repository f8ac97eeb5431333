-- wrk script for the bench's bot-check figures: GETs /api/challenge (each
-- answer a new challenge) and prints one JSON line of figures at the end, as
-- signup.lua does (latencies in microseconds).
-- Usage: wrk -t2 -c16 -d5s -s challenge.lua http://127.0.0.1:8080 -- <run-id>

function request()
  return wrk.format("GET", "/api/challenge")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
