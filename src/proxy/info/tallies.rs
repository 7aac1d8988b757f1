//! INFO `commandstats` and `errorstats` through the proxy: each backend's
//! lines (`cmdstat_get:calls=3,usec=9,usec_per_call=3.00,...`,
//! `errorstat_ERR:count=2`) added up name by name, so that they count what
//! the whole keyspace's servers ran, as the merged sections do. Errors the
//! proxy answers itself (a refused command, a timeout) are not among them.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// The sections added up: INFO's name, Redis's title, and the prefix of
/// their lines' names.
pub const SECTIONS: [(&str, &str, &str); 2] = [
    ("commandstats", "Commandstats", "cmdstat_"),
    ("errorstats", "Errorstats", "errorstat_"),
];

/// Recomputed from the sums rather than added up.
const PER_CALL: &str = "usec_per_call";

/// Appends section `name`, titled as Redis titles it, from the backends'
/// `field:value` lines; nothing when it is not one of [`SECTIONS`].
pub fn write(name: &str, backends: &[HashMap<String, String>], out: &mut String) -> bool {
    let Some(&(_, title, prefix)) = SECTIONS.iter().find(|(n, ..)| *n == name) else {
        return false;
    };
    // Each line's counts, in the order the first backend wrote them.
    let mut totals: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
    for backend in backends {
        for (line, value) in backend.iter().filter(|(k, _)| k.starts_with(prefix)) {
            let counts = totals.entry(line).or_default();
            for (key, n) in value.split(',').filter_map(|kv| kv.split_once('=')) {
                if key == PER_CALL {
                    if !counts.iter().any(|(k, _)| *k == PER_CALL) {
                        counts.push((PER_CALL, 0));
                    }
                    continue;
                }
                let n = n.parse::<u64>().unwrap_or(0);
                match counts.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, sum)) => *sum += n,
                    None => counts.push((key, n)),
                }
            }
        }
    }
    let _ = write!(out, "# {title}\r\n");
    for (line, counts) in &totals {
        let sum_of = |name: &str| counts.iter().find(|(k, _)| *k == name).map_or(0, |c| c.1);
        let fields: Vec<String> = counts
            .iter()
            .map(|&(key, n)| {
                if key == PER_CALL {
                    let calls = sum_of("calls").max(1);
                    format!("{key}={:.2}", sum_of("usec") as f64 / calls as f64)
                } else {
                    format!("{key}={n}")
                }
            })
            .collect();
        let _ = write!(out, "{line}:{}\r\n", fields.join(","));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(lines: &[&str]) -> HashMap<String, String> {
        super::super::merged::fields(&lines.join("\r\n"))
    }

    #[test]
    fn counts_add_up_by_name_and_the_mean_is_recomputed() {
        let a = backend(&[
            "cmdstat_get:calls=3,usec=9,usec_per_call=3.00,rejected_calls=0,failed_calls=1",
            "errorstat_ERR:count=2",
            "used_memory:5",
        ]);
        let b = backend(&[
            "cmdstat_get:calls=1,usec=1,usec_per_call=1.00,rejected_calls=2,failed_calls=0",
            "cmdstat_set:calls=2,usec=4,usec_per_call=2.00,rejected_calls=0,failed_calls=0",
        ]);
        let mut out = String::new();
        assert!(write("commandstats", &[a.clone(), b], &mut out));
        assert_eq!(
            out,
            "# Commandstats\r\n\
             cmdstat_get:calls=4,usec=10,usec_per_call=2.50,rejected_calls=2,failed_calls=1\r\n\
             cmdstat_set:calls=2,usec=4,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n"
        );
        let mut out = String::new();
        assert!(write("errorstats", &[a], &mut out));
        assert_eq!(out, "# Errorstats\r\nerrorstat_ERR:count=2\r\n");
        assert!(!write("memory", &[], &mut String::new()));
    }
}
