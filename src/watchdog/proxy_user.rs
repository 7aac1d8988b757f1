//! The ACL user the proxies authenticate to the backends as (pool keys
//! `redis_user` and `redis_auth`), which the watchdog creates on its Redis
//! when given `--proxy-user` (ACL users are not replicated: each Redis
//! needs its own, and the watchdog beside each one is there to make it).
//!
//! The user may run what the proxy forwards and nothing the proxy refuses,
//! so a script sent through the proxy cannot do what the proxy refuses
//! (FLUSHALL, SELECT, MIGRATE, CONFIG, ...): Redis runs a script's calls
//! with the rights of the user that called it. README, "Security", shows
//! the resulting `ACL SETUSER` line.

/// The rules after the password: all keys and channels; every command but
/// the administrative and dangerous ones, given back the dangerous ones
/// the proxy forwards or uses (INFO keyspace, KEYS, SORT, RESTORE); and
/// none that reach another database or server (SELECT, MOVE, SWAPDB,
/// MIGRATE, COPY: Redis ACL cannot refuse COPY's DB option alone), nor
/// FLUSHALL/FLUSHDB, named although `@dangerous` holds them, to read
/// plainly. `reset` first makes the line a whole definition, so applying
/// it again is harmless and a new password replaces the old one.
pub const RULES: &[&str] = &[
    "reset",
    "on",
    "~*",
    "&*",
    "+@all",
    "-@admin",
    "-@dangerous",
    "+info",
    "+keys",
    "+sort",
    "+sort_ro",
    "+restore",
    "-flushall",
    "-flushdb",
    "-select",
    "-move",
    "-swapdb",
    "-migrate",
    "-copy",
];

/// The rules of the proxies' migration user (`<name>-migrate`, same
/// password), which moves keys of a migrating range: the connection's
/// handshake, and the take script of `crate::proxy::migration::scripts`
/// (EVAL, which calls MIGRATE, and the sizes it checks first: the
/// collection lengths and MEMORY USAGE; SET for its note that the target
/// did not answer) with WAIT for the replicas. Only the proxy
/// uses it, on connections of its own, so a client's script, which runs
/// on the main user's connections, still cannot MIGRATE.
pub const MIGRATOR_RULES: &[&str] = &[
    "~*",
    "-@all",
    "+auth",
    "+hello",
    "+select",
    "+ping",
    "+eval",
    "+migrate",
    "+wait",
    "+exists",
    // The TTL of the note and of a big key's lock: only the ones the
    // proxies and the mover write, which expire, are believed.
    "+pttl",
    "+type",
    "+hlen",
    "+scard",
    "+zcard",
    "+llen",
    "+xlen",
    "+strlen",
    "+memory|usage",
    // The take script's note that the target did not answer.
    "+set",
    // MIGRATE logs into the target as this user: it RESTOREs there.
    "+restore",
];

/// The proxy's user on the backends: its name and the SHA-256 of its
/// password (the watchdog never needs the password itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUser {
    pub name: String,
    pub password_sha256: String,
}

impl ProxyUser {
    /// `ACL SETUSER <name> reset on #<sha256> ~* ...`: the whole command.
    pub fn setuser_command(&self) -> Vec<String> {
        let mut args = vec!["ACL".to_string(), "SETUSER".into(), self.name.clone()];
        args.extend(RULES[..2].iter().map(|r| r.to_string()));
        args.push(format!("#{}", self.password_sha256));
        args.extend(RULES[2..].iter().map(|r| r.to_string()));
        args
    }

    /// `ACL SETUSER <name>-migrate reset on #<sha256> ~* -@all +migrate ...`.
    pub fn migrator_setuser_command(&self) -> Vec<String> {
        let mut args = vec![
            "ACL".to_string(),
            "SETUSER".into(),
            crate::zk::migration::migrator_user(&self.name),
            "reset".into(),
            "on".into(),
            format!("#{}", self.password_sha256),
        ];
        args.extend(MIGRATOR_RULES.iter().map(|r| r.to_string()));
        args
    }
}

/// True for 64 lower- or upper-case hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_hash_follows_reset_on() {
        let user = ProxyUser {
            name: "shardproxy".into(),
            password_sha256: "ab".repeat(32),
        };
        let line = user.setuser_command().join(" ");
        assert!(
            line.starts_with(&format!(
                "ACL SETUSER shardproxy reset on #{} ~* &* +@all",
                "ab".repeat(32)
            )),
            "{line}"
        );
        assert!(line.ends_with("-migrate -copy"), "{line}");
    }

    #[test]
    fn only_64_hex_digits_are_a_digest() {
        assert!(is_sha256_hex(&"0f".repeat(32)));
        assert!(!is_sha256_hex("0f"));
        assert!(!is_sha256_hex(&"zz".repeat(32)));
    }
}
