-- Inclusion proofs of random versions in a tree of TLOG_SIZE leaves (perf/run.sh, section tlog).
local size = tonumber(os.getenv("TLOG_SIZE") or "1")
math.randomseed(os.time())
request = function()
    local v = math.random(0, size - 1)
    return wrk.format("GET", "/registry/proof/inclusion?version=" .. v .. "&size=" .. size)
end
