-- wrk script for the bench's "accept" phase: POSTs valid sign-up forms to
-- /signup, each with an e-mail address of its own, and prints one JSON line
-- of figures at the end (latencies in microseconds).
-- Usage: wrk -t2 -c64 -d10s -s signup.lua http://127.0.0.1:8080 -- <run-id>

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  run_id = args[1] or "run"
  counter = 0
end

function request()
  counter = counter + 1
  local body = string.format(
    "firstName=Bench&lastName=Visitor&email=v%d.%d.%s%%40example.com&companyName=Acme&country=NL&role=EN",
    thread_id, counter, run_id)
  return wrk.format("POST", "/signup", { ["Content-Type"] = "application/x-www-form-urlencoded" }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
