//! `capwatch explain`'s answer: each of a container's failing syscalls with its cause, as the
//! daemon judged it when it saw the failure (the same sentence its JSON line carried), and what
//! would fix it. Rows that read the same are one; the application's come first.

use std::collections::BTreeSet;

use capwatch_common::Origin;
use serde::Serialize;

use crate::{
    cause::{self, Cause, Profile},
    containers::Container,
    evidence::{ExecEvidence, FailureEvidence},
    filecaps::{self, Found},
    names,
};

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub syscall: String,
    pub errno: String,
    pub uid: u32,
    pub origin: &'static str,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub program: String,
    pub cause: Cause,
    /// The cause in a sentence.
    pub text: String,
    /// What would make the call succeed, in a sentence.
    pub fix: String,
}

impl Explanation {
    /// The container's own command and its descendants, rather than its runtime's setup or a
    /// `docker exec` session.
    pub fn application(&self) -> bool {
        self.origin == Origin::App.name()
    }
}

/// Explains each of a container's failing syscalls, the application's first, the most frequent
/// first within each origin. A failure no daemon judged (a store from an older capwatch) is
/// judged now, with `kernel_checks`: (capability, syscall) pairs the kernel was seen checking
/// anywhere. `execs` name the program files behind a refused exec.
pub fn explain(
    container: &Container,
    failures: &[FailureEvidence],
    execs: &[ExecEvidence],
    kernel_checks: &BTreeSet<(u32, u32)>,
) -> Vec<Explanation> {
    let profile = Profile::of(container);
    let mut explanations: Vec<Explanation> = Vec::new();
    for f in failures {
        let explained = f.explained.clone().unwrap_or_else(|| cause::explain(&f.key, Some(container), kernel_checks));
        let syscall = names::syscall(f.key.syscall).into_owned();
        let fix = fix(&explained.cause, &syscall, f.key.syscall, f.key.uid, &profile, container, execs, kernel_checks);
        let explanation = Explanation {
            errno: names::errno(f.key.errno).into_owned(),
            uid: f.key.uid,
            origin: f.key.origin.name(),
            count: f.count,
            first_seen: crate::clock::rfc3339(f.first_seen),
            last_seen: crate::clock::rfc3339(f.last_seen),
            program: names::comm(&f.sample.comm),
            cause: explained.cause,
            text: explained.text,
            fix,
            syscall,
        };
        // Keys that differ only in what the answer does not show (the seccomp state, the
        // cgroup) read the same: one row.
        match explanations.iter_mut().find(|e| reads_the_same(e, &explanation)) {
            Some(same) => {
                same.count += explanation.count;
                same.first_seen = same.first_seen.clone().min(explanation.first_seen);
                same.last_seen = same.last_seen.clone().max(explanation.last_seen);
            }
            None => explanations.push(explanation),
        }
    }
    let rank = |e: &Explanation| Origin::ALL.iter().position(|o| o.name() == e.origin);
    explanations.sort_by(|a, b| rank(a).cmp(&rank(b)).then(b.count.cmp(&a.count)).then(a.syscall.cmp(&b.syscall)));
    explanations
}

fn reads_the_same(a: &Explanation, b: &Explanation) -> bool {
    (&a.syscall, &a.errno, a.uid, a.origin, &a.program, &a.text)
        == (&b.syscall, &b.errno, b.uid, b.origin, &b.program, &b.text)
}

/// What would make the call succeed, for each cause.
#[allow(clippy::too_many_arguments)]
fn fix(
    cause: &Cause,
    syscall: &str,
    number: u32,
    uid: u32,
    profile: &Profile,
    container: &Container,
    execs: &[ExecEvidence],
    kernel_checks: &BTreeSet<(u32, u32)>,
) -> String {
    // A non-root process holds an added capability only through its program file's capabilities
    // (or ambient ones): Docker gives a non-root user's processes an empty effective set.
    let as_user = |caps: &[&str]| {
        if uid == 0 {
            String::new()
        } else {
            let names: Vec<String> = caps.iter().map(|c| format!("cap_{}", c.to_ascii_lowercase())).collect();
            format!(", and, uid {uid} not being root, the program file's capability (setcap {}+ep)", names.join(","))
        }
    };
    match cause {
        Cause::Capability { capabilities, suffices } => {
            let caps: Vec<&str> = match suffices {
                Some(_) => vec!["DAC_OVERRIDE"],
                None => capabilities.iter().map(|c| c.trim_start_matches("CAP_")).collect(),
            };
            format!("{}{}", add_flags(&caps), as_user(&caps))
        }
        Cause::FilePermissions { bypassed_by } => {
            let cap = if bypassed_by.iter().any(|c| c == "CAP_DAC_OVERRIDE") { "DAC_OVERRIDE" } else { "DAC_READ_SEARCH" };
            format!(
                "chown the file to uid {uid} or widen its mode, in the image or the volume; or bypass the check: {}{}",
                add_flags(&[cap]),
                as_user(&[cap])
            )
        }
        Cause::Seccomp { profile_requires } if !profile_requires.is_empty() => {
            let caps: Vec<&str> = profile_requires.iter().map(|c| c.trim_start_matches("CAP_")).collect();
            let kernel_too = profile_requires
                .iter()
                .any(|c| names::capability_number(c).is_some_and(|n| kernel_checks.contains(&(n, number))));
            let kernel = if kernel_too {
                "the kernel checks it too, so a profile allowing the call without it is not enough"
            } else {
                "whether the kernel checks it too was not seen (the call never ran)"
            };
            format!(
                "{}: Docker's default profile then allows {syscall}; {kernel}",
                caps.iter().map(|c| format!("--cap-add {c}")).collect::<Vec<_>>().join(" or ")
            )
        }
        Cause::Seccomp { .. } => match profile {
            Profile::DockerDefault => format!(
                "Docker's default profile allows {syscall} with no capability: run with a profile that allows it (--security-opt seccomp=PROFILE.json, Docker's default.json with {syscall} added)"
            ),
            Profile::Custom => format!("allow {syscall} in the container's seccomp profile (its --security-opt seccomp=…)"),
            Profile::Capwatch => format!(
                "write the profile again from a run that makes {syscall} (capwatch report --format seccomp), or add {syscall} to its allowed syscalls"
            ),
            Profile::Unconfined | Profile::Unknown => format!(
                "allow {syscall} in the seccomp filter that refused it: the container's profile, or one the program installs itself"
            ),
        },
        Cause::FileCapabilities => file_capabilities_fix(container, execs),
        Cause::KeptCapabilities => "--cap-add the capabilities the program asks capset to keep (its configuration names them), or configure it to keep fewer".to_string(),
        Cause::Other => format!(
            "no capability or seccomp change: look for an LSM denial (AppArmor, SELinux: the audit log, dmesg), a read-only or nosuid mount, or {syscall}'s own rules (man 2 {syscall})"
        ),
    }
}

/// `--cap-add A --cap-add B`.
fn add_flags(caps: &[&str]) -> String {
    caps.iter().map(|c| format!("--cap-add {c}")).collect::<Vec<_>>().join(" ")
}

/// security/commoncap.c bprm_caps_from_vfs_caps: execve of a file whose capabilities carry the
/// effective bit fails unless its permitted set lies within the bounding set. The fix names
/// each such program the application exec'd, with what it carries beyond the container's set.
fn file_capabilities_fix(container: &Container, execs: &[ExecEvidence]) -> String {
    let bounding = container.granted.as_ref().and_then(|g| g.cap_bnd);
    let programs: Vec<String> = execs
        .iter()
        .filter(|e| e.origin == Origin::App)
        .filter_map(|e| match &e.found {
            Found::Caps(caps) if caps.effective && bounding.is_none_or(|b| caps.permitted & !b != 0) => {
                let beyond = caps.permitted & !bounding.unwrap_or(0);
                let names: Vec<String> = names::mask_bits(beyond)
                    .map(|c| names::capability(c).trim_start_matches("CAP_").to_string())
                    .collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                Some(format!(
                    "{} (carrying {}): {}, or `setcap -r {}` in the image if it works without",
                    e.path,
                    filecaps::describe(caps),
                    add_flags(&names),
                    e.path
                ))
            }
            _ => None,
        })
        .collect();
    if programs.is_empty() {
        "--cap-add the capabilities the program file carries (getcap PROGRAM), or `setcap -r PROGRAM` in the image if it works without".to_string()
    } else {
        programs.join("; ")
    }
}
