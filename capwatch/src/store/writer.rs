//! The daemon's writes: the latest of every observation since the previous write, the cgroups they
//! were seen in, and the containers that changed, in one transaction per drain. What a failed write
//! held stays for the next one.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use capwatch_common::{CallsKey, CapKey, ExecKey, FailKey, Loss};

use super::{Batch, CgroupRow, RunId, Store};
use crate::{
    attribution::{Calls, Check, Exec, Failure, Observation, Place},
    containers::Container,
    error::Error,
};

pub struct Writer {
    run: RunId,
    checks: BTreeMap<CapKey, Check>,
    failures: BTreeMap<FailKey, Failure>,
    execs: BTreeMap<ExecKey, Exec>,
    calls: BTreeMap<CallsKey, Calls>,
    containers: Vec<Arc<Container>>,
    losses: Vec<(Loss, u64)>,
    /// Cgroups whose row this run has written.
    cgroups: HashSet<u64>,
}

impl Writer {
    pub fn new(run: RunId) -> Self {
        Self {
            run,
            checks: BTreeMap::new(),
            failures: BTreeMap::new(),
            execs: BTreeMap::new(),
            calls: BTreeMap::new(),
            containers: Vec::new(),
            losses: Vec::new(),
            cgroups: HashSet::new(),
        }
    }

    /// Keeps the latest totals of each observed key until the next write.
    pub fn note(&mut self, observations: &[Observation]) {
        for observation in observations {
            match observation {
                Observation::Check(check) => drop(self.checks.insert(check.key, check.clone())),
                Observation::Failure(failure) => drop(self.failures.insert(failure.key, failure.clone())),
                Observation::Exec(exec) => drop(self.execs.insert(exec.key, exec.clone())),
                Observation::Calls(calls) => drop(self.calls.insert(calls.key, calls.clone())),
                Observation::Lost { loss, added, .. } => self.losses.push((*loss, *added)),
            }
        }
    }

    /// Forgets which cgroups' rows it wrote, for cgroups that are gone.
    pub fn forget(&mut self, gone: &HashSet<u64>) {
        self.cgroups.retain(|id| !gone.contains(id));
    }

    /// Containers learned or changed, to write with the next batch.
    pub fn note_containers(&mut self, containers: Vec<Arc<Container>>) {
        self.containers.extend(containers);
    }

    /// Writes what was noted since the previous write.
    pub fn write(&mut self, store: &mut Store) -> Result<(), Error> {
        let places: Vec<&Place> = self
            .checks
            .values()
            .map(|c| &c.place)
            .chain(self.failures.values().map(|f| &f.place))
            .chain(self.execs.values().map(|e| &e.place))
            .chain(self.calls.values().map(|c| &c.place))
            .collect();
        let mut cgroups: Vec<CgroupRow<'_>> = Vec::new();
        for place in places {
            if !self.cgroups.contains(&place.cgroup_id) && !cgroups.iter().any(|c| c.cgroup_id == place.cgroup_id) {
                cgroups.push(CgroupRow {
                    cgroup_id: place.cgroup_id,
                    path: &place.cgroup,
                    container_id: place.container.as_deref().map(|c| c.id.as_str()),
                });
            }
        }
        if cgroups.is_empty()
            && self.checks.is_empty()
            && self.failures.is_empty()
            && self.execs.is_empty()
            && self.calls.is_empty()
            && self.containers.is_empty()
            && self.losses.is_empty()
        {
            return Ok(());
        }
        let checks: Vec<&Check> = self.checks.values().collect();
        let failures: Vec<&Failure> = self.failures.values().collect();
        let execs: Vec<&Exec> = self.execs.values().collect();
        let calls: Vec<&Calls> = self.calls.values().collect();
        let batch = Batch {
            cgroups: &cgroups,
            containers: &self.containers,
            checks: &checks,
            failures: &failures,
            execs: &execs,
            calls: &calls,
            losses: &self.losses,
        };
        store.write(self.run, &batch)?;
        let written: Vec<u64> = cgroups.iter().map(|c| c.cgroup_id).collect();
        self.cgroups.extend(written);
        self.checks.clear();
        self.failures.clear();
        self.execs.clear();
        self.calls.clear();
        self.containers.clear();
        self.losses.clear();
        Ok(())
    }
}
