//! Userspace aggregation: the totals of every key the kernel reported, and what changed since the
//! previous step — keys seen for the first time, keys whose count grew, and what the kernel could
//! not deliver. The kernel's counters are absolute, so merging is idempotent: a key announced by
//! the ring buffer and read again from the map counts once.

use std::collections::{BTreeMap, BTreeSet};

use capwatch_common::{CallSet, CallsKey, CapKey, ExecKey, FailKey, Loss, Totals};

use crate::intake::{Announced, Snapshot};

/// What one step changed: each aggregate with its absolute totals and how much it grew.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    Check(Grown<CapKey>),
    Failure(Grown<FailKey>),
    Exec(Grown<ExecKey>),
    /// Syscalls a cgroup's processes of one origin made for the first time.
    Calls(NewCalls),
    /// `total` occurrences of `loss` so far, `added` of them since the previous report.
    Lost {
        loss: Loss,
        total: u64,
        added: u64,
    },
}

/// A syscall set that grew: every syscall it holds (`made`) and those new since the previous step.
#[derive(Debug, Clone, Copy)]
pub struct NewCalls {
    pub key: CallsKey,
    pub made: CallSet,
    pub added: CallSet,
}

/// An aggregate that is new or whose count grew.
#[derive(Debug, Clone, Copy)]
pub struct Grown<K> {
    pub key: K,
    pub totals: Totals,
    /// Occurrences since the previous change of this key (all of them when it is new).
    pub added: u64,
    /// The key was seen for the first time.
    pub first: bool,
}

#[derive(Debug, Default)]
pub struct Aggregates {
    caps: BTreeMap<CapKey, Totals>,
    failures: BTreeMap<FailKey, Totals>,
    execs: BTreeMap<ExecKey, Totals>,
    calls: BTreeMap<CallsKey, CallSet>,
    losses: Vec<u64>,
}

impl Aggregates {
    /// Folds in the kernel's announcements of first occurrences.
    pub fn apply(&mut self, announced: &[Announced]) -> Vec<Change> {
        announced
            .iter()
            .filter_map(|a| match *a {
                Announced::Cap(key, totals) => merge(&mut self.caps, key, totals).map(Change::Check),
                Announced::Failure(key, totals) => merge(&mut self.failures, key, totals).map(Change::Failure),
                Announced::Exec(key, totals) => merge(&mut self.execs, key, totals).map(Change::Exec),
            })
            .collect()
    }

    /// Merges a full read of the kernel's maps, taken at `read_ns` (CLOCK_MONOTONIC): a key
    /// whose count grew was last seen by then. Keys whose announcement was lost are new here.
    pub fn merge(&mut self, snapshot: &Snapshot, read_ns: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        for &(key, totals) in &snapshot.caps {
            let totals = Totals { last_ns: seen_by(&totals, read_ns), ..totals };
            changes.extend(merge(&mut self.caps, key, totals).map(Change::Check));
        }
        for &(key, totals) in &snapshot.failures {
            let totals = Totals { last_ns: seen_by(&totals, read_ns), ..totals };
            changes.extend(merge(&mut self.failures, key, totals).map(Change::Failure));
        }
        for &(key, totals) in &snapshot.execs {
            let totals = Totals { last_ns: seen_by(&totals, read_ns), ..totals };
            changes.extend(merge(&mut self.execs, key, totals).map(Change::Exec));
        }
        for &(key, made) in &snapshot.calls {
            let known = self.calls.entry(key).or_insert(CallSet::EMPTY);
            let added = made.minus(known);
            if !added.is_empty() {
                *known = made;
                changes.push(Change::Calls(NewCalls { key, made, added }));
            }
        }
        self.losses.resize(Loss::SLOTS as usize, 0);
        for (slot, (&total, previous)) in snapshot.losses.iter().zip(self.losses.iter_mut()).enumerate() {
            if total > *previous {
                if let Some(loss) = Loss::from_raw(slot as u32) {
                    changes.push(Change::Lost { loss, total, added: total - *previous });
                }
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

    pub fn execs(&self) -> &BTreeMap<ExecKey, Totals> {
        &self.execs
    }

    /// The syscalls made, by cgroup and origin.
    pub fn calls(&self) -> &BTreeMap<CallsKey, CallSet> {
        &self.calls
    }

    /// Total occurrences lost so far, by `Loss` slot.
    pub fn losses(&self) -> &[u64] {
        &self.losses
    }

    /// Forgets the aggregates of cgroups that are gone, once their last totals were reported.
    pub fn forget(&mut self, cgroups: &std::collections::HashSet<u64>) {
        self.caps.retain(|k, _| !cgroups.contains(&k.cgroup_id));
        self.failures.retain(|k, _| !cgroups.contains(&k.cgroup_id));
        self.execs.retain(|k, _| !cgroups.contains(&k.cgroup_id));
        self.calls.retain(|k, _| !cgroups.contains(&k.cgroup_id));
    }

    /// Every cgroup something was seen in.
    pub fn cgroups(&self) -> BTreeSet<u64> {
        let caps = self.caps.keys().map(|k| k.cgroup_id);
        let failures = self.failures.keys().map(|k| k.cgroup_id);
        let execs = self.execs.keys().map(|k| k.cgroup_id);
        caps.chain(failures).chain(execs).chain(self.calls.keys().map(|k| k.cgroup_id)).collect()
    }
}

/// The latest occurrence a read at `read_ns` proves: the first, unless there were more.
fn seen_by(totals: &Totals, read_ns: u64) -> u64 {
    if totals.count > 1 {
        read_ns.max(totals.last_ns)
    } else {
        totals.last_ns
    }
}

/// Folds `totals` into the entry for `key`: what changed, if anything.
fn merge<K: Ord + Copy>(map: &mut BTreeMap<K, Totals>, key: K, totals: Totals) -> Option<Grown<K>> {
    let Some(known) = map.get_mut(&key) else {
        map.insert(key, totals);
        return Some(Grown { key, totals, added: totals.count, first: true });
    };
    if known.stack_id < 0 {
        known.stack_id = totals.stack_id;
    }
    if totals.count <= known.count {
        return None;
    }
    let added = totals.count - known.count;
    known.count = totals.count;
    known.last_ns = known.last_ns.max(totals.last_ns);
    Some(Grown { key, totals: *known, added, first: false })
}

#[cfg(test)]
mod tests {
    use capwatch_common::{Origin, Sample, Verdict};

    use super::*;

    fn totals(count: u64, first: u64, last: u64) -> Totals {
        Totals {
            count,
            first_ns: first,
            last_ns: last,
            stack_id: -1,
            judged: 0,
            sample: Sample { tid: 1, pid: 1, uid: 0, gid: 0, comm: [0; 16] },
        }
    }

    const KEY: CapKey =
        CapKey { cgroup_id: 42, cap: 7, syscall: 105, verdict: Verdict::Granted, origin: Origin::App, flags: 0 };

    fn firsts(changes: &[Change]) -> usize {
        changes.iter().filter(|c| matches!(c, Change::Check(g) if g.first)).count()
    }

    #[test]
    fn a_key_is_new_once_whether_announced_or_read() {
        let mut agg = Aggregates::default();
        let changes = agg.apply(&[Announced::Cap(KEY, totals(1, 10, 10))]);
        assert!(matches!(changes[..], [Change::Check(Grown { key, added: 1, first: true, .. })] if key == KEY));
        // The kernel leaves last_ns at the first occurrence; the drain that finds more stamps its own time.
        let snapshot = Snapshot { caps: vec![(KEY, totals(1000, 10, 10))], losses: vec![0; 8], ..Default::default() };
        let changes = agg.merge(&snapshot, 500);
        assert_eq!(firsts(&changes), 0);
        assert!(matches!(changes[..], [Change::Check(Grown { added: 999, first: false, .. })]), "{changes:?}");
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
        let snapshot = Snapshot {
            caps: vec![(KEY, totals(3, 10, 20))],
            losses: vec![1, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        };
        let changes = agg.merge(&snapshot, 30);
        assert!(changes
            .iter()
            .any(|c| matches!(c, Change::Check(g) if g.key == KEY && g.totals.count == 3 && g.first)));
        assert!(changes.iter().any(|c| matches!(c, Change::Lost { loss: Loss::RingbufFull, total: 1, added: 1 })));
        // The same losses read again are not reported twice.
        assert!(agg.merge(&snapshot, 40).is_empty());
    }

    #[test]
    fn counts_never_go_backwards() {
        let mut agg = Aggregates::default();
        agg.apply(&[Announced::Cap(KEY, totals(5, 10, 50))]);
        // A stale announcement read after a drain must not lower the total.
        assert!(agg.apply(&[Announced::Cap(KEY, totals(1, 10, 10))]).is_empty());
        assert_eq!(agg.caps()[&KEY].count, 5);
        assert_eq!(agg.caps()[&KEY].last_ns, 50);
    }
}
