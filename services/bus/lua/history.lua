-- A page of a room's history, bounded by count and by bytes, read in one round trip.
--
-- Each history entry holds one message (field `m`, its JSON). Without a byte bound a page of
-- `limit` large messages (up to MAX_FRAME_BYTES each) would be built whole in Redis' output
-- buffer and in the gateway before the reply's own budget cut it down: a few clients asking for
-- history at once could take gigabytes. Entries are taken in chunks until the next one would pass
-- the budget (the first is always taken, so paging progresses).
--
-- KEYS[1] = sb:hist:{room}
-- ARGV[1] = '' for the newest messages (read backwards), else the first id to read forwards from
-- ARGV[2] = at most this many messages; ARGV[3] = at most this many bytes of message fields
-- Returns {more, entries}: entries as XRANGE gives them, in the order read (newest first when
-- ARGV[1] is ''); more = 1 when an entry after the last one returned exists and was left out.
local limit = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local newest = ARGV[1] == ''
local chunk = math.min(limit + 1, 64)
local cursor = newest and '+' or ARGV[1]
local out = {}
local bytes = 0
local more = 0
while more == 0 do
  local batch
  if newest then
    batch = redis.call('XREVRANGE', KEYS[1], cursor, '-', 'COUNT', chunk)
  else
    batch = redis.call('XRANGE', KEYS[1], cursor, '+', 'COUNT', chunk)
  end
  for i = 1, #batch do
    local fields = batch[i][2]
    local size = 1
    for j = 2, #fields, 2 do size = size + #fields[j] end
    if #out >= limit or (#out > 0 and bytes + size > budget) then
      more = 1
      break
    end
    bytes = bytes + size
    out[#out + 1] = batch[i]
  end
  if #batch < chunk then break end
  cursor = '(' .. batch[#batch][1]
end
return {more, out}
