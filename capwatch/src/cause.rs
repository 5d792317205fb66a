//! Why a syscall failed with EPERM or EACCES: a missing capability, the file's permissions, the
//! seccomp filter, the program file's capabilities, or something else. The kernel side leaves
//! the evidence with each failure: the capabilities denied to the same thread in the same
//! syscall, the thread's uid, and whether its seccomp filter always allows that syscall. The
//! attribution stage judges each failure once; its cause and sentence are logged, counted and
//! stored as they are.

use std::collections::BTreeSet;

use capwatch_common::{FailKey, Origin, Seccomp};
use serde::{Deserialize, Serialize};

use crate::{containers::Container, names, seccomp_profile::SeccompProfile};

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Cause {
    /// The kernel denied these capabilities in the call.
    Capability { capabilities: Vec<String>, suffices: Option<String> },
    /// A non-root user refused by a file's mode or owner; the capabilities would bypass it.
    FilePermissions { bypassed_by: Vec<String> },
    /// The seccomp filter refused the call before it ran.
    Seccomp { profile_requires: Vec<String> },
    /// `execve` refused with no capability check: the program file carries capabilities the
    /// container's bounding set lacks.
    FileCapabilities,
    /// `capset` refused with no capability check: it was asked to keep capabilities the process
    /// does not hold.
    KeptCapabilities,
    /// The call ran and failed with no capability denied: an LSM, or the call's own rules.
    Other,
}

impl Cause {
    pub fn kind(&self) -> &'static str {
        match self {
            Cause::Capability { .. } => "capability",
            Cause::FilePermissions { .. } => "file_permissions",
            Cause::Seccomp { .. } => "seccomp",
            Cause::FileCapabilities => "file_capabilities",
            Cause::KeptCapabilities => "kept_capabilities",
            Cause::Other => "other",
        }
    }
}

/// A failure's cause and the sentence that tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explained {
    pub cause: Cause,
    pub text: String,
}

/// What a container's seccomp profile is, from its runtime's security options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    DockerDefault,
    Unconfined,
    Custom,
    /// A profile `capwatch report --format seccomp` wrote: it allows what the container made
    /// when it was written, and refuses the rest.
    Capwatch,
    Unknown,
}

impl Profile {
    pub fn of(container: &Container) -> Self {
        // Docker's default profile is Docker's: another runtime's, or a filter a command
        // inherited, is not known here.
        if container.runtime != crate::containers::Runtime::Docker {
            return Profile::Unknown;
        }
        let Some(granted) = &container.granted else { return Profile::Unknown };
        match granted
            .security_opt
            .iter()
            .find_map(|o| o.strip_prefix("seccomp=").or_else(|| o.strip_prefix("seccomp:")))
        {
            None if !granted.privileged => Profile::DockerDefault,
            None => Profile::Unconfined,
            Some("unconfined") => Profile::Unconfined,
            // docker passes the profile's contents, not its path.
            Some(profile) if profile.contains(crate::seccomp_profile::MARKER) => Profile::Capwatch,
            Some(_) => Profile::Custom,
        }
    }
}

/// The cause of one failure, from the evidence in its key.
pub fn cause(key: &FailKey, profile: &Profile, seccomp_rules: &SeccompProfile) -> Cause {
    let denied: Vec<u32> = names::mask_bits(key.denied).collect();
    let dac_only = !denied.is_empty() && denied.iter().all(|&c| c == CAP_DAC_OVERRIDE || c == CAP_DAC_READ_SEARCH);
    if dac_only && key.uid != 0 {
        return Cause::FilePermissions {
            bypassed_by: denied.iter().map(|&c| names::capability(c).into_owned()).collect(),
        };
    }
    if !denied.is_empty() {
        let suffices = (denied.contains(&CAP_DAC_OVERRIDE) && denied.contains(&CAP_DAC_READ_SEARCH)).then(|| {
            "CAP_DAC_OVERRIDE suffices (CAP_DAC_READ_SEARCH would for reading and searching only)".to_string()
        });
        return Cause::Capability {
            capabilities: denied.iter().map(|&c| names::capability(c).into_owned()).collect(),
            suffices,
        };
    }
    if key.seccomp == Seccomp::MayRefuse {
        let syscall = names::syscall(key.syscall);
        let profile_requires = match profile {
            Profile::DockerDefault => seccomp_rules.required_caps(&syscall),
            _ => Vec::new(),
        };
        return Cause::Seccomp { profile_requires };
    }
    if key.errno == libc::EPERM as u16
        && (key.syscall == libc::SYS_execve as u32 || key.syscall == libc::SYS_execveat as u32)
    {
        return Cause::FileCapabilities;
    }
    // security/commoncap.c cap_capset: "verify restrictions on target's new Permitted set":
    // -EPERM unless the new permitted set lies within the old one, with no check made (its other
    // refusals, an effective set beyond the new permitted one or an inheritable set beyond the
    // bounding set, are a program's own inconsistency, which a denied CAP_SETPCAP would show).
    if key.errno == libc::EPERM as u16 && key.syscall == libc::SYS_capset as u32 {
        return Cause::KeptCapabilities;
    }
    Cause::Other
}

/// One failure's cause and its sentence, for a container (or none) whose profile decides the
/// seccomp wording. `kernel_checks` are (capability, syscall) pairs the kernel was seen checking
/// anywhere, to say when a profile's coupling matches the kernel's own requirement.
pub fn explain(key: &FailKey, container: Option<&Container>, kernel_checks: &BTreeSet<(u32, u32)>) -> Explained {
    let profile = container.map_or(Profile::Unknown, Profile::of);
    let rules = SeccompProfile::docker_default();
    let cause = cause(key, &profile, rules);
    let text = sentence(key, &cause, &profile, rules, kernel_checks);
    Explained { cause, text }
}

fn sentence(
    key: &FailKey,
    cause: &Cause,
    profile: &Profile,
    rules: &SeccompProfile,
    kernel_checks: &BTreeSet<(u32, u32)>,
) -> String {
    let syscall = names::syscall(key.syscall);
    let who = format!("uid {}{}", key.uid, if key.origin == Origin::App { "" } else { ", not the application" });
    match cause {
        Cause::Capability { capabilities, suffices } => {
            let mut text = format!("missing capability: the kernel denied {} in {syscall} ({who})", capabilities.join(" and "));
            if let Some(suffices) = suffices {
                text.push_str(&format!("; {suffices}"));
            }
            if *profile == Profile::DockerDefault {
                let coupled = rules.required_caps(&syscall);
                if !coupled.is_empty() {
                    text.push_str(&format!("; Docker's default profile also allows {syscall} only with {}", coupled.join(" or ")));
                }
            }
            text
        }
        Cause::FilePermissions { bypassed_by } => format!(
            "file permissions: uid {} was refused by a file's mode or owner in {syscall}; {} would bypass them",
            key.uid,
            bypassed_by.join(" or ")
        ),
        Cause::Seccomp { profile_requires } if !profile_requires.is_empty() => {
            let kernel_too: Vec<&String> = profile_requires
                .iter()
                .filter(|c| names::capability_number(c).is_some_and(|n| kernel_checks.contains(&(n, key.syscall))))
                .collect();
            let mut text = format!(
                "blocked by seccomp: Docker's default profile allows {syscall} only with {} ({who})",
                profile_requires.join(" or ")
            );
            if !kernel_too.is_empty() {
                text.push_str(&format!(
                    ", and the kernel also requires {} for it",
                    kernel_too.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(" or ")
                ));
            }
            text
        }
        Cause::Seccomp { .. } if *profile == Profile::Capwatch => format!(
            "blocked by seccomp: capwatch's least-privilege profile refused {syscall} ({who}): the container did not make it while the profile was written"
        ),
        Cause::Seccomp { .. } => format!(
            "blocked by seccomp: the container's seccomp filter refused {syscall} before it ran ({who}); no capability would change that, the profile would"
        ),
        Cause::FileCapabilities => format!(
            "the program file's capabilities: execve refused it without a capability check ({who}); its file capabilities (getcap) exceed the container's bounding set"
        ),
        Cause::KeptCapabilities => format!(
            "capabilities the process does not hold: capset refused to keep them, which it does without a capability check ({who}; security/commoncap.c cap_capset: the new permitted set must lie within the old one); the program names capabilities the container was not given"
        ),
        Cause::Other => format!(
            "not a capability: {syscall} ran and failed with no capability denied ({who}): an LSM (AppArmor, SELinux), a mount option or the call's own rules"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(syscall: i64, errno: i32, uid: u32, seccomp: Seccomp, denied: &[u32]) -> FailKey {
        FailKey {
            cgroup_id: 0,
            syscall: syscall as u32,
            errno: errno as u16,
            origin: Origin::App,
            uid,
            seccomp,
            denied: denied.iter().fold(0, |m, c| m | 1 << c),
        }
    }

    #[test]
    fn causes_from_the_evidence() {
        let rules = SeccompProfile::docker_default();
        let default = Profile::DockerDefault;
        assert_eq!(
            cause(&key(libc::SYS_fanotify_init, 1, 0, Seccomp::MayRefuse, &[]), &default, rules),
            Cause::Seccomp { profile_requires: vec!["CAP_SYS_ADMIN".into()] }
        );
        assert_eq!(
            cause(&key(libc::SYS_fanotify_init, 1, 0, Seccomp::None, &[21]), &Profile::Unconfined, rules),
            Cause::Capability { capabilities: vec!["CAP_SYS_ADMIN".into()], suffices: None }
        );
        assert!(matches!(
            cause(&key(libc::SYS_openat, 13, 1000, Seccomp::Allows, &[1, 2]), &default, rules),
            Cause::FilePermissions { .. }
        ));
        match cause(&key(libc::SYS_openat, 13, 0, Seccomp::Allows, &[1, 2]), &default, rules) {
            Cause::Capability { suffices: Some(s), .. } => assert!(s.starts_with("CAP_DAC_OVERRIDE")),
            other => panic!("{other:?}"),
        }
        assert_eq!(cause(&key(libc::SYS_execve, 1, 0, Seccomp::Allows, &[]), &default, rules), Cause::FileCapabilities);
        assert_eq!(cause(&key(libc::SYS_openat, 13, 0, Seccomp::Allows, &[]), &default, rules), Cause::Other);
        assert_eq!(cause(&key(libc::SYS_capset, 1, 0, Seccomp::Allows, &[]), &default, rules), Cause::KeptCapabilities);
        // A refused CAP_SETPCAP that mattered is the capability's.
        assert!(matches!(
            cause(&key(libc::SYS_capset, 1, 0, Seccomp::Allows, &[8]), &default, rules),
            Cause::Capability { .. }
        ));
        // A custom profile's refusal names no coupling.
        assert_eq!(
            cause(&key(libc::SYS_fchmodat, 1, 0, Seccomp::MayRefuse, &[]), &Profile::Custom, rules),
            Cause::Seccomp { profile_requires: vec![] }
        );
    }

    #[test]
    fn the_sentence_names_the_coupling_and_the_kernels_own_requirement() {
        let rules = SeccompProfile::docker_default();
        let k = key(libc::SYS_fanotify_init, 1, 0, Seccomp::MayRefuse, &[]);
        let cause = cause(&k, &Profile::DockerDefault, rules);
        let seen = BTreeSet::from([(21, libc::SYS_fanotify_init as u32)]);
        assert_eq!(
            sentence(&k, &cause, &Profile::DockerDefault, rules, &seen),
            "blocked by seccomp: Docker's default profile allows fanotify_init only with CAP_SYS_ADMIN (uid 0), and the kernel also requires CAP_SYS_ADMIN for it"
        );
    }
}
