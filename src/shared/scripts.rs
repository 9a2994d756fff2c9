//! The Lua scripts Redis runs, and the names of the keys they touch.
//!
//! Every admission is one script, so checking and counting are one atomic step on the server:
//! two replicas can never both read "N-1 used" and both admit. Windows are kept in Redis's
//! own clock (`TIME`), so replicas whose clocks drift still share one window; budget periods
//! (UTC day, UTC month) are named by the replica, as a second's drift at midnight does not
//! matter to a daily budget.
//!
//! Keys of one access key share the hash tag `{name}`, so one script's keys live together.

/// Prefix of every key the proxy writes.
pub const PREFIX: &str = "foundry-proxy";

/// Shared by the scripts: `delete` removes hash fields in chunks (Lua's `unpack` has a
/// limit), `trim` drops a window's buckets older than 60 s, so a window written by answers
/// stays at most sixty fields even for a key that is never admitted through it.
macro_rules! trim_functions {
    () => {
        r#"
local function delete(hash, fields)
  for i = 1, #fields, 1000 do
    redis.call('HDEL', hash, unpack(fields, i, math.min(i + 999, #fields)))
  end
end
local function trim(hash, now)
  local stale = {}
  for _, second in ipairs(redis.call('HKEYS', hash)) do
    local s = tonumber(second)
    if not s or s + 60 <= now or s > now then stale[#stale + 1] = second end
  end
  delete(hash, stale)
end
"#
    };
}

/// The shared functions, as every script starts with them.
#[cfg(test)]
const TRIM: &str = trim_functions!();

/// Checks the key's budgets, then its requests-per-minute and tokens-per-minute windows (sixty
/// one-second fields of a hash, as the local limiter keeps them), and counts the request.
///
/// KEYS: requests window, tokens window, day spend, month spend.
/// ARGV: requests per minute, tokens per minute, tokens per day, tokens per month, dollars per
/// month (each empty when unset).
/// Returns `{"ok"}`, `{"budget", FIELD}`, or `{"requests"|"tokens", SECONDS_TO_WAIT}`.
pub const ADMIT: &str = concat!(
    trim_functions!(),
    r#"
local now = tonumber(redis.call('TIME')[1])
local function setting(i)
  if ARGV[i] == '' then return nil end
  return tonumber(ARGV[i])
end
local day_limit, month_limit, usd_limit = setting(3), setting(4), setting(5)
if day_limit and tonumber(redis.call('HGET', KEYS[3], 'tokens') or '0') >= day_limit then
  return {'budget', 'tokens_per_day'}
end
if month_limit or usd_limit then
  local month = redis.call('HMGET', KEYS[4], 'tokens', 'usd')
  if month_limit and tonumber(month[1] or '0') >= month_limit then
    return {'budget', 'tokens_per_month'}
  end
  if usd_limit and tonumber(month[2] or '0') >= usd_limit then
    return {'budget', 'usd_per_month'}
  end
end
local function window(hash)
  local fields = redis.call('HGETALL', hash)
  local live, stale, total = {}, {}, 0
  for i = 1, #fields, 2 do
    local second, count = tonumber(fields[i]), tonumber(fields[i + 1])
    if second + 60 > now and second <= now then
      live[#live + 1] = {second, count}
      total = total + count
    else
      stale[#stale + 1] = fields[i]
    end
  end
  delete(hash, stale)
  return live, total
end
-- Seconds until the oldest live buckets leave the window and the total drops below the limit.
local function wait(live, total, limit)
  table.sort(live, function(a, b) return a[1] < b[1] end)
  for _, bucket in ipairs(live) do
    total = total - bucket[2]
    if total < limit then return bucket[1] + 60 - now end
  end
  return 1
end
local rpm, tpm = setting(1), setting(2)
if rpm then
  local live, total = window(KEYS[1])
  if total >= rpm then return {'requests', tostring(wait(live, total, rpm))} end
end
if tpm then
  local live, total = window(KEYS[2])
  if total >= tpm then return {'tokens', tostring(wait(live, total, tpm))} end
end
if rpm then
  redis.call('HINCRBY', KEYS[1], now, 1)
  redis.call('EXPIRE', KEYS[1], 61)
end
return {'ok'}
"#
);

/// Writes one batch of the usage writer, once: a batch sent again (its answer was lost, so
/// the writer cannot know whether Redis applied it) finds its marker and changes nothing.
/// Every number is checked before the first write, so a bad batch changes nothing either.
///
/// KEYS[1]: the batch's marker (kept a day). ARGV[1]: the number of charges C. Then C charges,
/// each three KEYS (tokens window, day spend, month spend) and two ARGV (tokens, dollars): the
/// tokens go to the window in Redis's clock and to the day's and month's spend, the dollars to
/// the month's. Then usage rows, each one KEY (the day's usage hash) and seven ARGV
/// (`KEY \x1f MODEL`, requests, errors, prompt, completion and cached tokens, dollars).
/// Numbers reach Redis as the strings sent, never through Lua's floating point.
pub const FLUSH: &str = concat!(
    trim_functions!(),
    r#"
local charges = tonumber(ARGV[1])
if not charges or (#ARGV - 1 - 2 * charges) ~= 7 * (#KEYS - 1 - 3 * charges) then
  return redis.error_reply('ERR malformed usage batch')
end
for a = 2, #ARGV do
  local field_of_row = a > 1 + 2 * charges and (a - 2 - 2 * charges) % 7 == 0
  if not field_of_row and not tonumber(ARGV[a]) then
    return redis.error_reply('ERR not a number in usage batch')
  end
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', 86400) then return 0 end
local now = tonumber(redis.call('TIME')[1])
local k, a = 2, 2
for _ = 1, charges do
  if tonumber(ARGV[a]) > 0 then
    trim(KEYS[k], now)
    redis.call('HINCRBY', KEYS[k], now, ARGV[a])
    redis.call('EXPIRE', KEYS[k], 61)
    redis.call('HINCRBY', KEYS[k + 1], 'tokens', ARGV[a])
    redis.call('HINCRBY', KEYS[k + 2], 'tokens', ARGV[a])
  end
  if tonumber(ARGV[a + 1]) > 0 then
    redis.call('HINCRBYFLOAT', KEYS[k + 2], 'usd', ARGV[a + 1])
  end
  redis.call('EXPIRE', KEYS[k + 1], 172800)
  redis.call('EXPIRE', KEYS[k + 2], 3024000)
  k, a = k + 3, a + 2
end
local metrics = {'requests', 'errors', 'prompt_tokens', 'completion_tokens', 'cached_tokens'}
while k <= #KEYS do
  local who = ARGV[a]
  for i, metric in ipairs(metrics) do
    if tonumber(ARGV[a + i]) > 0 then
      redis.call('HINCRBY', KEYS[k], metric .. '\31' .. who, ARGV[a + i])
    end
  end
  if tonumber(ARGV[a + 6]) > 0 then
    redis.call('HINCRBYFLOAT', KEYS[k], 'cost_usd\31' .. who, ARGV[a + 6])
  end
  redis.call('EXPIRE', KEYS[k], 34560000)
  k, a = k + 1, a + 7
end
return 1
"#
);

/// How long a day's usage hash is kept in Redis: 400 days.
pub const USAGE_TTL_SECS: u64 = 400 * 86_400;

/// What one key used in the last 60 seconds: `{requests, tokens}` (read-only).
///
/// KEYS: requests window, tokens window.
pub const USED: &str = r#"
local now = tonumber(redis.call('TIME')[1])
local function sum(hash)
  local fields = redis.call('HGETALL', hash)
  local total = 0
  for i = 1, #fields, 2 do
    local second = tonumber(fields[i])
    if second + 60 > now and second <= now then total = total + tonumber(fields[i + 1]) end
  end
  return total
end
return {sum(KEYS[1]), sum(KEYS[2])}
"#;

/// The requests window of `key`.
pub fn requests_window(key: &str) -> String {
    format!("{PREFIX}:{{{key}}}:rpm")
}

/// The tokens window of `key`.
pub fn tokens_window(key: &str) -> String {
    format!("{PREFIX}:{{{key}}}:tpm")
}

/// `key`'s spend on UTC day `day` (`YYYY-MM-DD`).
pub fn day_spend(key: &str, day: &str) -> String {
    format!("{PREFIX}:{{{key}}}:day:{day}")
}

/// `key`'s spend in UTC month `month` (`YYYY-MM`).
pub fn month_spend(key: &str, month: &str) -> String {
    format!("{PREFIX}:{{{key}}}:month:{month}")
}

/// The marker of batch `id` of the usage writer.
pub fn batch_marker(id: &str) -> String {
    format!("{PREFIX}:batch:{id}")
}

/// Every key's usage on UTC day `day`: one hash, fields `METRIC \x1f KEY \x1f MODEL`.
pub fn usage_day(day: &str) -> String {
    format!("{PREFIX}:usage:{day}")
}

/// Separates the parts of a usage field (a control character no key or model name holds).
pub const FIELD_SEPARATOR: char = '\u{1f}';

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch script keeps a day's usage as long as [`USAGE_TTL_SECS`] says; both scripts
    /// carry the shared functions.
    #[test]
    fn usage_expiry_matches_the_constant() {
        assert!(FLUSH.contains(&format!("'EXPIRE', KEYS[k], {USAGE_TTL_SECS})")));
        assert!(FLUSH.starts_with(TRIM) && ADMIT.starts_with(TRIM));
    }

    /// One access key's keys share its hash tag; usage is per day.
    #[test]
    fn key_names() {
        assert_eq!(requests_window("alice"), "foundry-proxy:{alice}:rpm");
        assert_eq!(
            month_spend("alice", "2026-12"),
            "foundry-proxy:{alice}:month:2026-12"
        );
        assert_eq!(usage_day("2026-12-04"), "foundry-proxy:usage:2026-12-04");
    }
}
