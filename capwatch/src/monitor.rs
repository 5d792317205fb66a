//! The kernel side of one running observation: the probe attached, its intake read, its
//! aggregates kept. The daemon and `capwatch trace` both drive one and hand each step to the
//! attribution stage.

use std::{collections::HashSet, time::Duration};

use capwatch_common::CapKey;
use tokio::time::{interval, Interval, MissedTickBehavior};

use crate::{
    aggregate::{Aggregates, Change},
    cgroup::Hierarchy,
    error::Error,
    intake::{Announced, Intake, Snapshot},
    probe::{self, Probe},
};

/// How often the in-kernel aggregates are read in full.
pub const DRAIN_INTERVAL: Duration = Duration::from_secs(1);

/// What `Monitor::next` brought.
#[derive(Debug)]
pub enum Step {
    /// First occurrences the kernel announced.
    Announced(Vec<Change>),
    /// A full read of the kernel's aggregates: the moment to persist them.
    Drained(Vec<Change>),
}

impl Step {
    pub fn changes(&self) -> &[Change] {
        match self {
            Step::Announced(changes) | Step::Drained(changes) => changes,
        }
    }
}

pub struct Monitor {
    probe: Probe,
    intake: Intake,
    aggregates: Aggregates,
    hierarchy: Hierarchy,
    drain: Interval,
    gone: HashSet<u64>,
    /// Cgroups forgotten whole (the self-test's): whatever the kernel still announces of them is
    /// dropped before it reaches the aggregates.
    forgotten: HashSet<u64>,
}

impl Monitor {
    /// Attaches the probe. Needs a tokio runtime.
    pub fn start(options: probe::Options, hierarchy: Hierarchy) -> Result<Self, Error> {
        let mut probe = Probe::start(options)?;
        let mut intake = Intake::new(probe.take_maps()?)?;
        intake.mark_started(&hierarchy.populated_below(options.scope.root_id))?;
        let mut drain = interval(DRAIN_INTERVAL);
        drain.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Self {
            probe,
            intake,
            aggregates: Aggregates::default(),
            hierarchy,
            drain,
            gone: HashSet::new(),
            forgotten: HashSet::new(),
        })
    }

    /// Waits for the next announcements or the next drain, whichever comes first.
    pub async fn next(&mut self) -> Result<Step, Error> {
        tokio::select! {
            announced = self.intake.announced() => {
                let announced = self.admitted(announced?);
                self.intake.give_slots(announced.iter().filter_map(Announced::cap_key))?;
                Ok(Step::Announced(self.aggregates.apply(&announced)))
            }
            _ = self.drain.tick() => self.drain().map(Step::Drained),
        }
    }

    /// Reads everything the kernel holds now: pending announcements, then the full aggregates.
    /// Cgroups that are gone are forgotten, by the kernel and here, once read: their last changes
    /// are in what this returns, and `gone` names them until the next drain.
    pub fn drain(&mut self) -> Result<Vec<Change>, Error> {
        let pending = self.intake.pending();
        let pending = self.admitted(pending);
        let mut changes = self.aggregates.apply(&pending);
        // Gone before the read: everything their processes did is in it.
        let gone: HashSet<u64> =
            self.aggregates.cgroups().into_iter().filter(|&id| !self.hierarchy.exists(id)).collect();
        let mut snapshot = self.intake.snapshot()?;
        if !self.forgotten.is_empty() {
            snapshot.caps.retain(|(k, _)| !self.forgotten.contains(&k.cgroup_id));
            snapshot.failures.retain(|(k, _)| !self.forgotten.contains(&k.cgroup_id));
            snapshot.execs.retain(|(k, _)| !self.forgotten.contains(&k.cgroup_id));
            snapshot.calls.retain(|(k, _)| !self.forgotten.contains(&k.cgroup_id));
        }
        // Every key read, the pending announcements' and those whose announcement was lost;
        // those of cgroups forgotten whole get none.
        self.intake.give_slots(snapshot.caps.iter().map(|&(key, _)| key))?;
        changes.extend(self.aggregates.merge(&snapshot, crate::clock::monotonic_now_ns()));
        if !gone.is_empty() {
            self.intake.forget(&gone)?;
            self.aggregates.forget(&gone);
        }
        self.gone = gone;
        Ok(changes)
    }

    /// The cgroups the latest drain found gone (and forgot).
    pub fn gone(&self) -> &HashSet<u64> {
        &self.gone
    }

    /// What the kernel holds now for one cgroup, read without passing it on: the self-test's
    /// evidence.
    pub fn kernel_totals(&self, cgroup_id: u64) -> Result<Snapshot, Error> {
        let mut snapshot = self.intake.snapshot()?;
        snapshot.caps.retain(|(k, _)| k.cgroup_id == cgroup_id);
        snapshot.failures.retain(|(k, _)| k.cgroup_id == cgroup_id);
        snapshot.execs.retain(|(k, _)| k.cgroup_id == cgroup_id);
        Ok(snapshot)
    }

    /// The checks of `key` its counting slot took (the rest are in `CW_CAPS`): 0 until the key
    /// has a slot.
    pub fn counted_in_slot(&self, key: &CapKey) -> Result<u64, Error> {
        self.intake.counted_in_slot(key)
    }

    /// Forgets a cgroup whole: the kernel's entries, and whatever it still announces of it. Its
    /// checks and failures reach no reader.
    pub fn forget_cgroup(&mut self, cgroup_id: u64) -> Result<(), Error> {
        self.forgotten.insert(cgroup_id);
        self.intake.forget(&HashSet::from([cgroup_id]))
    }

    /// Announcements of cgroups neither forgotten whole nor found gone by the previous drain.
    /// A gone cgroup's last announcements can reach the ring buffer after that drain read it,
    /// and before its full read of the maps, which counted them and was forgotten with the
    /// cgroup: taken now, they would count again, for a cgroup no later drain finds gone.
    fn admitted(&self, mut announced: Vec<Announced>) -> Vec<Announced> {
        if !self.forgotten.is_empty() || !self.gone.is_empty() {
            announced.retain(|a| !self.forgotten.contains(&a.cgroup_id()) && !self.gone.contains(&a.cgroup_id()));
        }
        announced
    }

    pub fn aggregates(&self) -> &Aggregates {
        &self.aggregates
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    pub fn probe_mut(&mut self) -> &mut Probe {
        &mut self.probe
    }

    /// The kernel stack of a first occurrence.
    pub fn stack(&self, id: i32) -> Option<Vec<u64>> {
        self.intake.stack(id)
    }
}
