-- All keys of this script hash by the room (one tag), so it is valid on Redis Cluster.
--
-- APPLY assigns the next sequence numbers of one room, appends the encoded messages to the room's
-- history atomically, and returns the room's routing set, for all the entries of that room in one
-- ingress batch (one script call per room and batch, not per message, and no separate SMEMBERS:
-- per-command costs dominated Redis and the broadcast worker). An entry that was applied already
-- (at-least-once redelivery after a worker died between applying and acknowledging) is
-- recognised by its id: entries of one room come from one ingress shard in id order, so
-- "id <= last applied id" identifies a redelivery. A redelivered entry gets its original seq and
-- bytes back from history (so it can still be routed, and the gateways drop it if they had it).
-- A shard's batch is acknowledged before the next one is read, and a failed one is taken again
-- (with what came after it) before anything new: what can be redelivered is the room's last
-- call's entries, and, when that call was itself a retry, those of the calls it retried. Field n
-- counts them (a call with no redelivered entry starts the count again), and history keeps at
-- least that many entries, whatever HISTORY_SIZE says (0 included); the lookup reads that many.
-- It kept only HISTORY_SIZE: a backlog of 1,000 messages of one room whose egress write failed
-- lost the 900 that history no longer held, acknowledged to their senders and never routed.
-- {0, false} is left for an entry history does not hold at all (its room's keys expired).
--
-- The room's epoch is created here (from ARGV[2]) if the room has none: after Redis lost its data,
-- the sequence restarts at 1 in a new epoch, and every message says which. A room whose sequence
-- starts (no seq yet) drops any history left without it: those entries belong to a sequence that
-- no longer exists, and their ids would collide with the new one's.
--
-- Redis that comes back behind (restarted from an RDB snapshot or an AOF fsynced every second, a
-- replica promoted before it had everything) keeps the room's epoch with an older seq: going on
-- from there would give new messages the seqs of lost ones, which members already had, and they
-- would drop them as seen. The worker passes the room's epoch and seq as this script last
-- returned them to it (ARGV[5], ARGV[6]; '' and 0 when it has none): the same epoch with a lower
-- seq means Redis lost writes of this very worker, and the room starts again in a new epoch, as
-- if it had none (seq 1, history dropped: its ids <seq>-1 would collide). Members see the epoch
-- change instead of reused seqs. Not seen here: a rollback after the worker that sequenced the
-- room restarted, or when another worker owned the room's shard since (it passes nothing, or an
-- older seq).
--
-- A room's position and history expire ARGV[4] seconds after its last new message (0: never), so
-- room names used once do not stay in Redis for ever; a room that comes back starts a new epoch.
--
-- The position is written before the history entries: once a script has written, Redis lets it
-- finish even past maxmemory, so the seq and the history cannot part ways halfway through.
--
-- KEYS[1] = sb:seq:{room} (hash: seq, epoch, last, n = the newest entries that may be redelivered)   KEYS[2] = sb:hist:{room} (stream, ids <seq>-1)
-- KEYS[3] = sb:room:{room} (set: gateways with members in the room)
-- ARGV[1] = history max length, ARGV[2] = epoch to use if the room has none, ARGV[3] = the JSON
-- between seq and epoch, ARGV[4] = seconds the room's keys live after this message (0: for ever),
-- ARGV[5] = the room's epoch as this worker last saw it ('' if none), ARGV[6] = its seq then (0);
-- then per entry (from ARGV[7]): ingress entry id, JSON up to the seq value, JSON after
-- the epoch (the template is services/protocol/outbound.ts's, in pieces).
-- Returns {epoch, gateways, rolled back (1 if the room started again in a new epoch because Redis
-- was behind ARGV[5]/ARGV[6], else 0), seq1, json1, seq2, json2, ...}, one pair per entry in
-- argument order;
-- json is false for a newly applied entry (its JSON is exactly head .. seq .. ARGV[3] .. epoch ..
-- end, which the caller builds itself rather than receive it back), the stored JSON for a
-- redelivered one.
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
local state = redis.call('HMGET', KEYS[1], 'seq', 'last', 'epoch', 'n')
local seq = tonumber(state[1])
local last = state[2]
local epoch = state[3]
local mayRedeliver = tonumber(state[4]) or 1000
local out = {false, redis.call('SMEMBERS', KEYS[3]), 0}
-- Rolled back under this worker (see above): the room's sequence starts again in a new epoch.
if epoch and epoch == ARGV[5] and (seq or 0) < tonumber(ARGV[6]) then
  out[3] = 1
  seq = nil
  last = nil
  epoch = nil
end
-- Which entries are new: the entries are in id order, so the redelivered ones (id <= last) come
-- first and everything from the first new one on is new. One comparison per call when nothing is
-- redelivered, instead of two per entry (string.match in cmp was most of the script's time).
local ttl = tonumber(ARGV[4])
local first = 7
if last then
  while first <= #ARGV and cmp(ARGV[first], last) <= 0 do first = first + 3 end
end
local fresh = (#ARGV - first + 1) / 3
local newest = nil
if fresh > 0 then newest = ARGV[#ARGV - 2] end
-- A retry (it redelivers some) keeps the entries it retried findable too.
local run = fresh
if first > 7 then run = mayRedeliver + fresh end
if fresh > 0 then
  if not seq then
    redis.call('DEL', KEYS[2])
    seq = 0
  end
  if not epoch then
    epoch = ARGV[2]
    redis.call('HSET', KEYS[1], 'seq', seq + fresh, 'last', newest, 'n', run, 'epoch', epoch)
  else
    redis.call('HSET', KEYS[1], 'seq', seq + fresh, 'last', newest, 'n', run)
  end
end
-- The entries that may be redelivered stay in history until a later call. With HISTORY_SIZE 0
-- the trim is exact (`~` trims whole stream nodes: about 100 entries a room would stay).
local keep = maxlen
if run > keep then keep = run end
local trim = '~'
if maxlen == 0 then trim = '=' end
out[1] = epoch or ARGV[2]
local mid = ARGV[3] .. out[1]
local byId = nil
for i = 7, #ARGV, 3 do
  local id = ARGV[i]
  if i < first then
    if not byId then
      -- Read before this call's own entries are added: they may trim the last call's.
      byId = {}
      for _, e in ipairs(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', mayRedeliver)) do
        byId[e[2][2]] = e
      end
    end
    local e = byId[id]
    if e then
      out[#out + 1] = tonumber(string.match(e[1], '^(%d+)'))
      out[#out + 1] = e[2][4]
    else
      out[#out + 1] = 0
      out[#out + 1] = false
    end
  else
    seq = seq + 1
    redis.call('XADD', KEYS[2], 'MAXLEN', trim, keep, seq .. '-1', 'i', id, 'm', ARGV[i + 1] .. seq .. mid .. ARGV[i + 2])
    out[#out + 1] = seq
    out[#out + 1] = false
  end
end
if fresh > 0 and ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return out
