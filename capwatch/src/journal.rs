//! The NDJSON lines the daemon writes, one per new observation (see docs/log-format.md for the
//! fields). They go through `tracing` so that one subscriber formats everything the daemon says.

use capwatch_common::{
    CapKey, FailKey, Totals, CAP_FLAG_FOREIGN_CRED, CAP_FLAG_NOAUDIT, CAP_FLAG_OUTER_USERNS, CAP_FLAG_OPTS_KNOWN, VERDICT_GRANTED,
};
use tracing::info;

use crate::{
    aggregate::{loss_name, Change},
    clock,
    containers::Container,
    explain, names,
};

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

/// `own` for a check on the task's own credentials, `substituted` where the kernel checked
/// other ones on its behalf (overlayfs acting as its mounter).
pub fn credentials(flags: u32) -> &'static str {
    if flags & CAP_FLAG_FOREIGN_CRED != 0 { "substituted" } else { "own" }
}

/// Logs one change; `cgroup` is the path of the change's cgroup, `container` its container.
pub fn change(change: &Change, cgroup: &str, container: Option<&Container>) {
    match *change {
        Change::NewCap(key, totals) => capability_check(&key, &totals, cgroup, container, "new capability check"),
        Change::NewFailure(key, totals) => syscall_failure(&key, &totals, cgroup, container, "new failing syscall"),
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

/// A container's id, name and image for a line; empty where the cgroup is no container's.
fn who(container: Option<&Container>) -> (&str, &str, &str) {
    container.map_or(("", "", ""), |c| (c.id.as_str(), c.name.as_str(), c.image.as_deref().unwrap_or("")))
}

/// A container started or exited.
pub fn container(container: &Container, exited: bool) {
    let granted = container.granted.clone().unwrap_or_default();
    info!(
        target: TARGET,
        event = if exited { "container_exit" } else { "container_start" },
        container_id = container.id.as_str(),
        container_name = container.name.as_str(),
        image = container.image.as_deref().unwrap_or(""),
        runtime = container.runtime.name(),
        cgroup = container.cgroup.as_str(),
        cap_add = %granted.cap_add.join(","),
        cap_drop = %granted.cap_drop.join(","),
        privileged = granted.privileged,
        "{}",
        if exited { "container exited" } else { "container started" }
    );
}

pub fn capability_check(key: &CapKey, totals: &Totals, cgroup: &str, container: Option<&Container>, message: &str) {
    let (container_id, container_name, image) = who(container);
    info!(
        target: TARGET,
        event = "capability_check",
        container_id,
        container_name,
        image,
        cgroup_id = key.cgroup_id,
        cgroup,
        capability = %names::capability(key.cap),
        cap = key.cap,
        verdict = verdict(key.verdict),
        origin = names::origin(key.origin),
        syscall = %names::syscall(key.syscall),
        syscall_nr = key.syscall as i32,
        noaudit = noaudit(key.flags),
        credentials = credentials(key.flags),
        user_namespace = if key.flags & CAP_FLAG_OUTER_USERNS != 0 { "outer" } else { "own" },
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

pub fn syscall_failure(key: &FailKey, totals: &Totals, cgroup: &str, container: Option<&Container>, message: &str) {
    let (container_id, container_name, image) = who(container);
    let (cause, explanation) = explain::describe(key, container, &Default::default());
    let denied: Vec<String> = names::mask_bits(key.denied).map(|c| names::capability(c).into_owned()).collect();
    info!(
        target: TARGET,
        event = "syscall_failure",
        container_id,
        container_name,
        image,
        cgroup_id = key.cgroup_id,
        cgroup,
        syscall = %names::syscall(key.syscall),
        syscall_nr = key.syscall as i32,
        errno = %names::errno(key.errno),
        origin = names::origin(key.origin),
        cause = cause.kind(),
        explanation,
        denied_capabilities = %denied.join(","),
        failing_uid = key.uid,
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
