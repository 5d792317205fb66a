//! The least privilege in syscalls: a seccomp profile that allows exactly what the container made
//! (the application, its exec sessions, and the runtime once the filter is in force) and agrees
//! with the capability advice.
//!
//! The profile is Docker's default narrowed to the syscalls made, its capability conditions
//! resolved for the advised capabilities (moby profiles/seccomp/seccomp_linux.go setupSeccomp):
//! a syscall Docker's default allows only with a capability the advice drops is left out, and
//! said so; its argument conditions (clone's namespace flags, personality) stay. Syscalls made
//! outside Docker's default (the container ran with another profile or none) are allowed as made.
//! What the current profile refused is listed apart, never allowed.

use std::collections::{BTreeMap, BTreeSet};

use capwatch_common::Origin;
use serde::Serialize;

use crate::{
    cause::Cause,
    evidence::{CallEvidence, FailureEvidence},
    names,
    seccomp_profile::{SeccompProfile, WrittenRule},
};

/// What the runtime (runc) calls between installing the container's filter and exec-ing its
/// command: allowed even where the kernel side did not see the runtime under a filter (a
/// container that ran unconfined). Measured with Docker's runc by recording what its processes
/// called while their seccomp mode was SECCOMP_MODE_FILTER, over `docker run` with the default
/// capabilities, `--user`, `--read-only`, `--cap-drop ALL`, `--security-opt no-new-privileges`,
/// and `docker exec` (docs/advice-rules.md); with the Go runtime's own calls, which its threads
/// make at any moment (futex, nanosleep, sched_yield, signals for preemption, memory).
pub const RUNTIME_AFTER_FILTER: &[&str] = &[
    // runc's finishing of the container's process: credentials, capabilities, working
    // directory, the exec fifo's handshake, the console, and the exec itself.
    "capget",
    "capset",
    "chdir",
    "close",
    "epoll_ctl",
    "execve",
    "faccessat2",
    "fchown",
    "fcntl",
    "fstat",
    "fstatfs",
    "getcwd",
    "getdents64",
    "getpid",
    "getppid",
    "newfstatat",
    "openat",
    "prctl",
    "read",
    "setgid",
    "setgroups",
    "setuid",
    "write",
    // The Go runtime's threads.
    "epoll_pwait",
    "exit",
    "exit_group",
    "futex",
    "gettid",
    "madvise",
    "mmap",
    "munmap",
    "nanosleep",
    "rt_sigprocmask",
    "sched_yield",
    "sigaltstack",
    "tgkill",
];

/// Syscalls the kernel makes a program enter on its own behalf, which no syscall exit names:
/// returning from a signal handler (arch/x86/kernel/signal_64.c: rt_sigreturn's
/// restore_sigcontext sets `orig_ax` to -1, so its exit carries no number) and resuming a
/// syscall a signal interrupted (kernel/signal.c: restart_syscall, set up by
/// -ERESTART_RESTARTBLOCK). Every program that handles a signal needs them; they are always
/// allowed.
pub const KERNEL_MADE: &[&str] = &["rt_sigreturn", "restart_syscall"];

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SyscallAdvice {
    /// The syscalls the profile allows the container's own processes, sorted.
    pub allowed: Vec<String>,
    /// Of those, the ones only `docker exec` sessions made.
    pub exec_only: Vec<String>,
    /// What the runtime calls after installing the filter, allowed too.
    pub runtime: Vec<String>,
    /// Made, but left out: Docker's default allows them only with a capability the advice drops.
    pub left_out: Vec<LeftOut>,
    /// Refused by the container's profile while it was watched, for want of a capability the
    /// advice adds: Docker's default allows them with it, and so does this profile.
    pub unlocked: Vec<LeftOut>,
    /// Refused by the container's profile while it was watched, and by this one.
    pub refused: Vec<String>,
    /// The profile's rules, as Docker and runc load them.
    pub rules: Vec<WrittenRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    pub syscall: String,
    /// Any one of them opens it in Docker's default profile.
    pub capabilities: Vec<String>,
}

/// The capabilities with which Docker's default profile let through syscalls the application
/// made, by capability, each with its reason. moby profiles/seccomp/seccomp_linux.go
/// setupSeccomp: a rule with `includes.caps` applies only to a container holding them, so a
/// syscall no rule allows without a capability fails with EPERM (the profile's default action)
/// once that capability is dropped; one refused with an errno of its own there (clone3's ENOSYS)
/// is a refusal the program falls back on, and needs nothing. `granted`: the container's
/// capabilities, one of which opened each call.
pub fn opening_caps(
    calls: &[CallEvidence],
    granted: Option<u64>,
    kernel_checks: &BTreeSet<(u32, u32)>,
) -> BTreeMap<u32, BTreeSet<String>> {
    let docker = SeccompProfile::docker_default();
    let mut opening: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for call in calls.iter().filter(|c| c.origin == Origin::App) {
        let syscall = names::syscall(call.syscall).into_owned();
        let required = docker.required_caps(&syscall);
        if required.is_empty() || !docker.rules_for(&BTreeSet::from([syscall.clone()]), &BTreeSet::new()).is_empty() {
            continue;
        }
        let held = |cap: &String| {
            names::capability_number(cap).is_some_and(|n| granted.is_none_or(|mask| mask & (1 << n) != 0))
        };
        let cap = docker
            .unlocking_cap(&syscall, call.syscall, kernel_checks)
            .filter(held)
            .or_else(|| required.iter().find(|c| held(c)).cloned());
        if let Some(number) = cap.as_deref().and_then(names::capability_number) {
            opening.entry(number).or_default().insert(format!(
                "{syscall} was made, and Docker's default seccomp profile allows it only with this capability"
            ));
        }
    }
    opening
}

/// The syscalls the container's own processes had refused by its seccomp profile.
pub fn refused(failures: &[FailureEvidence], cause_of: impl Fn(&FailureEvidence) -> Cause) -> BTreeSet<String> {
    failures
        .iter()
        .filter(|f| f.key.origin != Origin::Runtime && matches!(cause_of(f), Cause::Seccomp { .. }))
        .map(|f| names::syscall(f.key.syscall).into_owned())
        .collect()
}

/// The profile for a container (or the containers of an image) whose syscalls were recorded;
/// None where none were. `refused`: what its profile refused (`refused`); `docker_default`:
/// whether it ran under Docker's default profile.
pub fn advise(
    calls: &[CallEvidence],
    refused: &BTreeSet<String>,
    docker_default: bool,
    cap_add: &[String],
) -> Option<SyscallAdvice> {
    if calls.is_empty() {
        return None;
    }
    let named = |origin: Origin, filtered: Option<bool>| -> BTreeSet<String> {
        calls
            .iter()
            .filter(|c| c.origin == origin && filtered.is_none_or(|f| c.filtered == f))
            .map(|c| names::syscall(c.syscall).into_owned())
            .collect()
    };
    let mut app = named(Origin::App, None);
    app.extend(KERNEL_MADE.iter().map(ToString::to_string));
    let exec_only: BTreeSet<String> = named(Origin::Exec, None).difference(&app).cloned().collect();
    let own: BTreeSet<String> = app.union(&exec_only).cloned().collect();
    let caps: BTreeSet<String> = cap_add.iter().map(|c| format!("CAP_{c}")).collect();
    let docker = SeccompProfile::docker_default();

    // Made, and opened by Docker's default only with a capability the advice drops: no rule of
    // it applies to a container holding the advised capabilities.
    let opened: BTreeSet<String> = docker
        .rules_for(&own, &caps)
        .into_iter()
        .filter(|r| r.action == "SCMP_ACT_ALLOW")
        .flat_map(|r| r.names)
        .collect();
    let left_out: Vec<LeftOut> = own
        .iter()
        .filter(|s| !opened.contains(*s))
        .filter_map(|syscall| {
            let required = docker.required_caps(syscall);
            (!required.is_empty()).then(|| LeftOut { syscall: syscall.clone(), capabilities: required })
        })
        .collect();
    let allowed: BTreeSet<String> =
        own.iter().filter(|s| !left_out.iter().any(|l| &l.syscall == *s)).cloned().collect();
    let mut runtime = named(Origin::Runtime, Some(true));
    runtime.extend(RUNTIME_AFTER_FILTER.iter().map(ToString::to_string));
    let runtime: BTreeSet<String> = runtime.difference(&allowed).cloned().collect();

    // A refusal the advice's capabilities undo (the advice adds what Docker's rule asks for)
    // is allowed as Docker's default then allows it; any other stays a refusal.
    let (unlocked, refused): (BTreeSet<String>, BTreeSet<String>) =
        refused.iter().filter(|s| !allowed.contains(*s) && !runtime.contains(*s)).cloned().partition(|s| {
            docker.rules_for(&BTreeSet::from([s.clone()]), &caps).iter().any(|r| r.action == "SCMP_ACT_ALLOW")
        });

    let mut rules = docker.rules_for(&allowed, &caps);
    let covered: BTreeSet<String> =
        rules.iter().filter(|r| r.action == "SCMP_ACT_ALLOW").flat_map(|r| r.names.iter().cloned()).collect();
    for rule in &mut rules {
        rule.comment = "Docker's default rule, narrowed to the syscalls the container made".into();
    }
    let outside: Vec<String> = allowed.difference(&covered).cloned().collect();
    if !outside.is_empty() {
        let comment = if docker_default {
            "made by the container"
        } else {
            "made by the container, which ran with another profile than Docker's default (or none)"
        };
        rules.push(allow(outside, comment));
    }
    for mut rule in docker.rules_for(&unlocked, &caps).into_iter().filter(|r| r.action == "SCMP_ACT_ALLOW") {
        rule.comment =
            "refused while watched for want of a capability the advice adds; Docker's default allows it with it".into();
        rules.push(rule);
    }
    if !runtime.is_empty() {
        rules.push(allow(
            runtime.iter().cloned().collect(),
            "the runtime (runc) makes these after it installs this filter, before it execs the command",
        ));
    }
    // Docker's refusals with another errno than the default's (clone3's ENOSYS, on which libc
    // falls back to clone) stay, for the syscalls not allowed.
    let allowed_anywhere: BTreeSet<String> = allowed.iter().chain(&runtime).chain(&unlocked).cloned().collect();
    let refusals =
        docker.rules_for(&docker.names(), &caps).into_iter().filter(|r| r.action != "SCMP_ACT_ALLOW").filter_map(
            |mut r| {
                r.names.retain(|n| !allowed_anywhere.contains(n));
                r.comment = "Docker's default answer to these, kept: a program falls back on it".into();
                (!r.names.is_empty()).then_some(r)
            },
        );
    rules.extend(refusals);

    Some(SyscallAdvice {
        allowed: allowed.into_iter().collect(),
        exec_only: exec_only.into_iter().filter(|s| !left_out.iter().any(|l| &l.syscall == s)).collect(),
        runtime: runtime.into_iter().collect(),
        left_out,
        unlocked: unlocked
            .into_iter()
            .map(|syscall| LeftOut { capabilities: docker.required_caps(&syscall), syscall })
            .collect(),
        refused: refused.into_iter().collect(),
        rules,
    })
}

fn allow(names: Vec<String>, comment: &str) -> WrittenRule {
    WrittenRule { names, action: "SCMP_ACT_ALLOW".into(), errno_ret: None, args: Vec::new(), comment: comment.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(origin: Origin, filtered: bool, syscall: i64) -> CallEvidence {
        CallEvidence { origin, filtered, syscall: syscall as u32 }
    }

    fn allowed_by<'a>(advice: &'a SyscallAdvice, syscall: &str) -> Vec<&'a WrittenRule> {
        advice.rules.iter().filter(|r| r.action == "SCMP_ACT_ALLOW" && r.names.iter().any(|n| n == syscall)).collect()
    }

    #[test]
    fn the_profile_allows_what_was_made_narrowing_docker_defaults_rules() {
        let calls = [
            call(Origin::App, false, libc::SYS_read),
            call(Origin::App, false, libc::SYS_clone),
            call(Origin::Exec, false, libc::SYS_getdents64),
            call(Origin::Runtime, true, libc::SYS_setgroups),
            call(Origin::Runtime, false, libc::SYS_mount),
        ];
        let advice = advise(&calls, &BTreeSet::new(), true, &[]).unwrap();
        assert_eq!(allowed_by(&advice, "read").len(), 1);
        // clone keeps Docker's condition on its flags (no namespaces without CAP_SYS_ADMIN).
        let clone = allowed_by(&advice, "clone");
        assert_eq!(clone.len(), 1);
        assert!(!clone[0].args.is_empty(), "{clone:?}");
        assert_eq!(advice.exec_only, ["getdents64"]);
        assert!(advice.runtime.contains(&"setgroups".to_string()));
        // What the runtime did before the filter is not its business.
        assert!(!advice.runtime.contains(&"mount".to_string()));
        assert!(allowed_by(&advice, "mount").is_empty());
        // The kernel's own entries are always there; clone3 keeps its ENOSYS for libc's fallback.
        assert_eq!(allowed_by(&advice, "rt_sigreturn").len(), 1);
        let clone3: Vec<_> = advice.rules.iter().filter(|r| r.names.contains(&"clone3".to_string())).collect();
        assert_eq!(clone3.len(), 1);
        assert_eq!((clone3[0].action.as_str(), clone3[0].errno_ret), ("SCMP_ACT_ERRNO", Some(38)));
        assert!(advice.rules.iter().all(|r| !r.names.is_empty()));
    }

    #[test]
    fn a_syscall_whose_capability_the_advice_drops_is_left_out_and_what_was_refused_is_not_allowed() {
        let calls = [call(Origin::App, false, libc::SYS_unshare), call(Origin::App, false, libc::SYS_read)];
        let refused = BTreeSet::from(["fanotify_init".to_string()]);
        let advice = advise(&calls, &refused, true, &[]).unwrap();
        assert_eq!(
            advice.left_out,
            [LeftOut { syscall: "unshare".into(), capabilities: vec!["CAP_SYS_ADMIN".into()] }]
        );
        assert!(allowed_by(&advice, "unshare").is_empty());
        assert_eq!(advice.refused, ["fanotify_init"]);
        assert!(allowed_by(&advice, "fanotify_init").is_empty());
        // With the capability in the advice, Docker's rule for it applies, and the refusal it
        // caused is undone, said apart.
        let advice = advise(&calls, &refused, true, &["SYS_ADMIN".into()]).unwrap();
        assert!(advice.left_out.is_empty());
        assert_eq!(allowed_by(&advice, "unshare").len(), 1);
        assert!(advice.refused.is_empty());
        assert_eq!(advice.unlocked[0].syscall, "fanotify_init");
        assert!(allowed_by(&advice, "fanotify_init")[0].comment.contains("refused while watched"));
    }

    #[test]
    fn a_capability_that_opened_a_made_syscall_in_dockers_default_is_needed_but_not_for_fallbacks() {
        let all = u64::MAX;
        let calls = [
            call(Origin::App, false, libc::SYS_unshare),
            call(Origin::App, false, libc::SYS_clone),
            call(Origin::App, false, libc::SYS_clone3),
            call(Origin::App, false, libc::SYS_settimeofday),
            call(Origin::Runtime, false, libc::SYS_mount),
        ];
        let opening = opening_caps(&calls, Some(all), &BTreeSet::new());
        let sys_admin = names::capability_number("CAP_SYS_ADMIN").unwrap();
        let sys_time = names::capability_number("CAP_SYS_TIME").unwrap();
        assert_eq!(opening.keys().copied().collect::<Vec<_>>(), [sys_admin, sys_time]);
        assert!(opening[&sys_admin].iter().all(|r| r.starts_with("unshare ")), "{opening:?}");
        // Without any capability that opens it, the call could not have passed: nothing to add.
        assert!(opening_caps(&calls[..1], Some(0), &BTreeSet::new()).is_empty());
    }
}
