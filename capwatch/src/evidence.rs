//! What is known of one container's capability checks, failing syscalls and exec'd programs,
//! summed over every daemon run and every cgroup of the container: the store gives it, the advice
//! and the explanations judge it.

use std::{collections::BTreeSet, time::SystemTime};

use capwatch_common::{CapKey, FailKey, Loss, Origin, Sample};

use crate::{cause::Explained, filecaps::Found};

/// One aggregate of capability checks. `key.cgroup_id` is 0: the container's cgroups are summed.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckEvidence {
    pub key: CapKey,
    pub count: u64,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    pub sample: Sample,
    /// The kernel functions that made the check, innermost first ("f ← g ← h").
    pub call_site: Option<String>,
    /// `JUDGED_*` bits: what the kernel judged of the first occurrence's stack.
    pub judged: u32,
}

/// One aggregate of failing syscalls, summed likewise.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureEvidence {
    pub key: FailKey,
    pub count: u64,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    pub sample: Sample,
    /// Its cause as the daemon judged it when it first saw it; None where no daemon did.
    pub explained: Option<Explained>,
}

/// A program the container exec'd, and what its file carries.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecEvidence {
    pub origin: Origin,
    /// As the exec named it.
    pub path: String,
    pub count: u64,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    /// The command name after the exec.
    pub program: String,
    pub found: Found,
}

/// A syscall the container's processes made (one that returned, or exit and exit_group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CallEvidence {
    pub origin: Origin,
    /// The runtime made it under the container's seccomp filter (after installing it).
    pub filtered: bool,
    pub syscall: u32,
}

/// Everything the store holds of one container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    pub checks: Vec<CheckEvidence>,
    pub failures: Vec<FailureEvidence>,
    pub execs: Vec<ExecEvidence>,
    /// The syscalls made, where they were recorded (`syscall_sets`).
    pub calls: Vec<CallEvidence>,
    /// What the kernel side could not deliver while the container was observed, by kind.
    pub losses: Vec<(Loss, u64)>,
    /// (capability, syscall) pairs the kernel was seen checking, in any container.
    pub kernel_checks: BTreeSet<(u32, u32)>,
    /// The bounding set of the host the daemon ran on: what a runtime there can grant at all.
    pub host_bounding: Option<u64>,
}

impl Evidence {
    /// From the first to the latest thing seen of the container.
    pub fn observed(&self) -> Option<(SystemTime, SystemTime)> {
        let checks = self.checks.iter().map(|c| (c.first_seen, c.last_seen));
        let failures = self.failures.iter().map(|f| (f.first_seen, f.last_seen));
        let execs = self.execs.iter().map(|e| (e.first_seen, e.last_seen));
        checks.chain(failures).chain(execs).reduce(|(from, to), (first, last)| (from.min(first), to.max(last)))
    }
}
