-- Renew a lease only if we still hold it. KEYS[1] = lease, ARGV = owner, ttl ms. Returns 1 or 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
