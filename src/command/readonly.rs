//! The commands Redis 7.0.15 flags `readonly` (`COMMAND INFO`), by their
//! full name (`container|sub` for subcommands): what a `read` user may run
//! besides the session commands ([`crate::proxy::acl`]).
//!
//! Kept apart from the command table so that the table's lines stay one
//! concern; `tests/security.rs` checks this list against a running
//! redis-server's flags.

/// Sorted, so lookups can binary-search it.
pub const READONLY: &[&str] = &[
    "bitcount",
    "bitfield_ro",
    "bitpos",
    "dbsize",
    "dump",
    "eval_ro",
    "evalsha_ro",
    "exists",
    "expiretime",
    "fcall_ro",
    "geodist",
    "geohash",
    "geopos",
    "georadius_ro",
    "georadiusbymember_ro",
    "geosearch",
    "get",
    "getbit",
    "getrange",
    "hexists",
    "hget",
    "hgetall",
    "hkeys",
    "hlen",
    "hmget",
    "hrandfield",
    "hscan",
    "hstrlen",
    "hvals",
    "keys",
    "lcs",
    "lindex",
    "llen",
    "lolwut",
    "lpos",
    "lrange",
    "memory|usage",
    "mget",
    "object|encoding",
    "object|freq",
    "object|idletime",
    "object|refcount",
    "pexpiretime",
    "pfcount",
    "pttl",
    "randomkey",
    "scan",
    "scard",
    "sdiff",
    "sinter",
    "sintercard",
    "sismember",
    "smembers",
    "smismember",
    "sort_ro",
    "srandmember",
    "sscan",
    "strlen",
    "substr",
    "sunion",
    "touch",
    "ttl",
    "type",
    "xinfo|consumers",
    "xinfo|groups",
    "xinfo|stream",
    "xlen",
    "xpending",
    "xrange",
    "xread",
    "xrevrange",
    "zcard",
    "zcount",
    "zdiff",
    "zinter",
    "zintercard",
    "zlexcount",
    "zmscore",
    "zrandmember",
    "zrange",
    "zrangebylex",
    "zrangebyscore",
    "zrank",
    "zrevrange",
    "zrevrangebylex",
    "zrevrangebyscore",
    "zrevrank",
    "zscan",
    "zscore",
    "zunion",
];

/// True when Redis flags the command (by full name) read-only.
pub fn is_readonly(name: &str) -> bool {
    READONLY.binary_search(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_and_names_known_commands() {
        assert!(READONLY.windows(2).all(|w| w[0] < w[1]));
        for name in READONLY {
            let mut parts = name.split('|');
            let top = super::super::lookup(parts.next().unwrap().as_bytes()).expect(name);
            if let Some(sub) = parts.next() {
                assert!(
                    top.subcommands.iter().any(|c| c.name.ends_with(sub)),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn reads_are_read_only_and_writes_are_not() {
        assert!(is_readonly("get"));
        assert!(is_readonly("object|encoding"));
        assert!(!is_readonly("set"));
        assert!(!is_readonly("eval"));
        assert!(is_readonly("eval_ro"));
    }
}
