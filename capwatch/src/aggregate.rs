//! Userspace aggregation: the totals of every key the kernel reported, which keys are new, and
//! what the kernel could not deliver. The kernel's counters are absolute, so merging is
//! idempotent: a key announced by the ring buffer and read again from the map counts once.

use std::collections::{BTreeMap, BTreeSet};

use capwatch_common::{loss, CapKey, FailKey, Totals};

use crate::intake::{Announcement, Snapshot};

/// Something seen for the first time, or a change in what was lost.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    NewCap(CapKey, Totals),
    NewFailure(FailKey, Totals),
    /// `total` occurrences of `kind` (a `capwatch_common::loss` index) so far, `added` of them
    /// since the previous report.
    Lost { kind: u32, total: u64, added: u64 },
}

#[derive(Debug, Default)]
pub struct Aggregates {
    caps: BTreeMap<CapKey, Totals>,
    failures: BTreeMap<FailKey, Totals>,
    losses: Vec<u64>,
}

impl Aggregates {
    pub fn apply(&mut self, announced: &[Announcement]) -> Vec<Change> {
        announced
            .iter()
            .filter_map(|a| match *a {
                Announcement::Cap(key, totals) => merge(&mut self.caps, key, totals).then_some(Change::NewCap(key, totals)),
                Announcement::Failure(key, totals) => {
                    merge(&mut self.failures, key, totals).then_some(Change::NewFailure(key, totals))
                }
            })
            .collect()
    }

    /// Merges a full read of the kernel's maps, taken at `read_ns` (CLOCK_MONOTONIC): a key
    /// whose count grew was last seen by then. Keys whose announcement was lost are new here.
    pub fn merge(&mut self, snapshot: &Snapshot, read_ns: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        for &(key, totals) in &snapshot.caps {
            if merge(&mut self.caps, key, Totals { last_ns: seen_by(&totals, read_ns), ..totals }) {
                changes.push(Change::NewCap(key, totals));
            }
        }
        for &(key, totals) in &snapshot.failures {
            if merge(&mut self.failures, key, Totals { last_ns: seen_by(&totals, read_ns), ..totals }) {
                changes.push(Change::NewFailure(key, totals));
            }
        }
        self.losses.resize(loss::LEN as usize, 0);
        for (kind, (&total, previous)) in snapshot.losses.iter().zip(self.losses.iter_mut()).enumerate() {
            if total > *previous {
                changes.push(Change::Lost { kind: kind as u32, total, added: total - *previous });
                *previous = total;
            }
        }
        changes
    }

    pub fn caps(&self) -> &BTreeMap<CapKey, Totals> {
        &self.caps
    }

    pub fn failures(&self) -> &BTreeMap<FailKey, Totals> {
        &self.failures
    }

    /// Total occurrences lost so far, by `capwatch_common::loss` index.
    pub fn losses(&self) -> &[u64] {
        &self.losses
    }

    /// Every cgroup something was seen in.
    pub fn cgroups(&self) -> BTreeSet<u64> {
        self.caps.keys().map(|k| k.cgroup_id).chain(self.failures.keys().map(|k| k.cgroup_id)).collect()
    }
}

/// The latest occurrence a read at `read_ns` proves: the first, unless there were more.
fn seen_by(totals: &Totals, read_ns: u64) -> u64 {
    if totals.count > 1 { read_ns.max(totals.last_ns) } else { totals.last_ns }
}

/// Folds `totals` into the entry for `key`; true when the key is new.
fn merge<K: Ord>(map: &mut BTreeMap<K, Totals>, key: K, totals: Totals) -> bool {
    match map.get_mut(&key) {
        Some(known) => {
            if totals.count > known.count {
                known.count = totals.count;
                known.last_ns = known.last_ns.max(totals.last_ns);
            }
            if known.stack_id < 0 {
                known.stack_id = totals.stack_id;
            }
            false
        }
        None => {
            map.insert(key, totals);
            true
        }
    }
}

/// What a `capwatch_common::loss` index counts, for people and logs.
pub fn loss_name(kind: u32) -> &'static str {
    match kind {
        loss::RINGBUF_FULL => "ringbuf_full",
        loss::CAP_MAP_FULL => "cap_map_full",
        loss::FAIL_MAP_FULL => "failure_map_full",
        loss::KRETPROBE_UNMATCHED => "kretprobe_unmatched",
        loss::KPROBE_STASH_OVERWRITTEN => "kprobe_stash_overwritten",
        loss::KPROBE_STASH_FULL => "kprobe_stash_full",
        loss::DENIED_STASH_FULL => "denied_stash_full",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capwatch_common::{Sample, VERDICT_GRANTED};

    fn totals(count: u64, first: u64, last: u64) -> Totals {
        Totals {
            count,
            first_ns: first,
            last_ns: last,
            stack_id: -1,
            _pad: 0,
            sample: Sample { tid: 1, pid: 1, uid: 0, gid: 0, comm: [0; 16] },
        }
    }

    const KEY: CapKey = CapKey { cgroup_id: 42, cap: 7, syscall: 105, verdict: VERDICT_GRANTED, origin: 0, flags: 0 };

    #[test]
    fn a_key_is_new_once_whether_announced_or_read() {
        let mut agg = Aggregates::default();
        let changes = agg.apply(&[Announcement::Cap(KEY, totals(1, 10, 10))]);
        assert!(matches!(changes[..], [Change::NewCap(k, _)] if k == KEY));
        // The kernel leaves last_ns at the first occurrence; the drain that finds more stamps its own time.
        let snapshot = Snapshot { caps: vec![(KEY, totals(1000, 10, 10))], losses: vec![0; 8], ..Default::default() };
        assert!(agg.merge(&snapshot, 500).is_empty());
        assert_eq!(agg.caps()[&KEY].count, 1000);
        assert_eq!(agg.caps()[&KEY].last_ns, 500);
        assert_eq!(agg.caps()[&KEY].first_ns, 10);
        // A later drain without new occurrences changes nothing.
        assert!(agg.merge(&snapshot, 900).is_empty());
        assert_eq!(agg.caps()[&KEY].last_ns, 500);
    }

    #[test]
    fn a_lost_announcement_is_found_by_the_drain() {
        let mut agg = Aggregates::default();
        let snapshot = Snapshot { caps: vec![(KEY, totals(3, 10, 20))], losses: vec![1, 0, 0, 0, 0, 0, 0, 0], ..Default::default() };
        let changes = agg.merge(&snapshot, 30);
        assert!(changes.iter().any(|c| matches!(c, Change::NewCap(k, t) if *k == KEY && t.count == 3)));
        assert!(changes.iter().any(|c| matches!(c, Change::Lost { kind: 0, total: 1, added: 1 })));
        // The same losses read again are not reported twice.
        assert!(agg.merge(&snapshot, 40).is_empty());
    }

    #[test]
    fn counts_never_go_backwards() {
        let mut agg = Aggregates::default();
        agg.apply(&[Announcement::Cap(KEY, totals(5, 10, 50))]);
        // A stale announcement read after a drain must not lower the total.
        agg.apply(&[Announcement::Cap(KEY, totals(1, 10, 10))]);
        assert_eq!(agg.caps()[&KEY].count, 5);
        assert_eq!(agg.caps()[&KEY].last_ns, 50);
    }
}
