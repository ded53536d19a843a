-- The next egress entries for a gateway, with what it needs to find entries it lost unread.
--
-- Trimming removes the oldest entries; Redis (7.0 and later) counts every entry ever added
-- (`entries-added`). Taken in the same step as the entries after the gateway's position, that
-- count tells how many it can never get: added - read so far - unread entries left. Run instead of
-- a read (it does not block) when the gateway wants to check; a plain XREAD otherwise.
--
-- KEYS[1] = sb:out:{gw}
-- ARGV[1] = the last id read ('0-0' for none), ARGV[2] = at most this many entries
-- Returns {entries-added or -1 (no stream yet, or Redis before 7.0), entries after ARGV[1]}.
local info = redis.pcall('XINFO', 'STREAM', KEYS[1])
local added = -1
if type(info) == 'table' and not info.err then
  for i = 1, #info, 2 do
    if info[i] == 'entries-added' then added = info[i + 1] end
  end
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
return {added, entries}
