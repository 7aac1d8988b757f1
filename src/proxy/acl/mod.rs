//! Client users and what each may run (pool keys `users` and
//! `redis_auth`): password checks and per-command permission checks, with
//! Redis ACL's error texts, so a client sees what it would see from a Redis
//! server with the same ACL users.
//!
//! Besides the users' rights, [`check`] refuses the few forms of forwarded
//! commands that would reach past the pool's database (`COPY ... DB n`),
//! whoever runs them.

pub mod glob;

use crate::command::{readonly, Command};
use crate::config::{PoolConfig, UserConfig, UserMode};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Failed AUTH (or HELLO ... AUTH) attempts after which the proxy closes
/// the connection: enough for a client that tries a few passwords after a
/// rotation, too few for guessing on one connection.
pub const MAX_AUTH_FAILURES: u32 = 10;

/// Requests refused `-NOAUTH` on one connection, after which the proxy
/// closes it: a client does not send this many before logging in, and
/// Redis closes one whose refusals pass 1 KB (about 30) unread.
pub const MAX_UNAUTHENTICATED_REFUSALS: u32 = 100;

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NO_DEFAULT_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";
const KEY_DENIED: &str =
    "NOPERM this user has no permissions to access one of the keys used as arguments";

/// Commands a `read` user may run though Redis does not flag them
/// read-only: those of the connection (WAIT among them) and of
/// transactions (whose queued commands are checked one by one), as Redis's
/// `+@connection +@transaction`, plus INFO, which clients send on connect.
/// Sorted.
const SESSION_COMMANDS: &[&str] = &[
    "acl|whoami",
    "auth",
    "client",
    "command",
    "discard",
    "echo",
    "exec",
    "hello",
    "info",
    "multi",
    "ping",
    "quit",
    "reset",
    "select",
    "unwatch",
    "wait",
    "watch",
];

/// Commands Redis flags read-only but files under `@scripting`, not
/// `@read`: a Redis user with `+@read` may not run them (a script may call
/// any command the backend user may, and a long one holds its whole shard
/// for every client: review). Refused to `read` users.
const READONLY_SCRIPTS: &[&str] = &["eval_ro", "evalsha_ro", "fcall_ro"];

/// Commands whose effect reaches keys not named in their arguments, or the
/// code that reaches them: refused to users limited to some keys, whose
/// patterns the proxy could not enforce inside them (Redis checks a
/// script's calls itself; behind the proxy every call runs as the proxy's
/// backend user).
const REACH_BEYOND_ARGUMENTS: &[&str] = &[
    "eval",
    "eval_ro",
    "evalsha",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
    "sort",
    "sort_ro",
    // Every key of every shard, whatever its name (review: a user limited
    // to `~app:*` emptied the whole fleet with FLUSHALL when `allow_flush`
    // was on; Redis allows a keyless command to any `+@all` user, but one
    // Redis is not the fleet).
    "flushall",
    "flushdb",
    // The code other users run: such a user may not call scripts or
    // functions, so it has no use for these, and with them it could
    // replace a library that users with every key call (FUNCTION LOAD
    // REPLACE), wipe everyone's, or kill their running scripts.
    "function|delete",
    "function|flush",
    "function|kill",
    "function|load",
    "function|restore",
    "script|flush",
    "script|kill",
];

/// One client user.
#[derive(Debug)]
pub struct User {
    pub name: String,
    digest: [u8; 32],
    mode: UserMode,
    /// Key patterns; `None` allows every key.
    keys: Option<Vec<Vec<u8>>>,
}

/// The users of a pool.
#[derive(Debug)]
pub struct Users {
    users: Vec<Arc<User>>,
    /// With neither `redis_auth` nor `users`, every client is `default`
    /// with full rights from the start (Redis's `nopass` default user).
    open: Option<Arc<User>>,
}

/// Why AUTH failed: each has Redis's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    WrongPass,
    /// `AUTH password` while the default user needs none.
    NoDefaultPassword,
}

impl AuthError {
    pub fn text(self) -> &'static str {
        match self {
            AuthError::WrongPass => WRONGPASS,
            AuthError::NoDefaultPassword => NO_DEFAULT_PASSWORD,
        }
    }
}

impl Users {
    /// The pool's users: its `users` entries, and `default` from
    /// `redis_auth` unless an entry is named `default`.
    pub fn new(pool: &PoolConfig) -> Users {
        let mut users: Vec<Arc<User>> = pool.users.iter().map(User::from_config).collect();
        let default_listed = users.iter().any(|u| u.name == "default");
        if let (Some(password), false) = (&pool.redis_auth, default_listed) {
            users.push(Arc::new(User::full("default", sha256(password.as_bytes()))));
        }
        let open = (pool.redis_auth.is_none() && pool.users.is_empty())
            .then(|| Arc::new(User::full("default", [0; 32])));
        Users { users, open }
    }

    /// The user a new connection starts as: `default` when no password is
    /// configured, else none until it authenticates.
    pub fn initial(&self) -> Option<Arc<User>> {
        self.open.clone()
    }

    /// Checks `AUTH [user] password`; `user` is `default` when omitted.
    ///
    /// # Errors
    /// Redis's reasons: a wrong user/password pair, or a password given
    /// while the default user needs none.
    pub fn authenticate(
        &self,
        user: Option<&[u8]>,
        password: &[u8],
    ) -> Result<Arc<User>, AuthError> {
        if let Some(open) = &self.open {
            return match user {
                None => Err(AuthError::NoDefaultPassword),
                Some(b"default") => Ok(open.clone()),
                Some(_) => Err(AuthError::WrongPass),
            };
        }
        let name = user.unwrap_or(b"default");
        let digest = sha256(password);
        // Compare against a dummy digest for an unknown name, so that the
        // work done does not tell which names exist.
        let found = self.users.iter().find(|u| u.name.as_bytes() == name);
        let expected = found.map_or([0xff; 32], |u| u.digest);
        match found {
            Some(user) if digests_equal(&digest, &expected) => Ok(user.clone()),
            _ => Err(AuthError::WrongPass),
        }
    }
}

impl User {
    fn from_config(config: &UserConfig) -> Arc<User> {
        let keys = config.keys.as_ref().and_then(|patterns| {
            // `~*` is every key, as in Redis (whose matcher would refuse
            // the empty key against `*`).
            (!patterns.iter().any(|p| p == "*"))
                .then(|| patterns.iter().map(|p| p.as_bytes().to_vec()).collect())
        });
        Arc::new(User {
            name: config.name.clone(),
            digest: config.password_sha256,
            mode: config.mode,
            keys,
        })
    }

    fn full(name: &str, digest: [u8; 32]) -> User {
        User {
            name: name.into(),
            digest,
            mode: UserMode::Write,
            keys: None,
        }
    }
}

/// Checks that `user` may run `cmd` with `args`, and that nobody is
/// refused it.
///
/// # Errors
/// The error reply: Redis's NOPERM texts for the user's rights (the
/// command first, then its keys, as Redis checks them), or the proxy's own
/// refusal.
pub fn check(user: &User, cmd: &Command, args: &[Bytes]) -> Result<(), String> {
    let allowed = match user.mode {
        UserMode::Write => true,
        UserMode::Read => {
            let top = cmd.name.split('|').next().unwrap_or(cmd.name);
            (readonly::is_readonly(cmd.name) && !READONLY_SCRIPTS.contains(&cmd.name))
                || SESSION_COMMANDS.binary_search(&top).is_ok()
                || SESSION_COMMANDS.binary_search(&cmd.name).is_ok()
        }
    };
    let reaches_beyond = user.keys.is_some() && REACH_BEYOND_ARGUMENTS.contains(&cmd.name);
    if !allowed || reaches_beyond {
        return Err(format!(
            "NOPERM this user has no permissions to run the '{}' command",
            cmd.name
        ));
    }
    if let Some(patterns) = &user.keys {
        // Users limit keys, not channels: shard channels are left out.
        let keys = cmd.data_key_indexes(args);
        let permitted = |key: &[u8]| patterns.iter().any(|p| glob::matches(p, key));
        if !keys.iter().all(|&i| permitted(&args[i])) {
            return Err(KEY_DENIED.into());
        }
    }
    if cmd.name == "copy" && has_db_option(args) {
        return Err(
            "ERR COPY with the DB option is not supported through shardproxy: \
             the backends serve one database (redis_db)"
                .into(),
        );
    }
    Ok(())
}

/// `COPY source destination [DB n] [REPLACE]`: a DB option anywhere among
/// the options (Redis takes the last one).
fn has_db_option(args: &[Bytes]) -> bool {
    args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"db"))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Equality whose running time does not depend on where the digests
/// differ: every byte is looked at, and the differences are folded
/// together before the one comparison.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests;
