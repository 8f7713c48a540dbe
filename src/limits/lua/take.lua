local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local reply = {}
for i, key in ipairs(KEYS) do
  local a = (i - 1) * 6 + 1
  local interval, period = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local cost, limit = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local extra, floor = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  local tat = tonumber(redis.call('GET', key)) or 0
  local base = math.max(tat, now)
  local next = base + interval * cost
  if next - now > period then
    local retry = -1
    if cost <= limit then retry = next - now - period end
    table.insert(reply, 0)
    table.insert(reply, base - now)
    table.insert(reply, retry)
    table.insert(reply, 0)
    return reply
  end
  local leased = 0
  if extra > 0 then
    local spare = math.floor((period - (next - now)) / interval) - math.ceil(limit / 2)
    if spare >= floor then
      leased = math.min(extra, spare)
      next = next + interval * leased
    end
  end
  redis.call('SET', key, string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1)
  table.insert(reply, 1)
  table.insert(reply, next - now)
  table.insert(reply, 0)
  table.insert(reply, leased)
end
return reply
