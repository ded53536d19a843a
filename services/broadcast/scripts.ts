/**
 * Lua run by the broadcast tier. Both keys of the script hash by the room ({room} tag), so it is
 * valid on Redis Cluster.
 *
 * APPLY assigns the next sequence number of a room and appends the encoded message to the room's
 * history atomically, unless this ingress entry was applied already (at-least-once redelivery
 * after a worker died between applying and acknowledging): entries of one room come from one
 * ingress shard in id order, so "id <= last applied id" identifies a redelivery. A redelivered
 * entry gets its original seq and bytes back from history (so it can still be routed, and the
 * gateways drop it if they had it), or {0, false} when it is older than the kept history.
 *
 * KEYS[1] = sb:seq:{room} (hash: seq, last)   KEYS[2] = sb:hist:{room} (stream, ids <seq>-1)
 * ARGV[1] = ingress entry id   ARGV[2] = history max length
 * ARGV[3] = JSON up to the seq value   ARGV[4] = JSON after it
 * Returns {seq, json}.
 */
export const APPLY_LUA = `
local function cmp(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am = tonumber(am); bm = tonumber(bm)
  if am ~= bm then if am < bm then return -1 else return 1 end end
  as = tonumber(as); bs = tonumber(bs)
  if as == bs then return 0 end
  if as < bs then return -1 else return 1 end
end
local last = redis.call('HGET', KEYS[1], 'last')
if last and cmp(ARGV[1], last) <= 0 then
  local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1000)
  for _, e in ipairs(entries) do
    local f = e[2]
    if f[2] == ARGV[1] then return {tonumber(string.match(e[1], '^(%d+)')), f[4]} end
  end
  return {0, false}
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'last', ARGV[1])
local json = ARGV[3] .. seq .. ARGV[4]
local maxlen = tonumber(ARGV[2])
if maxlen > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, seq .. '-1', 'i', ARGV[1], 'm', json)
end
return {seq, json}
`;

/** Renew a lease only if we still hold it. KEYS[1] = lease, ARGV = owner, ttl ms. Returns 1 or 0. */
export const RENEW_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`;

/** Release a lease only if we hold it. KEYS[1] = lease, ARGV[1] = owner. */
export const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`;
