//! The NDJSON lines the daemon writes: one per new observation, container start and exit, and
//! loss (see docs/log-format.md for the fields). They go through `tracing` so that one subscriber
//! formats everything the daemon says.

use capwatch_common::{CAP_FLAG_FOREIGN_CRED, CAP_FLAG_NOAUDIT, CAP_FLAG_OPTS_KNOWN, CAP_FLAG_OUTER_USERNS};
use tracing::info;

use crate::{
    attribution::{Check, Exec, Failure, Observation, Place},
    clock,
    containers::Container,
    filecaps::{self, Found},
    names,
};

/// The `target` of every observation line, so a log pipeline can select them.
pub const TARGET: &str = "capwatch::observation";

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
    if flags & CAP_FLAG_FOREIGN_CRED != 0 {
        "substituted"
    } else {
        "own"
    }
}

/// Logs what is new: first occurrences and losses.
pub fn new(observations: &[Observation]) {
    for observation in observations {
        match observation {
            Observation::Check(check) if check.first => capability_check(check, "new capability check"),
            Observation::Failure(failure) if failure.first => syscall_failure(failure, "new failing syscall"),
            Observation::Exec(exec) if exec.first => program_exec(exec),
            Observation::Lost { loss, total, added } => info!(
                target: TARGET,
                event = "loss",
                loss = loss.name(),
                total,
                added,
                "the kernel side could not deliver everything"
            ),
            _ => {}
        }
    }
}

/// Logs every aggregate's totals, one line per key: the daemon's last word.
pub fn totals(observations: &[Observation]) {
    for observation in observations {
        match observation {
            Observation::Check(check) => capability_check(check, "totals"),
            Observation::Failure(failure) => syscall_failure(failure, "totals"),
            Observation::Exec(_) | Observation::Calls(_) | Observation::Lost { .. } => {}
        }
    }
}

/// A container's id, name and image for a line; empty where the cgroup is no container's.
fn who(place: &Place) -> (&str, &str, &str) {
    place
        .container
        .as_deref()
        .map_or(("", "", ""), |c| (c.id.as_str(), c.name.as_str(), c.image.as_deref().unwrap_or("")))
}

/// A container started or exited.
pub fn container(container: &Container) {
    let granted = container.granted.clone().unwrap_or_default();
    let exited = !container.running();
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

fn capability_check(check: &Check, message: &str) {
    let (container_id, container_name, image) = who(&check.place);
    let (key, totals) = (&check.key, &check.totals);
    info!(
        target: TARGET,
        event = "capability_check",
        container_id,
        container_name,
        image,
        cgroup_id = key.cgroup_id,
        cgroup = &*check.place.cgroup,
        capability = %names::capability(key.cap),
        cap = key.cap,
        verdict = names::verdict(key),
        origin = key.origin.name(),
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

fn syscall_failure(failure: &Failure, message: &str) {
    let (container_id, container_name, image) = who(&failure.place);
    let (key, totals) = (&failure.key, &failure.totals);
    let denied: Vec<String> = names::mask_bits(key.denied).map(|c| names::capability(c).into_owned()).collect();
    info!(
        target: TARGET,
        event = "syscall_failure",
        container_id,
        container_name,
        image,
        cgroup_id = key.cgroup_id,
        cgroup = &*failure.place.cgroup,
        syscall = %names::syscall(key.syscall),
        syscall_nr = key.syscall as i32,
        errno = %names::errno(key.errno),
        origin = key.origin.name(),
        cause = failure.detail.cause.kind(),
        explanation = failure.detail.text.as_str(),
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

/// A program exec'd for the first time in a cgroup, with what its file grants at exec.
fn program_exec(exec: &Exec) {
    let (container_id, container_name, image) = who(&exec.place);
    let (found, file_capabilities, reason) = match &exec.detail.found {
        Found::Caps(caps) => ("caps", filecaps::describe(caps), String::new()),
        Found::Nothing => ("nothing", String::new(), String::new()),
        Found::Unreadable { reason } => ("unreadable", String::new(), reason.clone()),
    };
    info!(
        target: TARGET,
        event = "program_exec",
        container_id,
        container_name,
        image,
        cgroup_id = exec.key.cgroup_id,
        cgroup = &*exec.place.cgroup,
        origin = exec.key.origin.name(),
        path = exec.detail.path.as_str(),
        found,
        file_capabilities,
        reason,
        pid = exec.totals.sample.pid,
        comm = %names::comm(&exec.totals.sample.comm),
        "new program exec'd"
    );
}
