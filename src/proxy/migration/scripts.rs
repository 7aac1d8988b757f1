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

/// Prefixes of the keys a migration creates for itself; the mover never
/// moves them.
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
    key.starts_with(LOCK_PREFIX) || key.starts_with(IMPORT_PREFIX)
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

/// The proxies' move on access. KEYS: the request's keys. ARGV: the big
/// thresholds (elements, bytes), then MIGRATE's host, port, db, timeout
/// and its AUTH words, if any. Answers `LOCKED` (the mover is moving one
/// of them), `BIG` (one is big: the mover moves it), or MIGRATE's own
/// `OK` / `NOKEY`.
pub fn take_script() -> String {
    format!(
        r#"{SIZE_OF}
for _, k in ipairs(KEYS) do
  if redis.call('exists', '{lock}' .. k) == 1 then return 'LOCKED' end
end
local elements, bytes = tonumber(ARGV[1]), tonumber(ARGV[2])
for _, k in ipairs(KEYS) do
  if is_big(k, elements, bytes) then return 'BIG' end
end
local args = {{'MIGRATE', ARGV[3], ARGV[4], '', ARGV[5], ARGV[6], 'REPLACE'}}
for i = 7, #ARGV do args[#args + 1] = ARGV[i] end
args[#args + 1] = 'KEYS'
for _, k in ipairs(KEYS) do args[#args + 1] = k end
return redis.call(unpack(args))
"#,
        lock = String::from_utf8_lossy(LOCK_PREFIX)
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
    }
}
