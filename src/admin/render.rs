//! `status` as text: aligned tables of proxies, shards and members, then
//! the problems, worst first.

use super::report::{Level, Report};
use crate::zk::layout::Role;
use crate::zk::migration::Phase;
use std::fmt::Write;

/// Renders `report` for a terminal.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "pool {}, ZooKeeper {}\n\nproxies under {}: {}",
        report.pool,
        report.zookeeper,
        report.proxy_root,
        report.proxies.len()
    );
    let proxies: Vec<Vec<String>> = report
        .proxies
        .iter()
        .map(|p| {
            let data = p.data.as_ref();
            vec![
                p.address.clone(),
                or_dash(data.map(|d| d.pool.clone())),
                or_dash(data.map(|d| d.version.clone())),
                or_dash(data.map(|d| d.pid.to_string())),
                or_dash(p.uptime_secs.map(duration)),
                or_dash(data.map(|d| d.stats.clone())),
                flags(&p.flags),
            ]
        })
        .collect();
    let header = [
        "ADDRESS", "POOL", "VERSION", "PID", "UPTIME", "STATS", "FLAGS",
    ];
    out.push_str(&table(&header, &proxies));

    let slots = report
        .slots
        .map(|s| format!(", slots 0-{}", s - 1))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "\nshards under {}: {}{slots}",
        report.cluster_root,
        report.shards.len()
    );
    let shards: Vec<Vec<String>> = report
        .shards
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                or_dash(s.range.clone()),
                or_dash(s.master.clone()),
                if s.replicas.is_empty() {
                    "-".to_string()
                } else {
                    s.replicas.join(",")
                },
                flags(&s.flags),
            ]
        })
        .collect();
    out.push_str(&table(
        &["SHARD", "RANGE", "MASTER", "REPLICAS", "FLAGS"],
        &shards,
    ));

    let members: Vec<Vec<String>> = report
        .shards
        .iter()
        .flat_map(|s| s.members.iter().map(move |m| (s, m)))
        .map(|(s, m)| {
            let redis = m.redis.as_ref();
            vec![
                s.name.clone(),
                m.addr.clone(),
                format!("{:010}", m.seq),
                role_name(m.line).to_string(),
                or_dash(redis.map(|r| role_name(r.role).to_string())),
                or_dash(redis.map(|r| r.offset.to_string())),
                or_dash(m.lag.map(|l| l.to_string())),
                flags(&m.flags),
            ]
        })
        .collect();
    if !members.is_empty() {
        let header = [
            "SHARD", "REDIS", "SEQ", "LINE", "ROLE", "OFFSET", "LAG", "FLAGS",
        ];
        let _ = writeln!(out, "\nmembers (ROLE, OFFSET from Redis; LAG in bytes)");
        out.push_str(&table(&header, &members));
    }

    if let Some(m) = &report.migration {
        let _ = writeln!(
            out,
            "\nmigration {}: slots {} from {} to {}, phase {}{}",
            m.id,
            m.range,
            m.source,
            m.target,
            m.phase.as_str(),
            if m.paused { " (paused)" } else { "" },
        );
        if let Some(p) = &report.migration_progress {
            let estimate = p
                .keys_estimated
                .map_or(String::new(), |n| format!(" of about {n}"));
            // Committed, the move is over: an ETA would never be reached.
            let eta = match (m.phase, p.eta_seconds) {
                (Phase::Committed, _) => String::new(),
                (_, Some(s)) => format!(", ETA {s} s"),
                (_, None) => ", ETA unknown".to_string(),
            };
            let _ = writeln!(
                out,
                "  {} keys moved by the mover{estimate} ({} keys/s){eta}",
                p.keys_moved, p.keys_per_second
            );
        }
    }
    out.push('\n');
    let count = |level| report.problems.iter().filter(|p| p.level == level).count();
    let _ = match report.health {
        Level::Ok => writeln!(out, "status: ok"),
        _ => writeln!(
            out,
            "status: {} ({}, {})",
            level_name(report.health),
            plural(count(Level::Error), "error"),
            plural(count(Level::Warning), "warning")
        ),
    };
    let mut problems: Vec<_> = report.problems.iter().collect();
    problems.sort_by_key(|p| std::cmp::Reverse(p.level));
    for problem in problems {
        let _ = writeln!(
            out,
            "  {}: {}: {}",
            level_name(problem.level),
            problem.subject,
            problem.text
        );
    }
    out
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Master => "master",
        Role::Replica => "replica",
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Ok => "ok",
        Level::Warning => "warning",
        Level::Error => "error",
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_string())
}

fn flags(flags: &[String]) -> String {
    if flags.is_empty() {
        "-".to_string()
    } else {
        flags.join("; ")
    }
}

/// `3d04h`, `2h05m`, `4m07s`, `12s`.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}  ");
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_short() {
        assert_eq!(duration(12), "12s");
        assert_eq!(duration(247), "4m07s");
        assert_eq!(duration(7500), "2h05m");
        assert_eq!(duration(3 * 86400 + 4 * 3600 + 59), "3d04h");
    }

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec![
                "redis-0000".to_string(),
                "0-2047".to_string(),
                "-".to_string(),
            ],
            vec![
                "r1".to_string(),
                "2048-4095".to_string(),
                "no members".to_string(),
            ],
        ];
        assert_eq!(
            table(&["SHARD", "RANGE", "FLAGS"], &rows),
            "SHARD       RANGE      FLAGS\n\
             redis-0000  0-2047     -\n\
             r1          2048-4095  no members\n"
        );
    }
}
