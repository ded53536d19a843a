-- Both keys of this script hash by the room (one tag), so it is
-- valid on Redis Cluster.
--
-- APPLY assigns the next sequence numbers of one room and appends the encoded messages to the
-- room's history atomically, for all the entries of that room in one ingress batch (one script
-- call per room and batch, not per message: the per-call cost dominated Redis and the broadcast
-- worker). An entry that was applied already (at-least-once redelivery after a worker died
-- between applying and acknowledging) is recognised by its id: entries of one room come from one
-- ingress shard in id order, so "id <= last applied id" identifies a redelivery. A redelivered
-- entry gets its original seq and bytes back from history (so it can still be routed, and the
-- gateways drop it if they had it), or {0, false} when it is older than the kept history.
--
-- The room's epoch is created here (from ARGV[2]) if the room has none: after Redis lost its data,
-- the sequence restarts at 1 in a new epoch, and every message says which.
--
-- KEYS[1] = sb:seq:{room} (hash: seq, epoch, last)   KEYS[2] = sb:hist:{room} (stream, ids <seq>-1)
-- ARGV[1] = history max length, ARGV[2] = epoch to use if the room has none, ARGV[3] = the JSON
-- between seq and epoch; then per entry: ingress entry id, JSON up to the seq value, JSON after
-- the epoch (the template is services/protocol/outbound.ts's, in pieces).
-- Returns {seq1, json1, seq2, json2, ...}, one pair per entry in argument order.
local function cmp(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am = tonumber(am); bm = tonumber(bm)
  if am ~= bm then if am < bm then return -1 else return 1 end end
  as = tonumber(as); bs = tonumber(bs)
  if as == bs then return 0 end
  if as < bs then return -1 else return 1 end
end
local maxlen = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'last', 'epoch')
local last = state[1]
local epoch = state[2]
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local mid = ARGV[3] .. epoch
local out = {}
local hist = nil
local newest = nil
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  if last and cmp(id, last) <= 0 then
    hist = hist or redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1000)
    local seq, json = 0, false
    for _, e in ipairs(hist) do
      local f = e[2]
      if f[2] == id then seq = tonumber(string.match(e[1], '^(%d+)')); json = f[4]; break end
    end
    out[#out + 1] = seq
    out[#out + 1] = json
  else
    local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
    local json = ARGV[i + 1] .. seq .. mid .. ARGV[i + 2]
    if maxlen > 0 then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, seq .. '-1', 'i', id, 'm', json)
    end
    newest = id
    out[#out + 1] = seq
    out[#out + 1] = json
  end
end
if newest then redis.call('HSET', KEYS[1], 'last', newest) end
return out
