-- wrk script for the bench's bot-check figures: GETs /api/challenge (each
-- answer a new challenge); the figures at the end are signup.lua's (one JSON
-- line, latencies in microseconds).
-- Usage: wrk -t2 -c16 -d5s -s challenge.lua http://127.0.0.1:8080 -- <run-id>

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "signup.lua")

function request()
  return wrk.format("GET", "/api/challenge")
end
