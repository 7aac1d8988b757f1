//! The Lua the proxies and the mover run on a migration's source, and the
//! reserved key names they share.
//!
//! A big key (more than [`BIG_ELEMENTS`] elements, or over
//! [`BIG_STRING_BYTES`]: a string by its length, a collection of two or
//! more elements by `MEMORY USAGE`) is not moved with one MIGRATE, which would block
//! the source (and RESTORE the target) for seconds: the mover locks it on
//! the source (a lock key beside it, with a TTL it renews), copies it in
//! small chunks to an import key on the target, renames that into place,
//! then drops the key and its lock on the source in one call (the mover's
//! functions, `crate::admin::migrate::fence`). A proxy
//! that meets a locked or a big key waits for the mover.

/// Elements above which a hash, set, sorted set, list or stream is big.
pub const BIG_ELEMENTS: u64 = 5_000;
/// Bytes above which a string, or a collection of large elements, is big.
pub const BIG_STRING_BYTES: u64 = 16 << 20;

/// What every key the proxies and the mover create for themselves starts
/// with; clients are refused such keys (`crate::proxy::dispatch`).
pub const RESERVED_PREFIX: &[u8] = b"__shardproxy_";

/// Prefixes of the keys a migration creates for itself (and
/// [`SILENT_PREFIX`]); the mover never moves them.
pub const LOCK_PREFIX: &[u8] = b"__shardproxy_lock:";
pub const IMPORT_PREFIX: &[u8] = b"__shardproxy_import:";

/// The lock of `key` on the source.
pub fn lock_key(key: &[u8]) -> Vec<u8> {
    [LOCK_PREFIX, key].concat()
}

/// Where `key` is assembled on the target before it is renamed into place.
pub fn import_key(key: &[u8]) -> Vec<u8> {
    [IMPORT_PREFIX, key].concat()
}

/// True for a key a migration made for itself.
pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(LOCK_PREFIX) || key.starts_with(IMPORT_PREFIX) || key.starts_with(SILENT_PREFIX)
}

/// Lua that answers 1 for each big key of `KEYS` (ARGV: the element and
/// byte thresholds), 0 otherwise; shared by [`TAKE`]. A collection of few
/// but large elements (a 100 MB hash of 200 fields) is big by its bytes:
/// one MIGRATE of it would block the source for a second. A single
/// element cannot be split, so it goes whole. `MEMORY USAGE` samples 5
/// elements; a user denied it (an ACL from before this check) falls back
/// to the count alone.
const SIZE_OF: &str = r#"
local function is_big(k, elements, bytes)
  local t = redis.call('type', k)['ok']
  if t == 'string' then return redis.call('strlen', k) > bytes end
  local n = 0
  if t == 'hash' then n = redis.call('hlen', k)
  elseif t == 'set' then n = redis.call('scard', k)
  elseif t == 'zset' then n = redis.call('zcard', k)
  elseif t == 'list' then n = redis.call('llen', k)
  elseif t == 'stream' then n = redis.call('xlen', k) end
  if n > elements then return true end
  if n < 2 then return false end
  local ok, used = pcall(redis.call, 'memory', 'usage', k, 'samples', '5')
  return ok and type(used) == 'number' and used > bytes
end
"#;

/// Where the take script notes, on the source, that the target did not
/// answer a MIGRATE of small keys (followed by the target's `host:port`).
pub const SILENT_PREFIX: &[u8] = b"__shardproxy_silent:";
/// How long that note stops the take scripts from asking the target.
pub const SILENT_MS: u64 = 1000;
/// The longest TTL a lock of the mover's may have (it gives them far
/// less, 30 s, in `crate::admin::migrate::big_key`): one longer, or none, was not made by
/// a mover.
const LOCK_MS_MOST: u64 = 3_600_000;
/// Bytes under which a key's MIGRATE is quick: one of them timing out says
/// the target does not answer, where a larger one may only be slow.
const QUICK_BYTES: u64 = 1 << 20;

/// How the proxies and the mover ask a target whether it would restore a
/// key now: `PEXPIRE` of a key that does not exist, a write that changes
/// nothing (`:0`). Redis holds it while writes are paused, as it holds
/// RESTORE, where a PING is answered.
pub fn probe_command() -> [&'static [u8]; 3] {
    [b"PEXPIRE", PROBE_KEY, b"1"]
}

/// The key [`probe_command`] names: one of the reserved names, never
/// created.
const PROBE_KEY: &[u8] = b"__shardproxy_silent:probe";

/// The proxies' move on access. KEYS: the request's keys. ARGV: the big
/// thresholds (elements, bytes), then MIGRATE's host, port, db, timeout
/// and its AUTH words, if any. Answers `LOCKED` (the mover is moving one
/// of them), `BIG` (one is big: the mover moves it), `SILENT` (the target
/// did not answer a moment ago), or MIGRATE's own `OK` / `NOKEY` / error.
///
/// Why `SILENT`: MIGRATE runs on the source, which runs nothing else until
/// the target answers or the timeout passes. The take scripts of every
/// proxy wait their turn there, so when the target stops, the first
/// MIGRATE's timeout leaves a note (a key with a TTL) and the scripts
/// queued behind it answer at once instead of each holding the source for
/// its own timeout (review: the source's own keys waited out the whole
/// outage). Only a MIGRATE of small keys leaves it: a large key may be
/// slow to restore on a target that answers (a key not on the source, one
/// of a request's keys already moved, counts as small: review, MGETs of a
/// moved and an unmoved key left no note and held the source 30 s). A user
/// without SET (from an older watchdog) leaves none. Notes and locks are
/// only believed with the TTL the proxies and the mover give them: one a
/// client's script wrote (clients are refused these keys, but a script may
/// compute any name) without a TTL, or with a longer one, would stop the
/// moves for good (review).
pub fn take_script() -> String {
    format!(
        r#"{SIZE_OF}
-- True while k exists with a TTL of at most most ms; a user without PTTL
-- (made by an older watchdog) asks EXISTS, as before.
local function held(k, most)
  local left = redis.pcall('pttl', k)
  if type(left) ~= 'number' then return redis.call('exists', k) == 1 end
  return left > 0 and left <= most
end
local silent = '{silent}' .. ARGV[3] .. ':' .. ARGV[4]
if held(silent, {silent_ms}) then return 'SILENT' end
for _, k in ipairs(KEYS) do
  if held('{lock}' .. k, {lock_ms}) then return 'LOCKED' end
end
local elements, bytes = tonumber(ARGV[1]), tonumber(ARGV[2])
for _, k in ipairs(KEYS) do
  if is_big(k, elements, bytes) then return 'BIG' end
end
local args = {{'MIGRATE', ARGV[3], ARGV[4], '', ARGV[5], ARGV[6], 'REPLACE'}}
for i = 7, #ARGV do args[#args + 1] = ARGV[i] end
args[#args + 1] = 'KEYS'
for _, k in ipairs(KEYS) do args[#args + 1] = k end
local moved = redis.pcall(unpack(args))
if type(moved) == 'table' and moved['err'] and string.find(moved['err'], 'IOERR', 1, true) then
  local quick = true
  for _, k in ipairs(KEYS) do
    local used = redis.pcall('memory', 'usage', k)
    if type(used) == 'number' and used > {quick_bytes} then quick = false end
  end
  if quick then redis.pcall('set', silent, '1', 'px', '{silent_ms}') end
end
return moved
"#,
        lock = String::from_utf8_lossy(LOCK_PREFIX),
        silent = String::from_utf8_lossy(SILENT_PREFIX),
        quick_bytes = QUICK_BYTES,
        silent_ms = SILENT_MS,
        lock_ms = LOCK_MS_MOST,
    )
}

/// The mover's size check: KEYS: a batch; ARGV: the thresholds. Answers
/// an array of 1 (big) and 0.
pub fn sizes_script() -> String {
    format!(
        r#"{SIZE_OF}
local elements, bytes = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {{}}
for i, k in ipairs(KEYS) do out[i] = is_big(k, elements, bytes) and 1 or 0 end
return out
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_wrap_the_key() {
        assert_eq!(lock_key(b"k"), b"__shardproxy_lock:k".to_vec());
        assert!(is_reserved(&lock_key(b"k")));
        assert!(is_reserved(&import_key(b"k")));
        assert!(!is_reserved(b"user:1"));
        assert!(take_script().contains("'__shardproxy_lock:' .. k"));
        assert!(is_reserved(b"__shardproxy_silent:127.0.0.1:6379"));
        assert!(is_reserved(PROBE_KEY));
        for prefix in [LOCK_PREFIX, IMPORT_PREFIX, SILENT_PREFIX] {
            assert!(prefix.starts_with(RESERVED_PREFIX));
        }
        assert!(take_script().contains("'px', '1000'"));
    }
}
