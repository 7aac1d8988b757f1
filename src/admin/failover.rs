//! `failover <shard>`: a planned switchover (DESIGN.md, watchdog rule 7).
//!
//! The watchdogs do the work: the admin tool asks through
//! [`crate::watchdog::request_switchover`] (the shard's control znode), the
//! master's watchdog pauses writes, waits until the next in line has every
//! write, and leaves the line; this waits for its answer.

use super::target::Target;
use super::AdminError;
use crate::watchdog::{request_switchover_unless, SwitchoverReport};
use crate::zk::layout::child_path;
use std::time::Duration;

/// Asks for a planned switchover of `shard` (a shard znode name such as
/// `redis-0001`), pausing writes at most `max_pause` while the next in
/// line catches up. Returns the text to print.
///
/// # Errors
/// [`AdminError::Failover`] with the watchdog layer's reason: no such
/// shard, no replica in line, another switchover open, aborted (the
/// replica did not catch up in time; writes resumed, nothing changed), or
/// no answer from the master's watchdog.
pub async fn run(target: &Target, shard: &str, max_pause: Duration) -> Result<String, AdminError> {
    if shard.is_empty() || shard.contains('/') {
        return Err(AdminError::Failover(format!(
            "bad shard name {shard:?}: want a shard znode name such as redis-0001"
        )));
    }
    let path = child_path(&target.cluster_root, shard);
    // Stopped (SIGTERM, Ctrl-C) before the master's watchdog took it, the
    // request is called off: nothing changes later behind the operator.
    let stopped = crate::logging::stop_signal();
    let hosts = &target.hosts;
    let report =
        request_switchover_unless(hosts, target.zk_auth.as_ref(), &path, max_pause, stopped)
            .await
            .map_err(|e| AdminError::Failover(e.to_string()))?;
    Ok(describe(shard, &report))
}

fn describe(shard: &str, report: &SwitchoverReport) -> String {
    format!(
        "{shard}: master {} handed over to {} at offset {} (writes paused {} ms)\n",
        report.old_master,
        report.new_master,
        report.offset,
        report.pause.as_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_handover() {
        let report = SwitchoverReport {
            shard: "/redis/cluster/icd/redis-0001".into(),
            old_master: "10.0.0.1:6379".into(),
            new_master: "10.0.0.2:6379".into(),
            pause: Duration::from_millis(12),
            offset: 4242,
        };
        assert_eq!(
            describe("redis-0001", &report),
            "redis-0001: master 10.0.0.1:6379 handed over to 10.0.0.2:6379 at offset 4242 \
             (writes paused 12 ms)\n"
        );
    }
}
