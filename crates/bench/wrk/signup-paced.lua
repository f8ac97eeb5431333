-- signup.lua at a set pace: each connection waits args[2] milliseconds after
-- every answer, so N connections offer about N * 1000 / pause sign-ups/s.
-- Usage: wrk -t2 -c400 -d10s -s signup-paced.lua http://127.0.0.1:8080 -- <run-id> 20

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "signup.lua")

local base_init = init
function init(args)
  base_init(args)
  pause = tonumber(args[2] or "0")
end

function delay()
  return pause
end
