//! SORT's BY and GET patterns form keys from the elements being sorted
//! (`weight_*` becomes `weight_<element>`), which Redis reads on the server
//! of the sorted key. Through the proxy those keys may live on another
//! shard, where Redis would silently find nothing (every weight 0, every
//! GET nil). As Redis Cluster refuses such patterns, the proxy refuses
//! those whose keys cannot be known to share the sorted key's shard: a
//! pattern passes when its keys' hash tag lies wholly before the `*` and
//! puts them on that shard, or when the pool has one shard.

use crate::proxy::router::RoutingTable;
use crate::route::{hashable_key, Distribution};
use bytes::Bytes;

/// Checks the BY and GET patterns of `SORT key ...` (or SORT_RO) routed to
/// `shard`.
///
/// # Errors
/// The refusal's text, naming the option.
pub fn check_patterns(table: &RoutingTable, args: &[Bytes], shard: usize) -> Result<(), String> {
    let mut i = 2;
    while i + 1 < args.len() {
        let option = &args[i];
        let step = if option.eq_ignore_ascii_case(b"limit") {
            3
        } else if option.eq_ignore_ascii_case(b"store") {
            2
        } else if option.eq_ignore_ascii_case(b"by") || option.eq_ignore_ascii_case(b"get") {
            if !stays_on(table, &args[i + 1], shard) {
                let name = String::from_utf8_lossy(option).to_uppercase();
                return Err(format!(
                    "ERR {name} option of SORT denied through shardproxy: the keys its pattern \
                     forms may be on another shard; put the sorted key's hash tag before the '*' \
                     (e.g. weight_{{tag}}_*)"
                ));
            }
            2
        } else {
            1
        };
        i += step;
    }
    Ok(())
}

/// True when every key `pattern` forms is on `shard`: it forms none (no
/// `*`: BY then does not sort, GET answers nil; `#` is the element itself),
/// its hash tag is fixed before the `*` and hashes to `shard`, or there is
/// only one shard.
fn stays_on(table: &RoutingTable, pattern: &[u8], shard: usize) -> bool {
    let Some(star) = pattern.iter().position(|&b| b == b'*') else {
        return true;
    };
    if table.distinct_shards().len() <= 1 {
        return true;
    }
    if matches!(table.distribution, Distribution::Random(_)) || table.hash_tag.is_none() {
        return false;
    }
    // The first opening of a tag in the formed key is in the prefix, and so
    // is its close: the tag does not depend on the element.
    let prefix = &pattern[..star];
    let tagged = hashable_key(prefix, table.hash_tag).len() < prefix.len();
    tagged && table.shard_of(prefix) == shard
}
