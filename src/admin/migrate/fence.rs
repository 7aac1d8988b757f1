//! Fencing off a mover that another has replaced.
//!
//! Running `migrate` again continues a migration, and `abort` turns it
//! around; either may happen while an earlier mover still runs: one that
//! was stopped (SIGSTOP, a long pause, a hung host) and wakes up later, or
//! one the operator did not know was still going. Two movers working the
//! same range undo each other: one renames its half-copied big key over
//! the whole one the other just finished, or moves keys forward again
//! after the turned-around migration brought them back, where no proxy
//! reads them (a review lost 999,500 of 1,000,001 list elements, and 900
//! of 10,000 keys, that way).
//!
//! So the latest mover wins. When it connects to the two shards it loads,
//! on each master, a function library ([`LIBRARY`]) with its own token
//! written into the code, and every write it makes afterwards is a call of
//! that library's functions that first compares the caller's token with
//! the loaded one (Redis runs a function whole, and loading a library
//! replaces it at once, so no write of a replaced mover can slip in after
//! the check). A replaced mover's next write is refused with [`REFUSAL`]
//! and it stops; `abort` loads a token of its own, which stops the running
//! mover the same way. A library, unlike a key, is not in the keyspace
//! clients count and scan; it is deleted when the migration ends.

use crate::protocol::Value;
use crate::redis_client::{RedisConn, RedisError};
use bytes::Bytes;
use std::time::{SystemTime, UNIX_EPOCH};

/// The library's name (`FUNCTION LIST` shows it while a migration runs).
pub(crate) const LIBRARY: &str = "shardproxy_mover";
/// The error a replaced mover's write gets (without its leading '-').
pub(crate) const REFUSAL: &str = "FENCED another shardproxy-admin run took this migration over";

/// The library's code, `TOKEN` standing for the mover's token. Every
/// function but the first takes the caller's token as its first argument.
/// - `shardproxy_mover_token`: the token loaded.
/// - `shardproxy_fenced`: runs the rest of its arguments as a command.
/// - `shardproxy_check`: 1, or the refusal.
/// - `shardproxy_lock` (keys: a big key, its lock; then the lock's TTL in
///   ms): locks the key for the copy; answers `{type, absolute expiry ms
///   or -1}`, or 0 when the key is gone (a proxy moved it meanwhile). A
///   lock a replaced mover left is taken over: that mover can write
///   nothing more.
/// - `shardproxy_release` (keys: the big key, its lock): the key and its
///   lock go together, once the copy is in place on the target.
const CODE: &str = r#"#!lua name=shardproxy_mover
local token = 'TOKEN'
local function refused(args)
  if args[1] ~= token then
    return redis.error_reply('FENCED another shardproxy-admin run took this migration over')
  end
end
-- allow-oom: moving keys off a full source is what frees it.
local function register(name, callback, flags)
  redis.register_function{function_name = name, callback = callback, flags = flags}
end
register('shardproxy_mover_token', function() return token end, {'no-writes', 'allow-oom'})
register('shardproxy_fenced', function(keys, args)
  local no = refused(args)
  if no then return no end
  return redis.call(unpack(args, 2))
end, {'allow-oom'})
register('shardproxy_check', function(keys, args)
  return refused(args) or 1
end, {'no-writes', 'allow-oom'})
register('shardproxy_lock', function(keys, args)
  local no = refused(args)
  if no then return no end
  if redis.call('exists', keys[1]) == 0 then return 0 end
  redis.call('set', keys[2], token, 'PX', args[2])
  return {redis.call('type', keys[1])['ok'], redis.call('pexpiretime', keys[1])}
end, {'allow-oom'})
register('shardproxy_release', function(keys, args)
  local no = refused(args)
  if no then return no end
  redis.call('unlink', keys[1])
  redis.call('del', keys[2])
  return 1
end, {'allow-oom'})
"#;

/// One mover's claim on the migration.
pub(crate) struct Fence {
    token: Bytes,
}

impl Fence {
    /// A token no other run has: the migration, this process, and the
    /// time it claimed.
    pub(crate) fn new(migration: &str) -> Fence {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Written into Lua code between quotes: only safe characters.
        let migration: String = migration
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Fence {
            token: Bytes::from(format!("{migration}/{}/{nanos}", std::process::id())),
        }
    }

    /// Takes the migration over on `conn`'s Redis: writes made under an
    /// earlier token of the same migration are refused from now on. A
    /// token of another migration (this one turned around by `abort`, or
    /// ended and another begun) is not taken over: this run is the stale
    /// one, and is refused with [`REFUSAL`].
    pub(crate) async fn claim(&self, conn: &mut RedisConn) -> Result<(), RedisError> {
        if let Some(loaded) = Fence::loaded(conn).await? {
            if migration_of(&loaded) != migration_of(&self.token) {
                return Err(refusal(conn));
            }
        }
        self.load(conn).await
    }

    async fn load(&self, conn: &mut RedisConn) -> Result<(), RedisError> {
        let code = CODE.replace("TOKEN", &String::from_utf8_lossy(&self.token));
        let loaded = conn
            .call(&[&b"FUNCTION"[..], b"LOAD", b"REPLACE", code.as_bytes()])
            .await;
        match loaded {
            Err(RedisError::Reply { addr, message, .. }) if message.starts_with("OOM") => {
                Err(RedisError::Reply {
                    addr,
                    command: "FUNCTION LOAD".into(),
                    message: format!("{OUT_OF_MEMORY}: {message}"),
                })
            }
            // Another library holds one of the mover's function names
            // (clients are refused such code through the proxies, but a
            // name built at run time passes): say which way out.
            Err(RedisError::Reply { addr, message, .. }) if message.contains("already exists") => {
                Err(RedisError::Reply {
                    command: "FUNCTION LOAD".into(),
                    message: format!(
                        "{message}: {FOREIGN_FUNCTION}; find it with FUNCTION LIST on {addr}, \
                         delete it, and run migrate again"
                    ),
                    addr,
                })
            }
            other => other.map(drop),
        }
    }

    /// Takes the migration over for `abort`, whatever run holds it.
    pub(crate) async fn seize(&self, conn: &mut RedisConn) -> Result<(), RedisError> {
        self.load(conn).await
    }

    /// The check alone, for a write too wide to go through
    /// `shardproxy_fenced` (Lua unpacks at most about 8,000 arguments): the
    /// write follows it on the same connection.
    pub(crate) fn check(&self) -> Vec<Bytes> {
        self.call::<&[u8]>("shardproxy_check", &[], &[])
    }

    /// The token loaded on `conn`'s Redis, if any.
    async fn loaded(conn: &mut RedisConn) -> Result<Option<Bytes>, RedisError> {
        match conn
            .call(&[&b"FCALL_RO"[..], b"shardproxy_mover_token", b"0"])
            .await
        {
            Ok(Value::Bulk(token)) => Ok(Some(token)),
            Ok(other) => Err(RedisError::Unexpected {
                addr: conn.addr().to_string(),
                command: "FCALL_RO shardproxy_mover_token".into(),
                reply: format!("{other:?}"),
            }),
            Err(RedisError::Reply { message, .. }) if message.contains("not found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Claims again on a new connection (after a failover, or a lost
    /// link): unless another run claimed meanwhile, which is refused with
    /// [`REFUSAL`]. A library a failover lost (the promoted replica had not
    /// received it) is loaded again.
    pub(crate) async fn reclaim(&self, conn: &mut RedisConn) -> Result<(), RedisError> {
        match Fence::loaded(conn).await? {
            Some(token) if token != self.token => Err(refusal(conn)),
            _ => self.load(conn).await,
        }
    }

    /// The call of the library's `function` with `keys` and `args` (the
    /// token goes first among the arguments).
    pub(crate) fn call<A: AsRef<[u8]>>(
        &self,
        function: &str,
        keys: &[A],
        args: &[A],
    ) -> Vec<Bytes> {
        let mut call = Vec::with_capacity(keys.len() + args.len() + 4);
        call.extend([
            Bytes::from_static(b"FCALL"),
            Bytes::copy_from_slice(function.as_bytes()),
            Bytes::from(keys.len().to_string()),
        ]);
        call.extend(keys.iter().map(|k| Bytes::copy_from_slice(k.as_ref())));
        call.push(self.token.clone());
        call.extend(args.iter().map(|a| Bytes::copy_from_slice(a.as_ref())));
        call
    }

    /// `args` as a command that runs only while this fence holds.
    pub(crate) fn wrap<A: AsRef<[u8]>>(&self, args: &[A]) -> Vec<Bytes> {
        self.call::<A>("shardproxy_fenced", &[], args)
    }

    /// True while `conn`'s Redis still holds this fence.
    pub(crate) async fn holds(&self, conn: &mut RedisConn) -> Result<bool, RedisError> {
        Ok(Fence::loaded(conn).await? == Some(self.token.clone()))
    }

    /// Removes the library at the migration's end, unless another run has
    /// claimed since.
    pub(crate) async fn release(&self, conn: &mut RedisConn) -> Result<(), RedisError> {
        if self.holds(conn).await? {
            conn.call(&[&b"FUNCTION"[..], b"DELETE", LIBRARY.as_bytes()])
                .await?;
        }
        Ok(())
    }
}

/// The error when another library holds one of the mover's function
/// names: no retry helps until an operator deletes it.
pub(crate) const FOREIGN_FUNCTION: &str =
    "a library other than shardproxy_mover registered a function of the mover's";

/// The start of the error when a master is out of memory (`maxmemory`
/// with `noeviction`) and cannot load the library.
pub(crate) const OUT_OF_MEMORY: &str = "out of memory: the mover cannot load its fence library; \
     raise maxmemory a little for the move (CONFIG SET maxmemory), since moving keys off frees it";

/// The migration a token was made for.
fn migration_of(token: &[u8]) -> &[u8] {
    token.split(|&b| b == b'/').next().unwrap_or(token)
}

fn refusal(conn: &RedisConn) -> RedisError {
    RedisError::Reply {
        addr: conn.addr().to_string(),
        command: "FCALL_RO shardproxy_mover_token".into(),
        message: REFUSAL.into(),
    }
}

/// True for the refusal of a replaced mover's write.
pub(crate) fn refused(error: &str) -> bool {
    error.contains(REFUSAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_refuses_with_the_words_the_mover_looks_for() {
        assert!(CODE.contains(&format!("'{REFUSAL}'")));
        assert!(CODE.contains(&format!("name={LIBRARY}\n")));
        let fence = Fence::new("m1-2-back");
        let wrapped = fence.wrap(&["RENAME", "a", "b"]);
        assert_eq!(
            &wrapped[..3],
            &["FCALL", "shardproxy_fenced", "0"].map(Bytes::from)[..]
        );
        assert_eq!(wrapped[3], fence.token);
        assert_eq!(&wrapped[4..], &["RENAME", "a", "b"].map(Bytes::from)[..]);
        assert_ne!(Fence::new("m1").token, Fence::new("m1").token);
        assert!(Fence::new("m1'; evil").token.starts_with(b"m1___evil/"));
        assert_eq!(migration_of(&Fence::new("m1-2-back").token), b"m1-2-back");
        assert_ne!(
            migration_of(&Fence::new("m1-2").token),
            migration_of(&Fence::new("m1-2-back").token)
        );
    }
}
