//! The command table data: one line per Redis 7.0.15 command, in name order
//! (lookups binary-search it), then the subcommands of each container.
//!
//! Written from `COMMAND` on redis-server 7.0.15; `tests/command_table.rs`
//! checks every name, arity and key position against a running server. The
//! one entry Redis 7.0 lacks is `client|setinfo` (Redis 7.2), which clients
//! send on connect and the proxy answers itself.
//!
//! Handling, in short (docs/commands.md has the reasons): keyed commands are
//! forwarded unless they publish or move data between databases or
//! servers; blocking commands and transactions run on a client's dedicated
//! connection; pub/sub has its own handling; keyless commands are refused unless listed as local,
//! any-backend, fan-out, keyspace-wide or script management.

use super::Handling::{
    AnyBackend, Blocking, FanOut, Forward, Keyspace, Local, PubSub, Scripts, Split, Transaction,
    Unsupported,
};
use super::KeyspaceOp::{Flush, Keys, RandomKey, Scan};
use super::NumkeysRule::{Card, Function, Pop, Script, Zset};
use super::ScriptOp::{AllOk, Exists, Kill, Load, OneShard, Stats};
use super::SplitKind::{Mget, Mset, SumIntegers};
use super::{Command, Handling, KeySpec, NumkeysRule};

/// No keys.
const NONE: KeySpec = KeySpec::None;
/// One key, right after the name.
const K1: KeySpec = range(1, 1, 1);
/// Two keys, source then destination (RENAME, LMOVE, COPY, ...).
const K1_2: KeySpec = range(1, 2, 1);
/// One key, right after the subcommand name (OBJECT ENCODING key).
const K2: KeySpec = range(2, 2, 1);
/// Every argument is a key (MGET, DEL, SINTER, ...).
const ALL: KeySpec = range(1, -1, 1);
/// Keys, then a timeout (BLPOP, BZPOPMIN, ...).
const BEFORE_TIMEOUT: KeySpec = range(1, -2, 1);
/// Key/value pairs (MSET, MSETNX).
const PAIRS: KeySpec = range(1, -1, 2);

const fn range(first: usize, last: isize, step: usize) -> KeySpec {
    KeySpec::Range { first, last, step }
}

/// A key count at `numkeys_at`, the keys after it.
const fn numkeys(numkeys_at: usize, rule: NumkeysRule) -> KeySpec {
    KeySpec::Numkeys {
        numkeys_at,
        dest: false,
        rule,
    }
}

/// A destination key, then a key count, then the keys (ZUNIONSTORE & co.).
const fn dest_numkeys(rule: NumkeysRule) -> KeySpec {
    KeySpec::Numkeys {
        numkeys_at: 2,
        dest: true,
        rule,
    }
}

const fn cmd(name: &'static str, arity: i32, keys: KeySpec, handling: Handling) -> Command {
    Command {
        name,
        arity,
        keys,
        handling,
        subcommands: &[],
    }
}

const fn container(
    name: &'static str,
    arity: i32,
    handling: Handling,
    subcommands: &'static [Command],
) -> Command {
    Command {
        name,
        arity,
        keys: NONE,
        handling,
        subcommands,
    }
}

/// Every top-level command, sorted by name.
pub(super) static COMMANDS: &[Command] = &[
    container("acl", -2, Unsupported, ACL),
    cmd("append", 3, K1, Forward),
    cmd("asking", 1, NONE, Unsupported),
    cmd("auth", -2, NONE, Local),
    cmd("bgrewriteaof", 1, NONE, Unsupported),
    cmd("bgsave", -1, NONE, Unsupported),
    cmd("bitcount", -2, K1, Forward),
    cmd("bitfield", -2, K1, Forward),
    cmd("bitfield_ro", -2, K1, Forward),
    cmd("bitop", -4, range(2, -1, 1), Forward),
    cmd("bitpos", -3, K1, Forward),
    cmd("blmove", 6, K1_2, Blocking),
    cmd("blmpop", -5, numkeys(2, Pop), Blocking),
    cmd("blpop", -3, BEFORE_TIMEOUT, Blocking),
    cmd("brpop", -3, BEFORE_TIMEOUT, Blocking),
    cmd("brpoplpush", 4, K1_2, Blocking),
    cmd("bzmpop", -5, numkeys(2, Pop), Blocking),
    cmd("bzpopmax", -3, BEFORE_TIMEOUT, Blocking),
    cmd("bzpopmin", -3, BEFORE_TIMEOUT, Blocking),
    container("client", -2, Local, CLIENT),
    container("cluster", -2, Unsupported, CLUSTER),
    container("command", -1, AnyBackend, COMMAND),
    container("config", -2, Unsupported, CONFIG),
    cmd("copy", -3, K1_2, Forward),
    cmd("dbsize", 1, NONE, FanOut),
    cmd("debug", -2, NONE, Unsupported),
    cmd("decr", 2, K1, Forward),
    cmd("decrby", 3, K1, Forward),
    cmd("del", -2, ALL, Split(SumIntegers)),
    cmd("discard", 1, NONE, Transaction),
    cmd("dump", 2, K1, Forward),
    cmd("echo", 2, NONE, Local),
    cmd("eval", -3, numkeys(2, Script), Forward),
    cmd("eval_ro", -3, numkeys(2, Script), Forward),
    cmd("evalsha", -3, numkeys(2, Script), Forward),
    cmd("evalsha_ro", -3, numkeys(2, Script), Forward),
    cmd("exec", 1, NONE, Transaction),
    cmd("exists", -2, ALL, Split(SumIntegers)),
    cmd("expire", -3, K1, Forward),
    cmd("expireat", -3, K1, Forward),
    cmd("expiretime", 2, K1, Forward),
    cmd("failover", -1, NONE, Unsupported),
    cmd("fcall", -3, numkeys(2, Function), Forward),
    cmd("fcall_ro", -3, numkeys(2, Function), Forward),
    cmd("flushall", -1, NONE, Keyspace(Flush)),
    cmd("flushdb", -1, NONE, Keyspace(Flush)),
    container("function", -2, Unsupported, FUNCTION),
    cmd("geoadd", -5, K1, Forward),
    cmd("geodist", -4, K1, Forward),
    cmd("geohash", -2, K1, Forward),
    cmd("geopos", -2, K1, Forward),
    cmd(
        "georadius",
        -6,
        KeySpec::GeoRadius { options_from: 6 },
        Forward,
    ),
    cmd("georadius_ro", -6, K1, Forward),
    cmd(
        "georadiusbymember",
        -5,
        KeySpec::GeoRadius { options_from: 5 },
        Forward,
    ),
    cmd("georadiusbymember_ro", -5, K1, Forward),
    cmd("geosearch", -7, K1, Forward),
    cmd("geosearchstore", -8, K1_2, Forward),
    cmd("get", 2, K1, Forward),
    cmd("getbit", 3, K1, Forward),
    cmd("getdel", 2, K1, Forward),
    cmd("getex", -2, K1, Forward),
    cmd("getrange", 4, K1, Forward),
    cmd("getset", 3, K1, Forward),
    cmd("hdel", -3, K1, Forward),
    cmd("hello", -1, NONE, Local),
    cmd("hexists", 3, K1, Forward),
    cmd("hget", 3, K1, Forward),
    cmd("hgetall", 2, K1, Forward),
    cmd("hincrby", 4, K1, Forward),
    cmd("hincrbyfloat", 4, K1, Forward),
    cmd("hkeys", 2, K1, Forward),
    cmd("hlen", 2, K1, Forward),
    cmd("hmget", -3, K1, Forward),
    cmd("hmset", -4, K1, Forward),
    cmd("hrandfield", -2, K1, Forward),
    cmd("hscan", -3, K1, Forward),
    cmd("hset", -4, K1, Forward),
    cmd("hsetnx", 4, K1, Forward),
    cmd("hstrlen", 3, K1, Forward),
    cmd("hvals", 2, K1, Forward),
    cmd("incr", 2, K1, Forward),
    cmd("incrby", 3, K1, Forward),
    cmd("incrbyfloat", 3, K1, Forward),
    cmd("info", -1, NONE, Local),
    cmd("keys", 2, NONE, Keyspace(Keys)),
    cmd("lastsave", 1, NONE, Unsupported),
    container("latency", -2, Unsupported, LATENCY),
    cmd("lcs", -3, K1_2, Forward),
    cmd("lindex", 3, K1, Forward),
    cmd("linsert", 5, K1, Forward),
    cmd("llen", 2, K1, Forward),
    cmd("lmove", 5, K1_2, Forward),
    cmd("lmpop", -4, numkeys(1, Pop), Forward),
    cmd("lolwut", -1, NONE, AnyBackend),
    cmd("lpop", -2, K1, Forward),
    cmd("lpos", -3, K1, Forward),
    cmd("lpush", -3, K1, Forward),
    cmd("lpushx", -3, K1, Forward),
    cmd("lrange", 4, K1, Forward),
    cmd("lrem", 4, K1, Forward),
    cmd("lset", 4, K1, Forward),
    cmd("ltrim", 4, K1, Forward),
    container("memory", -2, Forward, MEMORY),
    cmd("mget", -2, ALL, Split(Mget)),
    cmd("migrate", -6, KeySpec::Migrate, Unsupported),
    container("module", -2, Unsupported, MODULE),
    cmd("monitor", 1, NONE, Unsupported),
    cmd("move", 3, K1, Unsupported),
    cmd("mset", -3, PAIRS, Split(Mset)),
    cmd("msetnx", -3, PAIRS, Forward),
    cmd("multi", 1, NONE, Transaction),
    container("object", -2, Forward, OBJECT),
    cmd("persist", 2, K1, Forward),
    cmd("pexpire", -3, K1, Forward),
    cmd("pexpireat", -3, K1, Forward),
    cmd("pexpiretime", 2, K1, Forward),
    cmd("pfadd", -2, K1, Forward),
    cmd("pfcount", -2, ALL, Forward),
    cmd("pfdebug", 3, K2, Unsupported),
    cmd("pfmerge", -2, ALL, Forward),
    cmd("pfselftest", 1, NONE, Unsupported),
    cmd("ping", -1, NONE, Local),
    cmd("psetex", 4, K1, Forward),
    cmd("psubscribe", -2, NONE, PubSub),
    cmd("psync", -3, NONE, Unsupported),
    cmd("pttl", 2, K1, Forward),
    cmd("publish", 3, NONE, PubSub),
    container("pubsub", -2, PubSub, PUBSUB),
    cmd("punsubscribe", -1, NONE, PubSub),
    cmd("quit", -1, NONE, Local),
    cmd("randomkey", 1, NONE, Keyspace(RandomKey)),
    cmd("readonly", 1, NONE, Unsupported),
    cmd("readwrite", 1, NONE, Unsupported),
    cmd("rename", 3, K1_2, Forward),
    cmd("renamenx", 3, K1_2, Forward),
    cmd("replconf", -1, NONE, Unsupported),
    cmd("replicaof", 3, NONE, Unsupported),
    cmd("reset", 1, NONE, Local),
    cmd("restore", -4, K1, Forward),
    cmd("restore-asking", -4, K1, Unsupported),
    cmd("role", 1, NONE, Unsupported),
    cmd("rpop", -2, K1, Forward),
    cmd("rpoplpush", 3, K1_2, Forward),
    cmd("rpush", -3, K1, Forward),
    cmd("rpushx", -3, K1, Forward),
    cmd("sadd", -3, K1, Forward),
    cmd("save", 1, NONE, Unsupported),
    cmd("scan", -2, NONE, Keyspace(Scan)),
    cmd("scard", 2, K1, Forward),
    container("script", -2, Unsupported, SCRIPT),
    cmd("sdiff", -2, ALL, Forward),
    cmd("sdiffstore", -3, ALL, Forward),
    cmd("select", 2, NONE, Local),
    cmd("set", -3, K1, Forward),
    cmd("setbit", 4, K1, Forward),
    cmd("setex", 4, K1, Forward),
    cmd("setnx", 3, K1, Forward),
    cmd("setrange", 4, K1, Forward),
    cmd("shutdown", -1, NONE, Unsupported),
    cmd("sinter", -2, ALL, Forward),
    cmd("sintercard", -3, numkeys(1, Card), Forward),
    cmd("sinterstore", -3, ALL, Forward),
    cmd("sismember", 3, K1, Forward),
    cmd("slaveof", 3, NONE, Unsupported),
    container("slowlog", -2, Unsupported, SLOWLOG),
    cmd("smembers", 2, K1, Forward),
    cmd("smismember", -3, K1, Forward),
    cmd("smove", 4, K1_2, Forward),
    cmd("sort", -2, KeySpec::Sort, Forward),
    cmd("sort_ro", -2, K1, Forward),
    cmd("spop", -2, K1, Forward),
    cmd("spublish", 3, K1, PubSub),
    cmd("srandmember", -2, K1, Forward),
    cmd("srem", -3, K1, Forward),
    cmd("sscan", -3, K1, Forward),
    cmd("ssubscribe", -2, ALL, PubSub),
    cmd("strlen", 2, K1, Forward),
    cmd("subscribe", -2, NONE, PubSub),
    cmd("substr", 4, K1, Forward),
    cmd("sunion", -2, ALL, Forward),
    cmd("sunionstore", -3, ALL, Forward),
    cmd("sunsubscribe", -1, ALL, PubSub),
    cmd("swapdb", 3, NONE, Unsupported),
    cmd("sync", 1, NONE, Unsupported),
    cmd("time", 1, NONE, AnyBackend),
    cmd("touch", -2, ALL, Split(SumIntegers)),
    cmd("ttl", 2, K1, Forward),
    cmd("type", 2, K1, Forward),
    cmd("unlink", -2, ALL, Split(SumIntegers)),
    cmd("unsubscribe", -1, NONE, PubSub),
    cmd("unwatch", 1, NONE, Transaction),
    cmd("wait", 3, NONE, Blocking),
    cmd("watch", -2, ALL, Transaction),
    cmd("xack", -4, K1, Forward),
    cmd("xadd", -5, K1, Forward),
    cmd("xautoclaim", -6, K1, Forward),
    cmd("xclaim", -6, K1, Forward),
    cmd("xdel", -3, K1, Forward),
    container("xgroup", -2, Forward, XGROUP),
    container("xinfo", -2, Forward, XINFO),
    cmd("xlen", 2, K1, Forward),
    cmd("xpending", -3, K1, Forward),
    cmd("xrange", -4, K1, Forward),
    cmd("xread", -4, KeySpec::Streams, Forward),
    cmd("xreadgroup", -7, KeySpec::Streams, Forward),
    cmd("xrevrange", -4, K1, Forward),
    cmd("xsetid", -3, K1, Forward),
    cmd("xtrim", -4, K1, Forward),
    cmd("zadd", -4, K1, Forward),
    cmd("zcard", 2, K1, Forward),
    cmd("zcount", 4, K1, Forward),
    cmd("zdiff", -3, numkeys(1, Zset), Forward),
    cmd("zdiffstore", -4, dest_numkeys(Zset), Forward),
    cmd("zincrby", 4, K1, Forward),
    cmd("zinter", -3, numkeys(1, Zset), Forward),
    cmd("zintercard", -3, numkeys(1, Zset), Forward),
    cmd("zinterstore", -4, dest_numkeys(Zset), Forward),
    cmd("zlexcount", 4, K1, Forward),
    cmd("zmpop", -4, numkeys(1, Pop), Forward),
    cmd("zmscore", -3, K1, Forward),
    cmd("zpopmax", -2, K1, Forward),
    cmd("zpopmin", -2, K1, Forward),
    cmd("zrandmember", -2, K1, Forward),
    cmd("zrange", -4, K1, Forward),
    cmd("zrangebylex", -4, K1, Forward),
    cmd("zrangebyscore", -4, K1, Forward),
    cmd("zrangestore", -5, K1_2, Forward),
    cmd("zrank", 3, K1, Forward),
    cmd("zrem", -3, K1, Forward),
    cmd("zremrangebylex", 4, K1, Forward),
    cmd("zremrangebyrank", 4, K1, Forward),
    cmd("zremrangebyscore", 4, K1, Forward),
    cmd("zrevrange", -4, K1, Forward),
    cmd("zrevrangebylex", -4, K1, Forward),
    cmd("zrevrangebyscore", -4, K1, Forward),
    cmd("zrevrank", 3, K1, Forward),
    cmd("zscan", -3, K1, Forward),
    cmd("zscore", 3, K1, Forward),
    cmd("zunion", -3, numkeys(1, Zset), Forward),
    cmd("zunionstore", -4, dest_numkeys(Zset), Forward),
];

/// ACL subcommands, sorted by name.
static ACL: &[Command] = &[
    cmd("acl|cat", -2, NONE, Unsupported),
    cmd("acl|deluser", -3, NONE, Unsupported),
    cmd("acl|dryrun", -4, NONE, Unsupported),
    cmd("acl|genpass", -2, NONE, Unsupported),
    cmd("acl|getuser", 3, NONE, Unsupported),
    cmd("acl|help", 2, NONE, Unsupported),
    cmd("acl|list", 2, NONE, Unsupported),
    cmd("acl|load", 2, NONE, Unsupported),
    cmd("acl|log", -2, NONE, Unsupported),
    cmd("acl|save", 2, NONE, Unsupported),
    cmd("acl|setuser", -3, NONE, Unsupported),
    cmd("acl|users", 2, NONE, Unsupported),
    cmd("acl|whoami", 2, NONE, Local),
];
/// CLIENT subcommands, sorted by name.
static CLIENT: &[Command] = &[
    cmd("client|caching", 3, NONE, Unsupported),
    cmd("client|getname", 2, NONE, Local),
    cmd("client|getredir", 2, NONE, Unsupported),
    cmd("client|help", 2, NONE, Unsupported),
    cmd("client|id", 2, NONE, Local),
    cmd("client|info", 2, NONE, Unsupported),
    cmd("client|kill", -3, NONE, Unsupported),
    cmd("client|list", -2, NONE, Unsupported),
    cmd("client|no-evict", 3, NONE, Unsupported),
    cmd("client|pause", -3, NONE, Unsupported),
    cmd("client|reply", 3, NONE, Unsupported),
    cmd("client|setinfo", 4, NONE, Local),
    cmd("client|setname", 3, NONE, Local),
    cmd("client|tracking", -3, NONE, Unsupported),
    cmd("client|trackinginfo", 2, NONE, Unsupported),
    cmd("client|unblock", -3, NONE, Unsupported),
    cmd("client|unpause", 2, NONE, Unsupported),
];
/// CLUSTER subcommands, sorted by name.
static CLUSTER: &[Command] = &[
    cmd("cluster|addslots", -3, NONE, Unsupported),
    cmd("cluster|addslotsrange", -4, NONE, Unsupported),
    cmd("cluster|bumpepoch", 2, NONE, Unsupported),
    cmd("cluster|count-failure-reports", 3, NONE, Unsupported),
    cmd("cluster|countkeysinslot", 3, NONE, Unsupported),
    cmd("cluster|delslots", -3, NONE, Unsupported),
    cmd("cluster|delslotsrange", -4, NONE, Unsupported),
    cmd("cluster|failover", -2, NONE, Unsupported),
    cmd("cluster|flushslots", 2, NONE, Unsupported),
    cmd("cluster|forget", 3, NONE, Unsupported),
    cmd("cluster|getkeysinslot", 4, NONE, Unsupported),
    cmd("cluster|help", 2, NONE, Unsupported),
    cmd("cluster|info", 2, NONE, Unsupported),
    cmd("cluster|keyslot", 3, NONE, Unsupported),
    cmd("cluster|links", 2, NONE, Unsupported),
    cmd("cluster|meet", -4, NONE, Unsupported),
    cmd("cluster|myid", 2, NONE, Unsupported),
    cmd("cluster|nodes", 2, NONE, Unsupported),
    cmd("cluster|replicas", 3, NONE, Unsupported),
    cmd("cluster|replicate", 3, NONE, Unsupported),
    cmd("cluster|reset", -2, NONE, Unsupported),
    cmd("cluster|saveconfig", 2, NONE, Unsupported),
    cmd("cluster|set-config-epoch", 3, NONE, Unsupported),
    cmd("cluster|setslot", -4, NONE, Unsupported),
    cmd("cluster|shards", 2, NONE, Unsupported),
    cmd("cluster|slaves", 3, NONE, Unsupported),
    cmd("cluster|slots", 2, NONE, Unsupported),
];
/// COMMAND subcommands, sorted by name.
static COMMAND: &[Command] = &[
    cmd("command|count", 2, NONE, AnyBackend),
    cmd("command|docs", -2, NONE, AnyBackend),
    cmd("command|getkeys", -4, NONE, AnyBackend),
    cmd("command|getkeysandflags", -4, NONE, AnyBackend),
    cmd("command|help", 2, NONE, AnyBackend),
    cmd("command|info", -2, NONE, AnyBackend),
    cmd("command|list", -2, NONE, AnyBackend),
];
/// CONFIG subcommands, sorted by name.
static CONFIG: &[Command] = &[
    cmd("config|get", -3, NONE, Unsupported),
    cmd("config|help", 2, NONE, Unsupported),
    cmd("config|resetstat", 2, NONE, Unsupported),
    cmd("config|rewrite", 2, NONE, Unsupported),
    cmd("config|set", -4, NONE, Unsupported),
];
/// FUNCTION subcommands, sorted by name.
static FUNCTION: &[Command] = &[
    cmd("function|delete", 3, NONE, Scripts(AllOk)),
    cmd("function|dump", 2, NONE, Scripts(OneShard)),
    cmd("function|flush", -2, NONE, Scripts(AllOk)),
    cmd("function|help", 2, NONE, AnyBackend),
    cmd("function|kill", 2, NONE, Scripts(Kill)),
    cmd("function|list", -2, NONE, Scripts(OneShard)),
    cmd("function|load", -3, NONE, Scripts(Load)),
    cmd("function|restore", -3, NONE, Scripts(AllOk)),
    cmd("function|stats", 2, NONE, Scripts(Stats)),
];
/// LATENCY subcommands, sorted by name.
static LATENCY: &[Command] = &[
    cmd("latency|doctor", 2, NONE, Unsupported),
    cmd("latency|graph", 3, NONE, Unsupported),
    cmd("latency|help", 2, NONE, Unsupported),
    cmd("latency|histogram", -2, NONE, Unsupported),
    cmd("latency|history", 3, NONE, Unsupported),
    cmd("latency|latest", 2, NONE, Unsupported),
    cmd("latency|reset", -2, NONE, Unsupported),
];
/// MEMORY subcommands, sorted by name.
static MEMORY: &[Command] = &[
    cmd("memory|doctor", 2, NONE, Unsupported),
    cmd("memory|help", 2, NONE, AnyBackend),
    cmd("memory|malloc-stats", 2, NONE, Unsupported),
    cmd("memory|purge", 2, NONE, Unsupported),
    cmd("memory|stats", 2, NONE, Unsupported),
    cmd("memory|usage", -3, K2, Forward),
];
/// MODULE subcommands, sorted by name.
static MODULE: &[Command] = &[
    cmd("module|help", 2, NONE, Unsupported),
    cmd("module|list", 2, NONE, Unsupported),
    cmd("module|load", -3, NONE, Unsupported),
    cmd("module|loadex", -3, NONE, Unsupported),
    cmd("module|unload", 3, NONE, Unsupported),
];
/// OBJECT subcommands, sorted by name.
static OBJECT: &[Command] = &[
    cmd("object|encoding", 3, K2, Forward),
    cmd("object|freq", 3, K2, Forward),
    cmd("object|help", 2, NONE, AnyBackend),
    cmd("object|idletime", 3, K2, Forward),
    cmd("object|refcount", 3, K2, Forward),
];
/// PUBSUB subcommands, sorted by name.
static PUBSUB: &[Command] = &[
    cmd("pubsub|channels", -2, NONE, PubSub),
    cmd("pubsub|help", 2, NONE, PubSub),
    cmd("pubsub|numpat", 2, NONE, PubSub),
    cmd("pubsub|numsub", -2, NONE, PubSub),
    cmd("pubsub|shardchannels", -2, NONE, PubSub),
    cmd("pubsub|shardnumsub", -2, NONE, PubSub),
];
/// SCRIPT subcommands, sorted by name.
static SCRIPT: &[Command] = &[
    cmd("script|debug", 3, NONE, Unsupported),
    cmd("script|exists", -3, NONE, Scripts(Exists)),
    cmd("script|flush", -2, NONE, Scripts(AllOk)),
    cmd("script|help", 2, NONE, AnyBackend),
    cmd("script|kill", 2, NONE, Scripts(Kill)),
    cmd("script|load", 3, NONE, Scripts(Load)),
];
/// SLOWLOG subcommands, sorted by name.
static SLOWLOG: &[Command] = &[
    cmd("slowlog|get", -2, NONE, Unsupported),
    cmd("slowlog|help", 2, NONE, Unsupported),
    cmd("slowlog|len", 2, NONE, Unsupported),
    cmd("slowlog|reset", 2, NONE, Unsupported),
];
/// XGROUP subcommands, sorted by name.
static XGROUP: &[Command] = &[
    cmd("xgroup|create", -5, K2, Forward),
    cmd("xgroup|createconsumer", 5, K2, Forward),
    cmd("xgroup|delconsumer", 5, K2, Forward),
    cmd("xgroup|destroy", 4, K2, Forward),
    cmd("xgroup|help", 2, NONE, AnyBackend),
    cmd("xgroup|setid", -5, K2, Forward),
];
/// XINFO subcommands, sorted by name.
static XINFO: &[Command] = &[
    cmd("xinfo|consumers", 4, K2, Forward),
    cmd("xinfo|groups", 3, K2, Forward),
    cmd("xinfo|help", 2, NONE, AnyBackend),
    cmd("xinfo|stream", -3, K2, Forward),
];
