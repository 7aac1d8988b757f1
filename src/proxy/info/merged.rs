//! INFO sections that describe the data, not the proxy: each backend's
//! answer merged into one, so that tools reading a single Redis's INFO
//! (BullMQ and Sidekiq check `maxmemory_policy`, dashboards graph
//! `used_memory`) see the whole keyspace. Sizes and counts add up, flags
//! take the worst shard, and a text field the shards disagree on lists
//! every value.

use std::collections::HashMap;
use std::fmt::Write;

/// How one field of the merged section comes from the backends' values.
#[derive(Clone, Copy)]
enum Rule {
    /// Added up (bytes, counts).
    Sum,
    /// The largest: a flag set on any shard (loading, a save running).
    Max,
    /// The smallest: what holds on every shard (the oldest save, the
    /// fewest replicas).
    Min,
    /// `ok` only when every shard says `ok`.
    AllOk,
    /// The shards' value when they agree; otherwise each distinct value,
    /// sorted and joined by commas, so that a check for one exact value
    /// fails as it should.
    Same,
    /// Redis's human-readable size of the merged byte count named.
    Human(&'static str),
    /// The limit of the whole keyspace: the sum, or 0 (no limit) when any
    /// shard has none.
    Limit,
    /// The merged first field divided by the merged second.
    Ratio(&'static str, &'static str),
    /// A fixed value: what the proxy is to its clients.
    Fixed(&'static str),
}

use Rule::*;

const MEMORY: &[(&str, Rule)] = &[
    ("used_memory", Sum),
    ("used_memory_human", Human("used_memory")),
    ("used_memory_rss", Sum),
    ("used_memory_rss_human", Human("used_memory_rss")),
    ("used_memory_peak", Sum),
    ("used_memory_peak_human", Human("used_memory_peak")),
    ("used_memory_overhead", Sum),
    ("used_memory_dataset", Sum),
    ("used_memory_lua", Sum),
    ("used_memory_scripts", Sum),
    // Scripts are loaded on every shard alike (SCRIPT LOAD reaches them all).
    ("number_of_cached_scripts", Max),
    ("maxmemory", Limit),
    ("maxmemory_human", Human("maxmemory")),
    ("maxmemory_policy", Same),
    (
        "mem_fragmentation_ratio",
        Ratio("used_memory_rss", "used_memory"),
    ),
    ("mem_allocator", Same),
    ("lazyfree_pending_objects", Sum),
    ("lazyfreed_objects", Sum),
];

const PERSISTENCE: &[(&str, Rule)] = &[
    ("loading", Max),
    ("rdb_changes_since_last_save", Sum),
    ("rdb_saves", Sum),
    ("rdb_bgsave_in_progress", Max),
    ("rdb_last_save_time", Min),
    ("rdb_last_bgsave_status", AllOk),
    ("aof_enabled", Min),
    ("aof_rewrite_in_progress", Max),
    ("aof_last_bgrewrite_status", AllOk),
    ("aof_last_write_status", AllOk),
];

/// The proxy takes writes, so it is a master to its clients; its
/// replicas are those every shard has at least.
const REPLICATION: &[(&str, Rule)] = &[("role", Fixed("master")), ("connected_slaves", Min)];

/// The counts of the data's life in INFO stats, which the proxy appends to
/// its own stats section (cache dashboards graph the hit rate).
const STATS: &[(&str, Rule)] = &[
    ("expired_keys", Sum),
    ("evicted_keys", Sum),
    ("keyspace_hits", Sum),
    ("keyspace_misses", Sum),
];

/// The sections merged from the backends, by INFO's section name, with
/// the title Redis gives them.
pub const SECTIONS: [(&str, &str); 3] = [
    ("memory", "Memory"),
    ("persistence", "Persistence"),
    ("replication", "Replication"),
];

fn rules(section: &str) -> &'static [(&'static str, Rule)] {
    match section {
        "memory" => MEMORY,
        "persistence" => PERSISTENCE,
        "replication" => REPLICATION,
        "stats" => STATS,
        _ => &[],
    }
}

/// One backend's INFO text as its `field:value` lines.
pub fn fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim_end().to_string()))
        .collect()
}

/// Appends the merged `section` ("memory", ...) of the backends' fields,
/// titled as Redis titles it; a field no backend reported is left out.
pub fn write(section: &str, title: &str, backends: &[HashMap<String, String>], out: &mut String) {
    let _ = write!(out, "# {title}\r\n");
    write_fields(section, backends, out);
}

/// Appends the merged fields of `section`, untitled.
pub fn write_fields(section: &str, backends: &[HashMap<String, String>], out: &mut String) {
    for &(field, rule) in rules(section) {
        if let Some(value) = merge(field, rule, backends) {
            let _ = write!(out, "{field}:{value}\r\n");
        }
    }
}

fn merge(field: &str, rule: Rule, backends: &[HashMap<String, String>]) -> Option<String> {
    let texts: Vec<&str> = backends
        .iter()
        .filter_map(|b| b.get(field).map(String::as_str))
        .collect();
    let numbers = || -> Vec<u64> { texts.iter().filter_map(|t| t.parse().ok()).collect() };
    if texts.is_empty() && !matches!(rule, Human(_) | Ratio(..) | Fixed(_)) {
        return None;
    }
    let value = match rule {
        Sum => numbers().iter().sum::<u64>().to_string(),
        Max => numbers().into_iter().max()?.to_string(),
        Min => numbers().into_iter().min()?.to_string(),
        AllOk => if texts.iter().all(|t| *t == "ok") {
            "ok"
        } else {
            "err"
        }
        .to_string(),
        Same => {
            let mut distinct: Vec<&str> = texts.clone();
            distinct.sort_unstable();
            distinct.dedup();
            distinct.join(",")
        }
        Limit => {
            let limits = numbers();
            if limits.contains(&0) {
                "0".to_string()
            } else {
                limits.iter().sum::<u64>().to_string()
            }
        }
        Human(of) => human(merge(of, rules_of(of), backends)?.parse().ok()?),
        Ratio(top, bottom) => {
            let top: f64 = merge(top, Sum, backends)?.parse().ok()?;
            let bottom: f64 = merge(bottom, Sum, backends)?.parse().ok()?;
            if bottom == 0.0 {
                return None;
            }
            format!("{:.2}", top / bottom)
        }
        Fixed(value) => value.to_string(),
    };
    Some(value)
}

/// The rule of a field a human-readable size is made from.
fn rules_of(field: &str) -> Rule {
    MEMORY
        .iter()
        .find(|(name, _)| *name == field)
        .map_or(Sum, |(_, rule)| *rule)
}

/// A byte count as Redis writes it for people: `950B`, `1.50K`, `2.00M`.
fn human(bytes: u64) -> String {
    const UNITS: [char; 5] = ['K', 'M', 'G', 'T', 'P'];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut size = bytes as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.2}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(lines: &str) -> HashMap<String, String> {
        fields(&lines.replace(' ', "\r\n"))
    }

    fn merged(section: &str, backends: &[HashMap<String, String>]) -> String {
        let mut out = String::new();
        write(section, "T", backends, &mut out);
        out
    }

    #[test]
    fn sizes_add_up_and_limits_hold_for_the_whole_keyspace() {
        let a = backend("used_memory:1048576 used_memory_rss:2097152 maxmemory:1000 maxmemory_policy:noeviction");
        let b = backend(
            "used_memory:524288 used_memory_rss:1048576 maxmemory:24 maxmemory_policy:noeviction",
        );
        let text = merged("memory", &[a.clone(), b]);
        assert!(
            text.contains("used_memory:1572864\r\nused_memory_human:1.50M\r\n"),
            "{text}"
        );
        assert!(
            text.contains("maxmemory:1024\r\nmaxmemory_human:1.00K\r\n"),
            "{text}"
        );
        assert!(text.contains("maxmemory_policy:noeviction\r\n"), "{text}");
        assert!(text.contains("mem_fragmentation_ratio:2.00\r\n"), "{text}");
        let unlimited = backend("maxmemory:0 maxmemory_policy:allkeys-lru");
        let text = merged("memory", &[a, unlimited]);
        assert!(
            text.contains("maxmemory:0\r\nmaxmemory_human:0B\r\n"),
            "{text}"
        );
        assert!(
            text.contains("maxmemory_policy:allkeys-lru,noeviction\r\n"),
            "{text}"
        );
    }

    #[test]
    fn flags_take_the_worst_shard() {
        let a = backend("loading:0 rdb_last_save_time:200 rdb_last_bgsave_status:ok aof_enabled:1 connected_slaves:2");
        let b = backend("loading:1 rdb_last_save_time:100 rdb_last_bgsave_status:err aof_enabled:0 connected_slaves:1");
        let text = merged("persistence", &[a.clone(), b.clone()]);
        assert_eq!(
            text,
            "# T\r\nloading:1\r\nrdb_last_save_time:100\r\nrdb_last_bgsave_status:err\r\naof_enabled:0\r\n"
        );
        assert_eq!(
            merged("replication", &[a, b]),
            "# T\r\nrole:master\r\nconnected_slaves:1\r\n"
        );
        assert_eq!(merged("replication", &[]), "# T\r\nrole:master\r\n");
    }

    #[test]
    fn human_sizes_read_as_redis_writes_them() {
        assert_eq!(human(950), "950B");
        assert_eq!(human(1536), "1.50K");
        assert_eq!(human(3 << 30), "3.00G");
    }
}
