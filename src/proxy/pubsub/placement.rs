//! Which shard serves a channel: a channel belongs to a shard as a key of
//! the same name does, keyspace notification channels to their key's.

use crate::proxy::router::RoutingTable;

/// Keyspace notifications name the key after this prefix and the database
/// (`__keyspace@0__:key`).
const KEYSPACE: &[u8] = b"__keyspace@";
/// Keyevent notifications name the event (`__keyevent@0__:expired`).
pub(super) const KEYEVENT: &[u8] = b"__keyevent@";

/// The shard a channel (not a shard channel) belongs to: that of a key of
/// the same name, except for keyspace notification channels, which belong
/// to their key's shard, the only server that publishes on them. (Every
/// server publishes keyevent notifications about its own keys, so those
/// are subscribed on every shard.)
pub(super) fn channel_shard(table: &RoutingTable, name: &[u8]) -> usize {
    table.shard_of(keyspace_key(name).unwrap_or(name))
}

/// The key a keyspace notification channel (`__keyspace@<db>__:<key>`)
/// is about.
pub(super) fn keyspace_key(name: &[u8]) -> Option<&[u8]> {
    let rest = name.strip_prefix(KEYSPACE)?;
    let db_end = rest.windows(3).position(|w| w == b"__:")?;
    Some(&rest[db_end + 3..])
}

/// The shard PUBLISH (SPUBLISH for a shard channel) sends a channel's
/// messages to, and NUMSUB (SHARDNUMSUB) counts its subscribers on.
pub(crate) fn home_shard(table: &RoutingTable, name: &[u8], shard_channel: bool) -> usize {
    if shard_channel {
        table.shard_of(name)
    } else {
        channel_shard(table, name)
    }
}
