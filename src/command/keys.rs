//! Finding the keys in a command's arguments, and Redis's error texts when
//! the arguments that locate them are malformed.
//!
//! Each key layout follows what the Redis 7.0 command itself parses (not
//! only its `COMMAND INFO` key specs), so the keys found are the keys the
//! backend will touch.

use super::{arity_error, Command, KeySpec, NumkeysRule};
use crate::protocol::parse_int;
use bytes::Bytes;

const SYNTAX: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const TOO_MANY_KEYS: &str = "ERR Number of keys can't be greater than number of args";
const NEGATIVE_KEYS: &str = "ERR Number of keys can't be negative";
const POSITIVE_KEYS: &str = "ERR numkeys should be greater than 0";
const NOSCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";
const UNBALANCED: &str =
    "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.";
const GROUP_ONLY: &str =
    "ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead.";
const NOACK_ONLY: &str =
    "ERR The NOACK option is only supported by XREADGROUP. You called XREAD instead.";
const MISSING_GROUP: &str = "ERR Missing GROUP option for XREADGROUP";

/// See [`Command::key_indexes`].
pub(super) fn key_indexes(command: &Command, args: &[Bytes]) -> Result<Vec<usize>, String> {
    match command.keys {
        KeySpec::None => Ok(Vec::new()),
        KeySpec::Range { first, last, step } => range(command, args.len(), first, last, step),
        KeySpec::Numkeys {
            numkeys_at,
            dest,
            rule,
        } => numkeys(command, args, numkeys_at, dest, rule),
        KeySpec::Sort => Ok(sort(args)),
        KeySpec::GeoRadius { options_from } => Ok(georadius(args, options_from)),
        KeySpec::Migrate => Ok(migrate(args)),
        KeySpec::Streams => streams(command, args),
    }
}

fn range(
    command: &Command,
    argc: usize,
    first: usize,
    last: isize,
    step: usize,
) -> Result<Vec<usize>, String> {
    let last = if last < 0 { argc as isize + last } else { last };
    if first >= argc || last < first as isize {
        return Ok(Vec::new());
    }
    let last = (last as usize).min(argc - 1);
    // MSET and MSETNX (step 2) with a key lacking its value: Redis answers
    // with its arity error.
    if !(last + 1 - first).is_multiple_of(step) {
        return Err(arity_error(command.name));
    }
    Ok((first..=last).step_by(step).collect())
}

fn numkeys(
    command: &Command,
    args: &[Bytes],
    at: usize,
    dest: bool,
    rule: NumkeysRule,
) -> Result<Vec<usize>, String> {
    let after = args.len().saturating_sub(at + 1);
    let Some(count) = args.get(at) else {
        return Ok(Vec::new());
    };
    let count = parse_int(count);
    let n = match rule {
        NumkeysRule::Script | NumkeysRule::Function => {
            // EVALSHA refuses a digest of the wrong length before it reads
            // numkeys: no script can match it.
            if command.name.starts_with("evalsha") && args.get(1).is_some_and(|sha| sha.len() != 40)
            {
                return Err(NOSCRIPT.into());
            }
            // FCALL looks its function up before it reads numkeys: with
            // numkeys unusable it names no key and goes where keyless
            // functions run, whose Redis answers "Function not found" or
            // its own numkeys error, and runs nothing.
            if rule == NumkeysRule::Function
                && !count.is_some_and(|n| (0..=after as i64).contains(&n))
            {
                return Ok(Vec::new());
            }
            let n = count.ok_or(NOT_INTEGER)?;
            if n > after as i64 {
                return Err(TOO_MANY_KEYS.into());
            }
            if n < 0 {
                return Err(NEGATIVE_KEYS.into());
            }
            n as usize
        }
        NumkeysRule::Zset => {
            let n = count.ok_or(NOT_INTEGER)?;
            if n < 1 {
                return Err(format!(
                    "ERR at least 1 input key is needed for '{}' command",
                    command.name
                ));
            }
            if n > after as i64 {
                return Err(SYNTAX.into());
            }
            n as usize
        }
        NumkeysRule::Pop | NumkeysRule::Card => {
            let n = count.filter(|&n| n >= 1).ok_or(POSITIVE_KEYS)?;
            match rule {
                // LMPOP & co. need the LEFT|RIGHT / MIN|MAX after the keys.
                NumkeysRule::Pop if n >= after as i64 => return Err(SYNTAX.into()),
                NumkeysRule::Card if n > after as i64 => return Err(TOO_MANY_KEYS.into()),
                _ => n as usize,
            }
        }
    };
    let dest = dest.then_some(1);
    Ok(dest.into_iter().chain(at + 1..at + 1 + n).collect())
}

/// SORT key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC]
/// [ALPHA] [STORE destination]: options are skipped with their arguments so
/// that a GET pattern spelled "store" is not taken for the option. The last
/// STORE wins, as in Redis.
fn sort(args: &[Bytes]) -> Vec<usize> {
    let mut store = None;
    let mut i = 2;
    while i < args.len() {
        let arg = &args[i];
        i += if is(arg, "limit") {
            3
        } else if is(arg, "get") || is(arg, "by") {
            2
        } else if is(arg, "store") && i + 1 < args.len() {
            store = Some(i + 1);
            2
        } else {
            1
        };
    }
    first_key_and(args, 1, store)
}

/// GEORADIUS[BYMEMBER] key ... [STORE key] [STOREDIST key]: the last of the
/// two options names the destination, as in Redis.
fn georadius(args: &[Bytes], options_from: usize) -> Vec<usize> {
    let mut store = None;
    let mut i = options_from;
    while i < args.len() {
        let arg = &args[i];
        if (is(arg, "store") || is(arg, "storedist")) && i + 1 < args.len() {
            store = Some(i + 1);
            i += 1;
        }
        i += 1;
    }
    first_key_and(args, 1, store)
}

/// MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw]
/// [AUTH2 user pw] [KEYS key ...].
fn migrate(args: &[Bytes]) -> Vec<usize> {
    let mut i = 6;
    while i < args.len() {
        let arg = &args[i];
        if is(arg, "keys") {
            return (i + 1..args.len()).collect();
        }
        i += if is(arg, "auth") {
            2
        } else if is(arg, "auth2") {
            3
        } else {
            1
        };
    }
    first_key_and(args, 3, None)
}

fn first_key_and(args: &[Bytes], key: usize, more: Option<usize>) -> Vec<usize> {
    let key = (key < args.len()).then_some(key);
    key.into_iter().chain(more).collect()
}

fn streams(command: &Command, args: &[Bytes]) -> Result<Vec<usize>, String> {
    let options = parse_streams(command.name == "xreadgroup", args)?;
    let count = (args.len() - options.streams_at) / 2;
    Ok((options.streams_at..options.streams_at + count).collect())
}

/// Where an XREAD / XREADGROUP's BLOCK option has its milliseconds, if it
/// has one (malformed argument lists are not blocking: they fail).
pub(super) fn streams_block(command: &Command, args: &[Bytes]) -> Option<usize> {
    parse_streams(command.name == "xreadgroup", args)
        .ok()
        .and_then(|options| options.block)
}

struct StreamsOptions {
    /// Index of the first key (just after STREAMS).
    streams_at: usize,
    /// Index of BLOCK's value (the last BLOCK's, as Redis takes it).
    block: Option<usize>,
}

/// Walks the options before STREAMS as `xreadCommand` does, in the same
/// order, so that the first problem found is the one Redis reports. COUNT
/// and BLOCK values are left for the backend to check.
fn parse_streams(group_cmd: bool, args: &[Bytes]) -> Result<StreamsOptions, String> {
    let mut block = None;
    let mut has_group = false;
    let mut streams_at = None;
    let mut i = 1;
    while i < args.len() {
        let more = args.len() - i - 1;
        let arg = &args[i];
        if is(arg, "block") && more > 0 {
            block = Some(i + 1);
            i += 1;
        } else if is(arg, "count") && more > 0 {
            i += 1;
        } else if is(arg, "streams") && more > 0 {
            if !more.is_multiple_of(2) {
                return Err(UNBALANCED.into());
            }
            streams_at = Some(i + 1);
            break;
        } else if is(arg, "group") && more >= 2 {
            if !group_cmd {
                return Err(GROUP_ONLY.into());
            }
            has_group = true;
            i += 2;
        } else if is(arg, "noack") {
            if !group_cmd {
                return Err(NOACK_ONLY.into());
            }
        } else {
            return Err(SYNTAX.into());
        }
        i += 1;
    }
    let streams_at = streams_at.ok_or(SYNTAX)?;
    if group_cmd && !has_group {
        return Err(MISSING_GROUP.into());
    }
    Ok(StreamsOptions { streams_at, block })
}

fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> Result<Vec<usize>, String> {
        let args: Vec<Bytes> = list
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        super::super::lookup_args(&args).unwrap().key_indexes(&args)
    }

    #[test]
    fn none_has_no_keys() {
        assert_eq!(keys(&["PING"]), Ok(vec![]));
    }

    #[test]
    fn range_single_key() {
        assert_eq!(keys(&["GET", "k"]), Ok(vec![1]));
        assert_eq!(keys(&["SET", "k", "v", "EX", "10"]), Ok(vec![1]));
    }

    #[test]
    fn range_to_the_end() {
        assert_eq!(keys(&["MGET", "a", "b", "c"]), Ok(vec![1, 2, 3]));
        assert_eq!(keys(&["BITOP", "AND", "d", "a", "b"]), Ok(vec![2, 3, 4]));
    }

    #[test]
    fn range_stops_before_the_timeout() {
        assert_eq!(keys(&["BLPOP", "a", "b", "0"]), Ok(vec![1, 2]));
    }

    #[test]
    fn range_of_pairs() {
        assert_eq!(keys(&["MSET", "a", "1", "b", "2"]), Ok(vec![1, 3]));
    }

    #[test]
    fn range_of_pairs_missing_a_value_is_an_arity_error() {
        assert_eq!(
            keys(&["MSET", "a", "1", "b"]),
            Err("ERR wrong number of arguments for 'mset' command".into())
        );
    }

    #[test]
    fn range_of_a_subcommand() {
        assert_eq!(keys(&["OBJECT", "ENCODING", "k"]), Ok(vec![2]));
        assert_eq!(keys(&["XGROUP", "CREATE", "s", "g", "$"]), Ok(vec![2]));
    }

    #[test]
    fn numkeys_script() {
        assert_eq!(keys(&["EVAL", "s", "2", "a", "b", "x"]), Ok(vec![3, 4]));
        let sha = "0".repeat(40);
        assert_eq!(keys(&["EVALSHA", &sha, "0", "x"]), Ok(vec![]));
    }

    #[test]
    fn evalsha_with_a_digest_of_the_wrong_length_is_noscript_first() {
        for args in [
            &["EVALSHA", "abc", "x"][..],
            &["EVALSHA", "abc", "-1"],
            &["EVALSHA_RO", "abc", "1", "k"],
        ] {
            assert_eq!(keys(args), Err(NOSCRIPT.to_string()), "{args:?}");
        }
        let sha = "a".repeat(40);
        assert_eq!(keys(&["EVALSHA", &sha, "x"]), Err(NOT_INTEGER.to_string()));
        assert_eq!(keys(&["EVALSHA", &sha, "1", "k"]), Ok(vec![3]));
    }

    #[test]
    fn numkeys_script_rejects_a_non_integer() {
        for bad in ["x", "01", "+1", " 1", "-0", "99999999999999999999"] {
            assert_eq!(
                keys(&["EVAL", "s", bad, "a"]),
                Err(NOT_INTEGER.into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn numkeys_script_rejects_negative() {
        assert_eq!(keys(&["EVAL", "s", "-1"]), Err(NEGATIVE_KEYS.into()));
    }

    #[test]
    fn numkeys_script_rejects_too_many() {
        assert_eq!(keys(&["EVAL_RO", "s", "2", "a"]), Err(TOO_MANY_KEYS.into()));
    }

    #[test]
    fn numkeys_function_leaves_an_unusable_numkeys_to_redis() {
        for bad in [
            &["FCALL", "f", "x"][..],
            &["FCALL", "f", "-1"],
            &["FCALL_RO", "f", "2", "k"],
        ] {
            assert_eq!(keys(bad), Ok(vec![]), "{bad:?}");
        }
        assert_eq!(keys(&["FCALL", "f", "1", "k"]), Ok(vec![3]));
    }

    #[test]
    fn numkeys_with_destination() {
        assert_eq!(
            keys(&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]),
            Ok(vec![1, 3, 4])
        );
        assert_eq!(
            keys(&["ZINTER", "2", "a", "b", "WITHSCORES"]),
            Ok(vec![2, 3])
        );
    }

    #[test]
    fn numkeys_zset_rejects_zero() {
        assert_eq!(
            keys(&["ZUNIONSTORE", "d", "0", "a"]),
            Err("ERR at least 1 input key is needed for 'zunionstore' command".into())
        );
    }

    #[test]
    fn numkeys_zset_rejects_too_many() {
        assert_eq!(keys(&["ZDIFF", "3", "a"]), Err(SYNTAX.into()));
        assert_eq!(keys(&["ZINTERCARD", "x", "a"]), Err(NOT_INTEGER.into()));
    }

    #[test]
    fn numkeys_pop_needs_a_direction_after_the_keys() {
        assert_eq!(keys(&["LMPOP", "2", "a", "b", "LEFT"]), Ok(vec![2, 3]));
        assert_eq!(keys(&["LMPOP", "2", "a", "LEFT"]), Err(SYNTAX.into()));
        assert_eq!(keys(&["ZMPOP", "0", "a", "MIN"]), Err(POSITIVE_KEYS.into()));
        assert_eq!(keys(&["BLMPOP", "0", "1", "a", "LEFT"]), Ok(vec![3]));
    }

    #[test]
    fn numkeys_card_rejects_too_many() {
        assert_eq!(keys(&["SINTERCARD", "1", "a", "LIMIT", "5"]), Ok(vec![2]));
        assert_eq!(keys(&["SINTERCARD", "3", "a"]), Err(TOO_MANY_KEYS.into()));
        assert_eq!(keys(&["SINTERCARD", "x", "a"]), Err(POSITIVE_KEYS.into()));
    }

    #[test]
    fn sort_store_destination() {
        assert_eq!(
            keys(&["SORT", "k", "GET", "store", "STORE", "d"]),
            Ok(vec![1, 5])
        );
        assert_eq!(
            keys(&["SORT", "k", "LIMIT", "0", "1", "ALPHA"]),
            Ok(vec![1])
        );
        assert_eq!(keys(&["SORT_RO", "k", "BY", "w_*"]), Ok(vec![1]));
    }

    #[test]
    fn georadius_store_destination() {
        assert_eq!(
            keys(&["GEORADIUS", "k", "0", "0", "1", "km", "STORE", "d"]),
            Ok(vec![1, 7])
        );
        assert_eq!(
            keys(&[
                "GEORADIUSBYMEMBER",
                "k",
                "store",
                "1",
                "km",
                "STOREDIST",
                "d"
            ]),
            Ok(vec![1, 6])
        );
        assert_eq!(
            keys(&["GEORADIUS", "k", "0", "0", "1", "km", "STORE"]),
            Ok(vec![1])
        );
    }

    #[test]
    fn migrate_single_key_or_keys_option() {
        assert_eq!(keys(&["MIGRATE", "h", "1", "k", "0", "10"]), Ok(vec![3]));
        let many = [
            "MIGRATE", "h", "1", "", "0", "10", "AUTH", "keys", "KEYS", "a", "b",
        ];
        assert_eq!(keys(&many), Ok(vec![9, 10]));
    }

    #[test]
    fn streams_keys_are_the_first_half() {
        assert_eq!(
            keys(&["XREAD", "COUNT", "2", "STREAMS", "a", "b", "0", "0"]),
            Ok(vec![4, 5])
        );
        let group = [
            "XREADGROUP",
            "GROUP",
            "streams",
            "c",
            "NOACK",
            "STREAMS",
            "a",
            ">",
        ];
        assert_eq!(keys(&group), Ok(vec![6]));
    }

    #[test]
    fn streams_unbalanced() {
        assert_eq!(
            keys(&["XREAD", "STREAMS", "a", "b", "0"]),
            Err(UNBALANCED.into())
        );
    }

    #[test]
    fn streams_missing_is_a_syntax_error() {
        assert_eq!(keys(&["XREAD", "COUNT", "1", "a", "b"]), Err(SYNTAX.into()));
        assert_eq!(
            keys(&["XREAD", "COUNT", "1", "STREAMS"]),
            Err(SYNTAX.into())
        );
    }

    #[test]
    fn streams_group_options_only_in_xreadgroup() {
        assert_eq!(
            keys(&["XREAD", "GROUP", "g", "c", "STREAMS", "a", "0"]),
            Err(GROUP_ONLY.into())
        );
        assert_eq!(
            keys(&["XREAD", "NOACK", "STREAMS", "a", "0"]),
            Err(NOACK_ONLY.into())
        );
        assert_eq!(
            keys(&["XREADGROUP", "COUNT", "1", "NOACK", "STREAMS", "a", ">"]),
            Err(MISSING_GROUP.into())
        );
    }
}
