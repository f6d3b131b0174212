-- The wrk script of scripts/bench-system.sh: the shared kv.lua (its path in
-- CELLKV_KV_LUA) with one mode it lacks, `cellkv_get_stale`: kv.lua's
-- `cellkv_get` (same keys, same bucket, same bearer token) with `?read=stale`
-- on the path, the cell API's stale read. Every other mode is kv.lua's own,
-- untouched, and so is the RESULT line it prints.
dofile(os.getenv("CELLKV_KV_LUA"))

local kv_init, kv_request = init, request
local stale, keyspace, auth = false, 10000, ""

function init(args)
  if args[1] ~= "cellkv_get_stale" then
    return kv_init(args)
  end
  stale = true
  keyspace = tonumber(args[2] or "10000")
  auth = "Bearer " .. (args[4] or "")
  kv_init({ "cellkv_get", args[2], args[3], args[4] })
  mode = "cellkv_get_stale" -- kv.lua's global: named so in the RESULT line
end

function request()
  if not stale then
    return kv_request()
  end
  -- kv.lua's key scheme: "k" and 11 digits, uniform over the keyspace.
  local key = string.format("k%011d", math.random(0, keyspace - 1))
  return wrk.format("GET", "/v1/buckets/bench/objects/" .. key .. "?read=stale",
    { ["Authorization"] = auth }, nil)
end
