//! The NDJSON lines the daemon writes, one per new observation (see docs/log-format.md for the
//! fields). They go through `tracing` so that one subscriber formats everything the daemon says.

use capwatch_common::{CapKey, FailKey, Totals, CAP_FLAG_NOAUDIT, CAP_FLAG_OPTS_KNOWN, VERDICT_GRANTED};
use tracing::info;

use crate::{aggregate::{loss_name, Change}, clock, names};

/// The `target` of every observation line, so a log pipeline can select them.
pub const TARGET: &str = "capwatch::observation";

pub fn verdict(verdict: u16) -> &'static str {
    if verdict == VERDICT_GRANTED { "granted" } else { "denied" }
}

/// "yes"/"no" where the probe saw `opts`, "unknown" where it could not.
pub fn noaudit(flags: u32) -> &'static str {
    match (flags & CAP_FLAG_OPTS_KNOWN != 0, flags & CAP_FLAG_NOAUDIT != 0) {
        (false, _) => "unknown",
        (true, true) => "yes",
        (true, false) => "no",
    }
}

/// Logs one change; `cgroup` is the path of the change's cgroup.
pub fn change(change: &Change, cgroup: &str) {
    match *change {
        Change::NewCap(key, totals) => capability_check(&key, &totals, cgroup, "new capability check"),
        Change::NewFailure(key, totals) => syscall_failure(&key, &totals, cgroup, "new failing syscall"),
        Change::Lost { kind, total, added } => info!(
            target: TARGET,
            event = "loss",
            loss = loss_name(kind),
            total,
            added,
            "the kernel side could not deliver everything"
        ),
    }
}

pub fn capability_check(key: &CapKey, totals: &Totals, cgroup: &str, message: &str) {
    info!(
        target: TARGET,
        event = "capability_check",
        cgroup_id = key.cgroup_id,
        cgroup,
        capability = %names::capability(key.cap),
        cap = key.cap,
        verdict = verdict(key.verdict),
        origin = names::origin(key.origin),
        syscall = %names::syscall(key.syscall),
        syscall_nr = key.syscall as i32,
        noaudit = noaudit(key.flags),
        count = totals.count,
        first_seen = %clock::rfc3339(clock::wall(totals.first_ns)),
        last_seen = %clock::rfc3339(clock::wall(totals.last_ns)),
        pid = totals.sample.pid,
        tid = totals.sample.tid,
        uid = totals.sample.uid,
        comm = %names::comm(&totals.sample.comm),
        "{message}"
    );
}

pub fn syscall_failure(key: &FailKey, totals: &Totals, cgroup: &str, message: &str) {
    info!(
        target: TARGET,
        event = "syscall_failure",
        cgroup_id = key.cgroup_id,
        cgroup,
        syscall = %names::syscall(key.syscall),
        syscall_nr = key.syscall as i32,
        errno = %names::errno(key.errno),
        origin = names::origin(key.origin),
        count = totals.count,
        first_seen = %clock::rfc3339(clock::wall(totals.first_ns)),
        last_seen = %clock::rfc3339(clock::wall(totals.last_ns)),
        pid = totals.sample.pid,
        tid = totals.sample.tid,
        uid = totals.sample.uid,
        comm = %names::comm(&totals.sample.comm),
        "{message}"
    );
}
