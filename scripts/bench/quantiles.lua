-- The shared wrk script (../shared/bench/kv.lua, path in CELLKV_KV_LUA) plus a
-- dump of the run's latency distribution, so short interleaved runs can be
-- pooled into one distribution per path (scripts/bench/pool.py).
--
-- wrk's Lua API gives percentiles but not the histogram's counts, so done()
-- writes the latency at a fine grid of percentiles to CELLKV_QUANTILES_OUT:
-- every 0.05% up to 99%, every 0.01% above it, and the maximum as 100%. Each grid step stands for that
-- share of the run's requests, which is what pooling weighs.
dofile(os.getenv("CELLKV_KV_LUA"))

local kv_done = done
function done(summary, latency, requests)
  kv_done(summary, latency, requests)
  local f = assert(io.open(os.getenv("CELLKV_QUANTILES_OUT"), "w"))
  local e = summary.errors
  f:write(string.format("reqs %d\nsecs %.6f\nerrors %d\n", summary.requests,
    summary.duration / 1e6, e.status + e.connect + e.read + e.write + e.timeout))
  for i = 1, 1980 do
    local p = i * 0.05
    f:write(string.format("q %.2f %d\n", p, latency:percentile(p)))
  end
  for i = 9901, 9999 do
    local p = i / 100
    f:write(string.format("q %.2f %d\n", p, latency:percentile(p)))
  end
  f:write(string.format("q 100.00 %d\n", latency.max))
  f:close()
end
