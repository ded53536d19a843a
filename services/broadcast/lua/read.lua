-- Both keys carry the shard's tag ({N}), so the script is valid on Redis Cluster.
--
-- READ is the only way a shard's entries are handed to a worker: it takes entries for the
-- `broadcast` group only if the caller holds the shard's lease at that moment. Ownership is
-- checked in the same atomic step that assigns the entries, so a worker that lost its lease
-- (its key expired, another worker took it, or Redis lost the key with the rest of its data) can
-- never be handed an entry after the new owner's reclaim, while the new owner reads newer ones:
-- that is what would make an older entry look like a redelivery and be dropped (apply.lua).
-- A worker's own clock (its last renewal) cannot promise this: after Redis lost its data the
-- next worker takes the lease at once, while the old owner's renewal still looks fresh.
--
-- XREADGROUP cannot block inside a script; the worker waits with a plain XREAD (which assigns
-- nothing) sent just before this script in the same write, and this script reads without
-- blocking.
--
-- KEYS[1] = sb:lease:{N}, KEYS[2] = sb:in:{N}
-- ARGV[1] = owner (worker id), ARGV[2] = group, ARGV[3] = mode: 'read' or 'claim',
-- ARGV[4] = COUNT, ARGV[5] = the XAUTOCLAIM cursor (mode 'claim')
-- Returns, mode 'read': {after, entries}: the new entries (possibly none) and the id to wait
-- after (the last entry returned, else the stream's last entry, else 0-0: every entry up to it
-- has been delivered). Mode 'claim': XAUTOCLAIM's reply {cursor, entries, deleted ids}.
-- Error NOTOWNER when the caller does not hold the lease.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('NOTOWNER the shard lease is not held by ' .. ARGV[1])
end
if ARGV[3] == 'claim' then
  return redis.call('XAUTOCLAIM', KEYS[2], ARGV[2], ARGV[1], 0, ARGV[5], 'COUNT', ARGV[4])
end
local res = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[1], 'COUNT', ARGV[4], 'STREAMS', KEYS[2], '>')
if res and res[1] and #res[1][2] > 0 then
  local entries = res[1][2]
  return {entries[#entries][1], entries}
end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if last[1] then return {last[1][1], {}} end
return {'0-0', {}}
