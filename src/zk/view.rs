//! What the znodes under a cluster root mean for routing: one
//! [`ShardView`] per shard, its range and its master, and the
//! [`ClusterView`] of them all. Building one validates everything the proxy
//! relies on, so an invalid state in ZooKeeper never reaches the routing
//! table. The znodes' names and data are [`super::layout`]'s.

use super::layout::{node_name, parse_member_name, parse_shard_data, LayoutError, ShardData};
use std::collections::HashMap;

/// One live Redis of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The Redis address, `ip:port`.
    pub addr: String,
    /// The sequence ZooKeeper gave the member znode: its place in line.
    pub seq: u64,
    /// The member znode's name (not the full path).
    pub znode: String,
}

/// One shard: its range and who serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    /// The shard znode's name, e.g. `redis-0000`.
    pub name: String,
    /// First slot of the range.
    pub lo: u32,
    /// Last slot of the range (inclusive).
    pub hi: u32,
    /// The shard owns no range (yet): `lo` and `hi` mean nothing. It is
    /// left out of routing except as a migration's target.
    pub empty: bool,
    /// `ip:port` of the lowest-sequence member, or the last known master
    /// when the shard has no members: the last one seen, else the one
    /// recorded in its data (`None` if it never had one).
    pub master: Option<String>,
    /// Live members, sorted by sequence: the master first, then the line.
    pub members: Vec<Member>,
    /// The shard has no members now; `master` is the last known one.
    pub no_members: bool,
    /// Children that are not members (not `ip:port-SEQUENCE`): left out of
    /// the line, as the watchdogs leave them out.
    pub strays: Vec<String>,
    /// The shard's own znodes are invalid now (why); the view keeps the
    /// shard as it last was valid, so its routing does not change.
    pub invalid: Option<String>,
    /// The master recorded in the shard's data (see [`ShardData::master`]).
    /// With no members, the shard has no eligible master: only a Redis
    /// holding that master's history may lead it.
    pub recorded_master: Option<String>,
    /// The `run_id` its watchdog registered for `master` (its member's
    /// data), when known: a Redis at that address answering with another
    /// one restarted since, with whatever data it kept, and must not be
    /// served as the master. Filled in by the proxy's watch, which reads
    /// member data; from [`ShardView::from_znodes`], the recorded
    /// master's when it is the one served.
    pub master_run_id: Option<String>,
    /// Stands for slots no readable shard owns while a shard's data is
    /// unreadable (see [`ShardView::unowned`]): that shard's place when
    /// it is the only one, else not a znode.
    pub unowned: bool,
}

impl ShardView {
    /// Builds a shard from its znodes: `path` is the shard's full path,
    /// `data` its data, `children` its member names. `last_master` is the
    /// master from the last good view, kept when there are no members.
    ///
    /// # Errors
    /// [`LayoutError::BadShardData`], naming the znode.
    pub fn from_znodes(
        path: &str,
        data: &[u8],
        children: &[String],
        last_master: Option<&str>,
    ) -> Result<ShardView, LayoutError> {
        let parsed = ShardData::parse(data);
        // A shard added for growth owns no range yet (`"weight":""`).
        let empty = parsed.as_ref().is_some_and(|d| d.weight.is_empty());
        let range = if empty {
            None
        } else {
            Some(parse_shard_data(path, data)?)
        };
        Ok(ShardView::assemble(
            path,
            range,
            parsed,
            children,
            last_master,
        ))
    }

    /// A shard never seen valid whose data is invalid, or whose range
    /// does not fit beside the others (`why`): it owns no range, as a shard
    /// added for growth, and is flagged; the others are routed as before.
    /// Its children are not read: a member of another shard's line among
    /// them would make the whole view invalid again (review).
    pub fn left_out(path: &str, why: String) -> ShardView {
        ShardView {
            invalid: Some(why),
            ..ShardView::assemble(path, None, None, &[], None)
        }
    }

    /// Slots `lo..=hi` that no shard this process can read owns, while
    /// a shard it never read valid is left out (`why`): most likely that
    /// shard's, but nobody can say. Named after its range; it has no
    /// master, and the proxy routes it by its pool file only when the file
    /// agrees with every range ZooKeeper gives, else answers its keys with
    /// an error.
    pub fn unowned(lo: u32, hi: u32, why: String) -> ShardView {
        ShardView {
            name: format!("(slots {lo}-{hi})"),
            lo,
            hi,
            empty: false,
            invalid: Some(why),
            unowned: true,
            ..ShardView::assemble("", None, None, &[], None)
        }
    }

    /// True for a stand-in named after its range, not in a shard's place
    /// (more than one shard's data unreadable, or more than one gap).
    pub fn is_unnamed_stand_in(&self) -> bool {
        self.unowned && self.name.starts_with("(slots ")
    }

    /// True for a shard [`ShardView::left_out`] made: empty, flagged, and
    /// with no master. A growth shard (empty) whose data went bad keeps
    /// its last view, master and members included, and is not one: it may
    /// be a migration's target.
    pub fn is_left_out(&self) -> bool {
        self.empty && self.invalid.is_some() && self.master.is_none()
    }

    /// The view of a shard owning `range` (none: empty), from its parsed
    /// data and its children.
    fn assemble(
        path: &str,
        range: Option<(u32, u32)>,
        parsed: Option<ShardData>,
        children: &[String],
        last_master: Option<&str>,
    ) -> ShardView {
        let (lo, hi) = range.unwrap_or((0, 0));
        let empty = range.is_none();
        let members = members_in_line(children);
        let strays = children
            .iter()
            .filter(|name| parse_member_name(name).is_none())
            .cloned()
            .collect();
        let no_members = members.is_empty();
        let record = parsed.and_then(|d| d.master);
        let recorded_master = record.as_ref().map(|m| m.addr.clone());
        // With no members, the master its watchdog recorded, else the last
        // one seen. The record names a Redis its watchdog saw as master;
        // the last head seen may be a replica that never was (review: the
        // replica next in line, judged behind by its watchdog, stepped
        // aside and was served as the master, reads stale, writes
        // READONLY). A proxy started meanwhile must not fall back to its
        // pool file's server, which may be an old master that came back
        // and would take writes beside the real one.
        let master = match members.first() {
            Some(first) => Some(first.addr.clone()),
            None => recorded_master
                .clone()
                .or_else(|| last_master.map(str::to_string)),
        };
        // The recorded master's run, when that is who is served: the
        // proxy's watch puts the head member's in its place.
        let master_run_id = record
            .filter(|record| members.is_empty() && master.as_ref() == Some(&record.addr))
            .map(|record| record.run_id)
            .filter(|run_id| !run_id.is_empty());
        ShardView {
            name: node_name(path).to_string(),
            lo,
            hi,
            empty,
            master,
            master_run_id,
            members,
            no_members,
            strays,
            invalid: None,
            recorded_master,
            unowned: false,
        }
    }
}

/// How shard `name`, its data and its member znodes as read (each one's
/// name and the `run_id` its data registers, `None` when unread or not
/// said) claim the Redis at `addr` (whose `run_id` is given when known),
/// if they do: one in its line, or its recorded master, by address or by
/// run under another name (`localhost:P` for `127.0.0.1:P`). A Redis
/// claimed by one shard must not be made a replica, or promoted, in
/// another: its data would be replaced by the other shard's (the admin
/// tool's `promote` and the watchdog's start both check).
pub fn claim_on(
    addr: &str,
    run_id: Option<&str>,
    name: &str,
    data: &[u8],
    members: &[(String, Option<String>)],
) -> Option<String> {
    let same_run = |other: &str| run_id.is_some_and(|id| !id.is_empty() && other == id);
    let names: Vec<String> = members.iter().map(|(znode, _)| znode.clone()).collect();
    let line = members_in_line(&names);
    if line.iter().any(|m| m.addr == addr) {
        return Some(format!("is in shard {name}'s line"));
    }
    let run_of = |znode: &str| {
        members
            .iter()
            .find(|(name, _)| name == znode)
            .and_then(|(_, run)| run.as_deref())
    };
    if let Some((member, run)) = line.iter().find_map(|m| {
        run_of(&m.znode)
            .filter(|run| same_run(run))
            .map(|run| (m, run))
    }) {
        return Some(format!(
            "is in shard {name}'s line as {} (the same Redis: run {run})",
            member.addr
        ));
    }
    let recorded = ShardData::parse(data).and_then(|data| data.master)?;
    (recorded.addr == addr || same_run(&recorded.run_id)).then(|| {
        format!(
            "is shard {name}'s recorded master ({}, run {})",
            recorded.addr, recorded.run_id
        )
    })
}

/// Parses member names and sorts them by sequence; other names are left
/// out. The watchdogs and the proxies read the line the same way.
pub fn members_in_line(names: &[String]) -> Vec<Member> {
    let mut members: Vec<Member> = names
        .iter()
        .filter_map(|name| {
            let (addr, seq) = parse_member_name(name)?;
            Some(Member {
                addr,
                seq,
                znode: name.clone(),
            })
        })
        .collect();
    // Names break a tie (only a child made by hand can share a
    // sequence), so every reader sees one line whatever order ZooKeeper
    // lists the children in.
    members.sort_by(|a, b| (a.seq, &a.znode).cmp(&(b.seq, &b.znode)));
    members
}

/// All shards of a cluster, their ranges tiling `[0, slots)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// Sorted by name.
    pub shards: Vec<ShardView>,
    /// The slot space `S`: the highest `hi` plus one.
    pub slots: u32,
    /// A range migration in progress (`crate::zk::migration`).
    pub migration: Option<crate::zk::migration::MigrationState>,
}

impl ClusterView {
    /// Checks that the shards' ranges tile `[0, S)` with no gap and no
    /// overlap, `S` being the highest `hi` plus one.
    ///
    /// # Errors
    /// [`LayoutError::NoShards`], [`LayoutError::Gap`] or
    /// [`LayoutError::Overlap`], naming the shards on either side.
    pub fn new(mut shards: Vec<ShardView>) -> Result<ClusterView, LayoutError> {
        let mut by_range: Vec<&ShardView> = shards.iter().filter(|s| !s.empty).collect();
        by_range.sort_by_key(|s| (s.lo, s.hi));
        let mut next = 0u32;
        let mut prev: Option<&ShardView> = None;
        for shard in by_range {
            if shard.lo > next {
                return Err(LayoutError::Gap {
                    lo: next,
                    hi: shard.lo - 1,
                    after: prev.map(|p| p.name.clone()),
                    before: shard.name.clone(),
                });
            }
            if let Some(p) = prev.filter(|_| shard.lo < next) {
                return Err(LayoutError::Overlap {
                    lo: shard.lo,
                    hi: shard.hi.min(p.hi),
                    first: p.name.clone(),
                    second: shard.name.clone(),
                });
            }
            // hi < u32::MAX is checked by parse_range.
            next = shard.hi + 1;
            prev = Some(shard);
        }
        if prev.is_none() {
            return Err(LayoutError::NoShards);
        }
        shards.sort_by(|a, b| a.name.cmp(&b.name));
        // A shard's master may be in no other shard's line: that shard
        // would be routed to (or replicate from) another shard's data. A
        // replica in two lines is a Redis moving between shards while its
        // old member has not expired yet: harmless.
        let mut homes: HashMap<&str, Vec<&str>> = HashMap::new();
        for shard in &shards {
            for member in &shard.members {
                homes.entry(&member.addr).or_default().push(&shard.name);
            }
        }
        for shard in &shards {
            let Some(master) = shard.members.first() else {
                continue;
            };
            if let Some(other) = homes[master.addr.as_str()]
                .iter()
                .find(|name| **name != shard.name)
            {
                let mut pair = [shard.name.clone(), other.to_string()];
                pair.sort();
                let [first, second] = pair;
                return Err(LayoutError::SharedMember {
                    addr: master.addr.clone(),
                    first,
                    second,
                });
            }
        }
        Ok(ClusterView {
            shards,
            slots: next,
            migration: None,
        })
    }

    /// The view of `shards` with every slot of `[0, slots)` that none of
    /// them owns given to an [`ShardView::unowned`] stand-in (`why`);
    /// `None` when that cannot make a view of `slots` slots (ranges that
    /// overlap, or reach past `slots`).
    /// With one gap and one shard left out (its data unreadable), the
    /// stand-in takes that shard's place, name and line: it most likely
    /// owns the gap, and a name sorting as the other proxies' tables do
    /// keeps keyless scripts on the same shard (review: `(slots ...)`
    /// sorted first and took them).
    pub fn with_unowned(mut shards: Vec<ShardView>, slots: u32, why: &str) -> Option<ClusterView> {
        let mut owned: Vec<(u32, u32)> = shards
            .iter()
            .filter(|s| !s.empty)
            .map(|s| (s.lo, s.hi))
            .collect();
        owned.sort_unstable();
        let mut next = 0u32;
        let mut gaps = Vec::new();
        for (lo, hi) in owned {
            if lo > next {
                gaps.push((next, lo - 1));
            }
            next = next.max(hi.saturating_add(1));
        }
        if next < slots {
            gaps.push((next, slots - 1));
        }
        let left_out: Vec<usize> = (0..shards.len())
            .filter(|&i| shards[i].is_left_out())
            .collect();
        if let ([(lo, hi)], [i]) = (gaps.as_slice(), left_out.as_slice()) {
            let name = std::mem::take(&mut shards[*i].name);
            let members = std::mem::take(&mut shards[*i].members);
            shards[*i] = ShardView {
                name,
                members,
                ..ShardView::unowned(*lo, *hi, why.to_string())
            };
        } else {
            shards.extend(
                gaps.into_iter()
                    .map(|(lo, hi)| ShardView::unowned(lo, hi, why.to_string())),
            );
        }
        ClusterView::new(shards)
            .ok()
            .filter(|view| view.slots == slots)
    }

    /// The shard named `name`.
    pub fn shard(&self, name: &str) -> Option<&ShardView> {
        self.shards.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn shard(name: &str, lo: u32, hi: u32) -> ShardView {
        let data = ShardData::new(lo, hi).to_json();
        ShardView::from_znodes(&format!("/c/{name}"), &data, &[], Some("10.0.0.1:6379")).unwrap()
    }

    #[test]
    fn shard_master_is_lowest_sequence() {
        let children = names(&["10.0.0.2:6379-0000000007", "10.0.0.1:6379-0000000003"]);
        let data = br#"{"weight":"0-99"}"#;
        let view = ShardView::from_znodes("/c/redis-0000", data, &children, None).unwrap();
        assert_eq!(view.name, "redis-0000");
        assert_eq!((view.lo, view.hi), (0, 99));
        assert_eq!(view.master.as_deref(), Some("10.0.0.1:6379"));
        let seqs: Vec<u64> = view.members.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [3, 7]);
        assert_eq!(view.members[0].znode, "10.0.0.1:6379-0000000003");
        assert!(!view.no_members);
    }

    #[test]
    fn shard_without_members_keeps_its_recorded_else_last_master_and_is_flagged() {
        let data = br#"{"weight":"0-99"}"#;
        let view = ShardView::from_znodes("/c/s", data, &[], Some("10.0.0.1:6379")).unwrap();
        assert_eq!(view.master.as_deref(), Some("10.0.0.1:6379"));
        assert!(view.no_members);
        let never = ShardView::from_znodes("/c/s", data, &[], None).unwrap();
        assert_eq!(never.master, None);
        // Not seen by this process (started meanwhile): the recorded one.
        let recorded =
            br#"{"weight":"0-99","master":{"addr":"10.0.0.2:6379","replid":"r","offset":5}}"#;
        let view = ShardView::from_znodes("/c/s", recorded, &[], None).unwrap();
        assert_eq!(view.master.as_deref(), Some("10.0.0.2:6379"));
        // Seen: the record still wins, as the last head seen may never
        // have been promoted.
        let view = ShardView::from_znodes("/c/s", recorded, &[], Some("10.0.0.1:6379")).unwrap();
        assert_eq!(view.master.as_deref(), Some("10.0.0.2:6379"));
    }

    #[test]
    fn unowned_stand_ins_fill_the_gaps_up_to_the_slot_space() {
        let junk = ShardView::left_out("/c/b", "bad data".into());
        let shards = vec![shard("a", 0, 99), junk.clone(), shard("c", 200, 299)];
        let view = ClusterView::with_unowned(shards.clone(), 400, "why").unwrap();
        let unowned: Vec<(String, u32, u32)> = view
            .shards
            .iter()
            .filter(|s| s.unowned)
            .map(|s| (s.name.clone(), s.lo, s.hi))
            .collect();
        assert_eq!(
            unowned,
            [
                ("(slots 100-199)".to_string(), 100, 199),
                ("(slots 300-399)".to_string(), 300, 399)
            ]
        );
        assert!(view.shards.iter().all(|s| !s.unowned || s.master.is_none()));
        assert_eq!(view.slots, 400);
        // Never a narrower or wider slot space, never over an overlap.
        assert!(ClusterView::with_unowned(shards.clone(), 250, "why").is_none());
        let overlap = vec![shard("a", 0, 99), shard("c", 50, 299), junk.clone()];
        assert!(ClusterView::with_unowned(overlap, 400, "why").is_none());
        // One gap, one shard unreadable: the stand-in takes its name.
        let one = vec![shard("a", 0, 99), junk, shard("c", 200, 399)];
        let view = ClusterView::with_unowned(one, 400, "why").unwrap();
        let b = view.shard("b").unwrap();
        assert!(b.unowned && !b.is_unnamed_stand_in() && (b.lo, b.hi) == (100, 199));
        assert_eq!(view.shards.len(), 3);
    }

    #[test]
    fn a_kept_growth_shard_is_not_left_out() {
        let left = ShardView::left_out("/c/redis-0002", "bad data".into());
        assert!(left.is_left_out() && left.members.is_empty());
        let children = names(&["10.0.0.3:6379-0000000001"]);
        let mut kept =
            ShardView::from_znodes("/c/redis-0002", br#"{"weight":""}"#, &children, None).unwrap();
        kept.invalid = Some("bad data".into());
        assert!(kept.empty && !kept.is_left_out());
    }

    #[test]
    fn shard_leaves_stray_children_out_of_the_line() {
        let children = names(&[
            "lock",
            "10.0.0.2:6379-0000000002",
            "10.0.0.1:6379-0000000001",
        ]);
        let view = ShardView::from_znodes("/c/s", br#"{"weight":"0-9"}"#, &children, None).unwrap();
        assert_eq!(view.master.as_deref(), Some("10.0.0.1:6379"));
        assert_eq!(view.members.len(), 2);
        assert_eq!(view.strays, ["lock"]);
    }

    #[test]
    fn view_tiles_and_sorts_by_name() {
        let view = ClusterView::new(vec![shard("b", 0, 9), shard("a", 10, 19)]).unwrap();
        assert_eq!(view.slots, 20);
        let order: Vec<&str> = view.shards.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["a", "b"]);
        assert_eq!(view.shard("b").unwrap().hi, 9);
    }

    #[test]
    fn view_rejects_no_shards() {
        assert_eq!(ClusterView::new(vec![]), Err(LayoutError::NoShards));
    }

    #[test]
    fn view_rejects_gap_at_start() {
        let err = ClusterView::new(vec![shard("a", 5, 9)]).unwrap_err();
        assert_eq!(
            err,
            LayoutError::Gap {
                lo: 0,
                hi: 4,
                after: None,
                before: "a".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "slots 0-4 belong to no shard (gap before shard a)"
        );
    }

    #[test]
    fn view_rejects_a_redis_in_two_shards_lines() {
        let with = |name: &str, lo: u32, hi: u32, members: &[&str]| {
            let data = ShardData::new(lo, hi).to_json();
            ShardView::from_znodes(&format!("/c/{name}"), &data, &names(members), None).unwrap()
        };
        let a = with(
            "a",
            0,
            9,
            &["10.0.0.1:6379-0000000001", "10.0.0.2:6379-0000000002"],
        );
        let b = with(
            "b",
            10,
            19,
            &["10.0.0.2:6379-0000000000", "10.0.0.3:6379-0000000001"],
        );
        let err = ClusterView::new(vec![a.clone(), b]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "redis 10.0.0.2:6379 is a member of shards a and b"
        );
        // Twice in one shard's line is a takeover in progress, and a replica
        // in two lines a Redis moving between shards: not errors.
        let b = with(
            "b",
            10,
            19,
            &["10.0.0.3:6379-0000000001", "10.0.0.3:6379-0000000004"],
        );
        assert!(ClusterView::new(vec![a.clone(), b]).is_ok());
        let b = with(
            "b",
            10,
            19,
            &["10.0.0.3:6379-0000000001", "10.0.0.2:6379-0000000004"],
        );
        assert!(ClusterView::new(vec![a, b]).is_ok());
    }

    #[test]
    fn view_rejects_gap_between_shards() {
        let err = ClusterView::new(vec![shard("a", 0, 9), shard("b", 20, 29)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "slots 10-19 belong to no shard (gap between shards a and b)"
        );
    }

    #[test]
    fn view_rejects_overlap() {
        let err = ClusterView::new(vec![shard("a", 0, 9), shard("b", 5, 19)]).unwrap_err();
        assert_eq!(
            err,
            LayoutError::Overlap {
                lo: 5,
                hi: 9,
                first: "a".into(),
                second: "b".into()
            }
        );
        assert_eq!(err.to_string(), "shards a and b overlap on slots 5-9");
    }

    #[test]
    fn view_rejects_same_range_twice() {
        let err = ClusterView::new(vec![shard("a", 0, 9), shard("b", 0, 9)]).unwrap_err();
        assert!(
            matches!(err, LayoutError::Overlap { lo: 0, hi: 9, .. }),
            "{err}"
        );
    }
}
