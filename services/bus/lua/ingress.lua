-- Append several published messages to ingress streams in one call: one XADD each, in argument
-- order, exactly the entries a plain XADD per message would make (services/bus/wire.ts), so
-- readers of any version see no difference. A gateway sends this when publishes queued up while
-- its previous ingress write was in flight (services/bus/ingress.ts): one command instead of one
-- per message. On Redis Cluster all KEYS of one call are the same stream.
--
-- KEYS = the ingress streams written. ARGV[1] = approximate MAXLEN of each stream; then per
-- message: the index of its stream in KEYS, the number of fields n, then the n fields.
-- Returns the new entry ids in argument order.
local out = {}
local i = 2
while i <= #ARGV do
  local k = tonumber(ARGV[i])
  local n = tonumber(ARGV[i + 1])
  out[#out + 1] = redis.call('XADD', KEYS[k], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, i + 2, i + 1 + n))
  i = i + 2 + n
end
return out
