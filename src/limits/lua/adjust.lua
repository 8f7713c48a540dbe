local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local reply = {}
for i, key in ipairs(KEYS) do
  local interval, delta = tonumber(ARGV[i * 2]), tonumber(ARGV[i * 2 + 1])
  local tat = tonumber(redis.call('GET', key)) or 0
  local next
  if delta >= 0 then
    next = math.max(tat, now) + interval * delta
  else
    next = math.max(tat + interval * delta, now)
  end
  if next > now then
    redis.call('SET', key, string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1)
  else
    redis.call('DEL', key)
  end
  table.insert(reply, next - now)
end
return reply
