//! Command table: for every Redis 7.0 command, its arity, where its keys are
//! and how the proxy handles it (forward, split, answer locally, refuse).
//!
//! The table itself is in `table.rs`, one line per command, written from the
//! output of `COMMAND` on redis-server 7.0.15 and checked against it by
//! `tests/command_table.rs`. This file holds the types, the lookups and the
//! error texts Redis replies for unknown commands and wrong argument counts;
//! `keys.rs` finds the keys in an argument list.
//!
//! Container commands (CLIENT, OBJECT, XINFO, ...) have one entry per
//! subcommand, named `container|sub` as in Redis. [`resolve`] and
//! [`lookup_args`] look at `args[1]` for them; [`lookup`] sees only top-level
//! names.

mod index;
mod keys;
pub mod readonly;
mod table;

use bytes::Bytes;

/// The Redis version the proxy reports (HELLO, INFO) until it has read its
/// servers': the command set the table holds.
pub const REDIS_VERSION: &str = "7.0.0";

/// How the proxy handles a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Sent to the backend that owns its key(s); with several keys they must
    /// all map to one backend (else -CROSSSLOT), decided by the caller.
    Forward,
    /// Split per backend and reassembled by the proxy.
    Split(SplitKind),
    /// Answered by the proxy itself: PING ECHO QUIT AUTH SELECT HELLO INFO and
    /// CLIENT SETNAME GETNAME SETINFO ID.
    Local,
    /// Keyless and harmless, sent to any one backend: COMMAND and its
    /// subcommands, TIME, LOLWUT, and the HELP of OBJECT, MEMORY, XINFO and
    /// XGROUP (whose other subcommands are forwarded). Every backend runs the
    /// same Redis, so any one gives the answer a client expects.
    AnyBackend,
    /// Sent to every backend, replies combined: DBSIZE.
    FanOut,
    /// Over the whole keyspace, shard after shard or every shard at once
    /// (`proxy::keyspace`).
    Keyspace(KeyspaceOp),
    /// Scripts and functions, kept alike on every shard (`proxy::scripts`).
    Scripts(ScriptOp),
    /// May block: BLPOP & co., XREAD and XREADGROUP with BLOCK, WAIT. Runs on
    /// the client's dedicated connection to the shard of its keys, so it
    /// holds up nobody else.
    Blocking,
    /// MULTI EXEC DISCARD WATCH UNWATCH: the transaction runs on the
    /// client's dedicated connection to the shard of its first key.
    Transaction,
    /// Pub/sub: the (P|S)(UN)SUBSCRIBEs on the client's own subscriber
    /// connections, PUBLISH and SPUBLISH to their channel's shard, PUBSUB
    /// over the shards (`proxy::pubsub`).
    PubSub,
    /// Cannot work through a sharding proxy: administration and
    /// replication commands.
    Unsupported,
}

/// How a split command is cut up and its replies put back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    /// MGET: the values, in the order of the keys.
    Mget,
    /// MSET: key/value pairs; +OK once every part succeeded.
    Mset,
    /// DEL UNLINK EXISTS TOUCH: the integer replies are summed.
    SumIntegers,
}

/// The keyspace-wide commands, and how each covers the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyspaceOp {
    /// SCAN: one shard after the other, under one cursor.
    Scan,
    /// KEYS: every shard's keys, together.
    Keys,
    /// RANDOMKEY: a random shard's, trying the others while they are empty.
    RandomKey,
    /// FLUSHALL FLUSHDB: every shard, if the pool's `allow_flush` says so.
    Flush,
}

/// How a SCRIPT or FUNCTION subcommand reaches the shards and how their
/// replies become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptOp {
    /// SCRIPT LOAD, FUNCTION LOAD: every shard, which must all answer the
    /// same (the SHA1, the library name).
    Load,
    /// SCRIPT EXISTS: every shard; a script exists where every shard has it.
    Exists,
    /// SCRIPT FLUSH, FUNCTION DELETE FLUSH RESTORE: every shard, `+OK` once
    /// every shard said it.
    AllOk,
    /// SCRIPT KILL, FUNCTION KILL: every shard, each over a connection of
    /// its own (the shared one waits behind the busy script).
    Kill,
    /// FUNCTION DUMP LIST: the one shard keyless scripts run on.
    OneShard,
    /// FUNCTION STATS: every shard, each over a connection of its own (the
    /// shared one waits behind a function running long); the reply of one
    /// running a function, else the keyless shard's.
    Stats,
}

/// Where the keys are in the argument list (`args[0]` is the command name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// No keys.
    None,
    /// Keys at `first`, `first + step`, ... up to `last` (a negative `last`
    /// counts from the end: -1 is the last argument).
    Range {
        first: usize,
        last: isize,
        step: usize,
    },
    /// A key count at `args[numkeys_at]` and that many keys right after it;
    /// with `dest`, `args[1]` is a key too (the destination of ZUNIONSTORE,
    /// ZINTERSTORE, ZDIFFSTORE). `rule` picks Redis's checks and error texts.
    Numkeys {
        numkeys_at: usize,
        dest: bool,
        rule: NumkeysRule,
    },
    /// SORT: the key at 1, and the destination after a STORE option.
    Sort,
    /// GEORADIUS / GEORADIUSBYMEMBER: the key at 1, and the destination after
    /// the last STORE or STOREDIST option at or after `options_from`.
    GeoRadius { options_from: usize },
    /// MIGRATE: the key at 3, or the keys after a KEYS option.
    Migrate,
    /// XREAD / XREADGROUP: keys are the first half of the args after STREAMS.
    Streams,
}

/// Which of Redis's numkeys checks a [`KeySpec::Numkeys`] command makes; they
/// differ in what they accept and in their error texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumkeysRule {
    /// EVAL EVAL_RO EVALSHA EVALSHA_RO: 0 keys allowed.
    Script,
    /// FCALL FCALL_RO: like `Script`, but a non-number is "Bad number of keys".
    Function,
    /// ZUNION ZINTER ZDIFF ZINTERCARD and the *STORE forms: at least 1 key.
    Zset,
    /// LMPOP ZMPOP BLMPOP BZMPOP: at least 1 key, and a direction after them.
    Pop,
    /// SINTERCARD: at least 1 key.
    Card,
}

/// One command of the table.
#[derive(Debug)]
pub struct Command {
    /// Lower-case name; `container|sub` for a subcommand, as Redis names it.
    pub name: &'static str,
    /// Redis's arity: `n` exactly n arguments, `-n` at least n (the name counts).
    pub arity: i32,
    /// Where the keys are.
    pub keys: KeySpec,
    /// How the proxy handles it.
    pub handling: Handling,
    /// The subcommands of a container command (sorted by name), else empty.
    pub subcommands: &'static [Command],
}

/// Every top-level command, sorted by name; containers hold their
/// subcommands.
pub fn commands() -> &'static [Command] {
    table::COMMANDS
}

/// Looks a top-level command up by name, ASCII case-insensitive, without
/// allocating. A container (`client`) is found, `client|setname` is not:
/// use [`lookup_args`] or [`resolve`] for subcommands.
pub fn lookup(name: &[u8]) -> Option<&'static Command> {
    index::top_level().find(name)
}

/// Looks a command up from its arguments, as Redis does: for a container
/// command with a subcommand argument, the subcommand's entry (None when the
/// subcommand is unknown); otherwise the command's own entry.
pub fn lookup_args(args: &[Bytes]) -> Option<&'static Command> {
    let command = lookup(args.first()?)?;
    match args.get(1) {
        Some(sub) if command.is_container() => {
            find(command.subcommands, command.name.len() + 1, sub)
        }
        _ => Some(command),
    }
}

/// The command to run for `args`, checked the way Redis 7.0 checks it before
/// running anything.
///
/// # Errors
/// Redis's own reply text for an unknown command, an unknown subcommand of a
/// container, or a wrong number of arguments.
pub fn resolve(args: &[Bytes]) -> Result<&'static Command, String> {
    let Some(command) = lookup_args(args) else {
        return Err(match args.first().and_then(|name| lookup(name)) {
            Some(container) => unknown_subcommand_error(container.name, &args[1]),
            None => unknown_command_error(args),
        });
    };
    if command.arity_ok(args.len()) {
        Ok(command)
    } else {
        Err(arity_error(command.name))
    }
}

/// Binary search of a table sorted by name; `skip` bytes of each entry's name
/// (the `container|` prefix) are ignored. Used for subcommands; top-level
/// names, looked up once per request, go through [`index`].
fn find(table: &'static [Command], skip: usize, name: &[u8]) -> Option<&'static Command> {
    table
        .binary_search_by(|entry| {
            let entry = &entry.name.as_bytes()[skip..];
            entry
                .iter()
                .copied()
                .cmp(name.iter().map(u8::to_ascii_lowercase))
        })
        .ok()
        .map(|i| &table[i])
}

impl Command {
    /// True when `argc` arguments (name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let n = self.arity.unsigned_abs() as usize;
        if self.arity >= 0 {
            argc == n
        } else {
            argc >= n
        }
    }

    /// True for a command with subcommands (CLIENT, OBJECT, ...).
    pub fn is_container(&self) -> bool {
        !self.subcommands.is_empty()
    }

    /// Indexes into `args` of every key the command touches, in order. Keys
    /// that repeat are listed each time. EVAL & co. with 0 keys give none.
    ///
    /// # Errors
    /// The exact text Redis 7.0 replies when the key layout is malformed: a
    /// bad key count, an odd STREAMS list, a missing STREAMS, MSET's odd pair.
    pub fn key_indexes(&self, args: &[Bytes]) -> Result<Vec<usize>, String> {
        keys::key_indexes(self, args)
    }

    /// [`Command::key_indexes`] of the keys that hold data: none for the
    /// shard channel commands (SSUBSCRIBE, SUNSUBSCRIBE, SPUBLISH), whose
    /// channels sit where keys would in the table (they route by them) but
    /// are channels, for the rights of a user and for the names the
    /// proxies keep (review: a user with key patterns was refused
    /// SSUBSCRIBE of a channel outside them, which Redis with `&*` allows).
    /// A malformed key layout gives none: the routing replies Redis's error
    /// for it.
    pub fn data_key_indexes(&self, args: &[Bytes]) -> Vec<usize> {
        if matches!(self.name, "ssubscribe" | "sunsubscribe" | "spublish") {
            return Vec::new();
        }
        self.key_indexes(args).unwrap_or_default()
    }

    /// The handling for these arguments: `self.handling`, except that XREAD
    /// and XREADGROUP with a BLOCK option are `Blocking`.
    pub fn handling_for(&self, args: &[Bytes]) -> Handling {
        if self.keys == KeySpec::Streams && keys::streams_block(self, args).is_some() {
            Handling::Blocking
        } else {
            self.handling
        }
    }

    /// XREAD and XREADGROUP: the milliseconds of the BLOCK option, found
    /// where Redis looks for it (not a group or consumer named "block").
    pub fn stream_block_arg<'a>(&self, args: &'a [Bytes]) -> Option<&'a Bytes> {
        if self.keys != KeySpec::Streams {
            return None;
        }
        args.get(keys::streams_block(self, args)?)
    }
}

/// Redis's error for an unknown command, e.g. `ERR unknown command 'foo', with
/// args beginning with: 'a' 'b' ` (no leading '-'). Like Redis, the name and
/// the quoted args stop at 128 bytes and at a NUL byte, and CR/LF become
/// spaces. Bytes that are not UTF-8 are replaced (U+FFFD).
pub fn unknown_command_error(args: &[Bytes]) -> String {
    let name = args.first().map(|a| a.as_ref()).unwrap_or_default();
    let mut quoted = Vec::new();
    for arg in args.iter().skip(1) {
        if quoted.len() >= 128 {
            break;
        }
        let room = 128 - quoted.len();
        quoted.push(b'\'');
        quoted.extend_from_slice(c_string(arg, room));
        quoted.extend_from_slice(b"' ");
    }
    let mut text = b"ERR unknown command '".to_vec();
    text.extend_from_slice(c_string(name, 128));
    text.extend_from_slice(b"', with args beginning with: ");
    text.extend_from_slice(&quoted);
    one_line(text)
}

/// Redis's error for a wrong number of arguments, e.g. `ERR wrong number of
/// arguments for 'get' command`; `name` is the table name (`object|encoding`
/// for a subcommand, as Redis says it).
pub fn arity_error(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// Redis's error for an unknown subcommand of container `cmd`, e.g.
/// `ERR unknown subcommand 'foo'. Try CLIENT HELP.`.
pub fn unknown_subcommand_error(cmd: &str, sub: &[u8]) -> String {
    let mut text = b"ERR unknown subcommand '".to_vec();
    text.extend_from_slice(c_string(sub, 128));
    text.extend_from_slice(b"'. Try ");
    text.extend_from_slice(cmd.to_ascii_uppercase().as_bytes());
    text.extend_from_slice(b" HELP.");
    one_line(text)
}

/// What C's `%.Ns` prints of `bytes`: up to `max` bytes, stopping at a NUL.
fn c_string(bytes: &[u8], max: usize) -> &[u8] {
    let end = bytes.iter().take(max).position(|&b| b == 0);
    &bytes[..end.unwrap_or(bytes.len().min(max))]
}

/// Redis turns CR and LF into spaces so that an error stays one line.
fn one_line(mut text: Vec<u8>) -> String {
    for b in &mut text {
        if *b == b'\r' || *b == b'\n' {
            *b = b' ';
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<Bytes> {
        list.iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn lookup_ignores_case() {
        assert_eq!(lookup(b"GeT").map(|c| c.name), Some("get"));
        assert!(lookup(&[b'g'; 40]).is_none());
    }

    #[test]
    fn tables_are_sorted_for_binary_search() {
        let sorted = |t: &[Command]| t.windows(2).all(|w| w[0].name < w[1].name);
        assert!(sorted(table::COMMANDS));
        for c in table::COMMANDS.iter().filter(|c| c.is_container()) {
            assert!(sorted(c.subcommands), "{}", c.name);
            let prefix = format!("{}|", c.name);
            assert!(c.subcommands.iter().all(|s| s.name.starts_with(&prefix)));
        }
    }

    #[test]
    fn names_are_lower_case() {
        let all = table::COMMANDS
            .iter()
            .chain(table::COMMANDS.iter().flat_map(|c| c.subcommands));
        for c in all {
            assert_eq!(c.name, c.name.to_ascii_lowercase());
        }
    }

    #[test]
    fn lookup_ignores_ascii_case() {
        assert_eq!(lookup(b"GeT").unwrap().name, "get");
        assert_eq!(lookup(b"GEORADIUS_RO").unwrap().name, "georadius_ro");
        assert_eq!(lookup(b"restore-ASKING").unwrap().name, "restore-asking");
        assert!(lookup(b"gett").is_none());
        assert!(lookup(b"").is_none());
    }

    #[test]
    fn lookup_sees_top_level_names_only() {
        assert_eq!(lookup(b"object").unwrap().name, "object");
        assert!(lookup(b"object|encoding").is_none());
    }

    #[test]
    fn lookup_args_resolves_subcommands() {
        let c = lookup_args(&args(&["OBJECT", "Encoding", "k"])).unwrap();
        assert_eq!((c.name, c.handling), ("object|encoding", Handling::Forward));
        let c = lookup_args(&args(&["client", "SETNAME", "x"])).unwrap();
        assert_eq!((c.name, c.handling), ("client|setname", Handling::Local));
        assert_eq!(lookup_args(&args(&["object"])).unwrap().name, "object");
        assert!(lookup_args(&args(&["object", "nope"])).is_none());
        assert_eq!(
            lookup_args(&args(&["get", "encoding"])).unwrap().name,
            "get"
        );
        assert!(lookup_args(&[]).is_none());
    }

    #[test]
    fn client_setinfo_is_answered_locally() {
        let c = resolve(&args(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"])).unwrap();
        assert_eq!(c.handling, Handling::Local);
    }

    #[test]
    fn resolve_rejects_unknown_command() {
        assert_eq!(
            resolve(&args(&["foo", "a", "b"])).unwrap_err(),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
    }

    #[test]
    fn resolve_rejects_unknown_subcommand() {
        assert_eq!(
            resolve(&args(&["client", "maint_notifications", "on"])).unwrap_err(),
            "ERR unknown subcommand 'maint_notifications'. Try CLIENT HELP."
        );
    }

    #[test]
    fn resolve_rejects_wrong_arity_with_the_full_name() {
        assert_eq!(
            resolve(&args(&["GET"])).unwrap_err(),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            resolve(&args(&["object"])).unwrap_err(),
            "ERR wrong number of arguments for 'object' command"
        );
        assert_eq!(
            resolve(&args(&["OBJECT", "encoding"])).unwrap_err(),
            "ERR wrong number of arguments for 'object|encoding' command"
        );
        assert_eq!(
            resolve(&args(&["COMMAND"])).unwrap().handling,
            Handling::AnyBackend
        );
    }

    #[test]
    fn arity_exact_and_minimum() {
        let get = lookup(b"get").unwrap();
        assert!(!get.arity_ok(1) && get.arity_ok(2) && !get.arity_ok(3));
        let mget = lookup(b"mget").unwrap();
        assert!(!mget.arity_ok(1) && mget.arity_ok(2) && mget.arity_ok(30));
    }

    #[test]
    fn unknown_command_error_without_args() {
        assert_eq!(
            unknown_command_error(&args(&["foo"])),
            "ERR unknown command 'foo', with args beginning with: "
        );
    }

    #[test]
    fn unknown_command_error_maps_newlines_to_spaces() {
        assert_eq!(
            unknown_command_error(&args(&["Foo", "a\r\nb", "c"])),
            "ERR unknown command 'Foo', with args beginning with: 'a  b' 'c' "
        );
    }

    #[test]
    fn unknown_command_error_stops_at_nul() {
        assert_eq!(
            unknown_command_error(&args(&["fo\0o", "a\0b", "c"])),
            "ERR unknown command 'fo', with args beginning with: 'a' 'c' "
        );
    }

    #[test]
    fn unknown_command_error_stops_at_128_bytes() {
        let (a, b) = ("a".repeat(100), "b".repeat(100));
        let text = unknown_command_error(&args(&[&"x".repeat(200), &a, &b, "c"]));
        let expected = format!(
            "ERR unknown command '{}', with args beginning with: '{a}' '{}' ",
            "x".repeat(128),
            "b".repeat(25)
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn arity_error_text() {
        assert_eq!(
            arity_error("get"),
            "ERR wrong number of arguments for 'get' command"
        );
    }

    #[test]
    fn unknown_subcommand_error_text() {
        assert_eq!(
            unknown_subcommand_error("object", b"foo"),
            "ERR unknown subcommand 'foo'. Try OBJECT HELP."
        );
        assert_eq!(
            unknown_subcommand_error("client", b"foo\r\nbar"),
            "ERR unknown subcommand 'foo  bar'. Try CLIENT HELP."
        );
    }

    #[test]
    fn keyspace_and_script_commands_reach_every_shard() {
        let handling = |list: &[&str]| lookup_args(&args(list)).unwrap().handling;
        assert_eq!(
            handling(&["SCAN", "0"]),
            Handling::Keyspace(KeyspaceOp::Scan)
        );
        assert_eq!(
            handling(&["flushall"]),
            Handling::Keyspace(KeyspaceOp::Flush)
        );
        assert_eq!(
            handling(&["SCRIPT", "exists", "x"]),
            Handling::Scripts(ScriptOp::Exists)
        );
        assert_eq!(
            handling(&["FUNCTION", "LIST"]),
            Handling::Scripts(ScriptOp::OneShard)
        );
        assert_eq!(handling(&["SCRIPT", "HELP"]), Handling::AnyBackend);
        assert_eq!(handling(&["SCRIPT", "DEBUG", "YES"]), Handling::Unsupported);
    }

    #[test]
    fn xread_with_block_is_unsupported() {
        let xread = lookup(b"xread").unwrap();
        let plain = args(&["XREAD", "COUNT", "1", "STREAMS", "s", "0"]);
        assert_eq!(xread.handling_for(&plain), Handling::Forward);
        let block = args(&["XREAD", "BLOCK", "0", "STREAMS", "s", "0"]);
        assert_eq!(xread.handling_for(&block), Handling::Blocking);
        let group = lookup(b"xreadgroup").unwrap();
        let block = args(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "BLOCK",
            "10",
            "STREAMS",
            "s",
            ">",
        ]);
        assert_eq!(group.handling_for(&block), Handling::Blocking);
    }

    #[test]
    fn block_after_streams_is_a_stream_id() {
        let xread = lookup(b"xread").unwrap();
        let a = args(&["XREAD", "STREAMS", "s", "block", "0", "0"]);
        assert_eq!(xread.handling_for(&a), Handling::Forward);
    }
}
