//! Docker's seccomp profiles: which syscalls a profile allows only with a capability
//! (`includes.caps`). Docker's default profile couples, e.g., fanotify_init and unshare to
//! CAP_SYS_ADMIN, so dropping a capability also closes syscalls, and adding one opens them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The rules of a Docker seccomp profile that matter here: which syscalls it allows only with
/// a capability.
#[derive(Debug, Deserialize)]
pub struct SeccompProfile {
    syscalls: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    names: Vec<String>,
    action: String,
    #[serde(default, rename = "errnoRet")]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Default, Deserialize)]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
}

/// A rule of a profile capwatch writes, in the format Docker and runc load: unconditional on
/// capabilities and architecture (those were resolved when it was written).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WrittenRule {
    pub names: Vec<String>,
    pub action: String,
    #[serde(rename = "errnoRet", skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

/// Begins the first comment of every profile capwatch writes (format/seccomp.rs): a
/// container's configuration holding it runs under capwatch's own profile.
pub const MARKER: &str = "capwatch least-privilege profile";

/// Docker's names for this architecture in a profile's `arches`.
const NATIVE_ARCHES: [&str; 2] = ["amd64", "x86_64"];

impl SeccompProfile {
    /// Docker's default profile, as carried in capwatch/data (its source is named there).
    pub fn docker_default() -> &'static Self {
        static PROFILE: std::sync::OnceLock<SeccompProfile> = std::sync::OnceLock::new();
        PROFILE.get_or_init(|| {
            serde_json::from_str(include_str!("../data/docker-default-seccomp.json"))
                .expect("the carried profile parses")
        })
    }

    /// The capabilities with which the profile allows `syscall` on this architecture, when it
    /// does not allow it without one; empty when it allows it anyway or never does.
    pub fn required_caps(&self, syscall: &str) -> Vec<String> {
        let mut caps = BTreeSet::new();
        for rule in self.allowing(syscall) {
            let unconditional = rule.includes.caps.is_empty()
                && rule.excludes.caps.is_empty()
                && rule.args.as_ref().is_none_or(Vec::is_empty);
            if unconditional {
                return Vec::new();
            }
            caps.extend(rule.includes.caps.iter().cloned());
        }
        caps.into_iter().collect()
    }

    /// Of the capabilities that open `syscall` (`required_caps`), the one to add: the one the
    /// kernel was seen checking in it (`kernel_checks`: (capability, syscall) numbers), or else the
    /// one whose rule is the most specific. Docker's profile opens a syscall with the capability
    /// its kernel code asks for in a rule of its own (syslog with CAP_SYSLOG, settimeofday with
    /// CAP_SYS_TIME), and also lists many in CAP_SYS_ADMIN's catch-all rule.
    pub fn unlocking_cap(&self, syscall: &str, number: u32, kernel_checks: &BTreeSet<(u32, u32)>) -> Option<String> {
        let required = self.required_caps(syscall);
        let checked = required
            .iter()
            .find(|c| crate::names::capability_number(c).is_some_and(|n| kernel_checks.contains(&(n, number))));
        if let Some(cap) = checked {
            return Some(cap.clone());
        }
        self.allowing(syscall)
            .filter(|r| r.includes.caps.len() == 1 && required.contains(&r.includes.caps[0]))
            .min_by_key(|r| r.names.len())
            .map(|r| r.includes.caps[0].clone())
    }

    /// The profile's rules for the syscalls in `names`, as they apply on this architecture to a
    /// container holding `caps` (names as `CAP_SYS_ADMIN`), each narrowed to those syscalls.
    /// moby profiles/seccomp/seccomp_linux.go setupSeccomp: a rule is skipped when the container
    /// holds any capability of its `excludes.caps` or lacks one of its `includes.caps`, or when
    /// its architectures leave this one out.
    pub fn rules_for(&self, names: &BTreeSet<String>, caps: &BTreeSet<String>) -> Vec<WrittenRule> {
        let native = |f: &Filter| f.arches.iter().any(|a| NATIVE_ARCHES.contains(&a.as_str()));
        self.syscalls
            .iter()
            .filter(|r| r.includes.arches.is_empty() || native(&r.includes))
            .filter(|r| !native(&r.excludes))
            .filter(|r| r.includes.caps.iter().all(|c| caps.contains(c)))
            .filter(|r| !r.excludes.caps.iter().any(|c| caps.contains(c)))
            .filter_map(|r| {
                let names: Vec<String> = r.names.iter().filter(|n| names.contains(*n)).cloned().collect();
                (!names.is_empty()).then(|| WrittenRule {
                    names,
                    action: r.action.clone(),
                    errno_ret: r.errno_ret,
                    args: r.args.clone().unwrap_or_default(),
                    comment: String::new(),
                })
            })
            .collect()
    }

    /// Every syscall the profile names.
    pub fn names(&self) -> BTreeSet<String> {
        self.syscalls.iter().flat_map(|r| r.names.iter().cloned()).collect()
    }

    /// The profile's rules that allow `syscall` on this architecture.
    fn allowing<'a>(&'a self, syscall: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        let native = |f: &Filter| f.arches.is_empty() || f.arches.iter().any(|a| NATIVE_ARCHES.contains(&a.as_str()));
        self.syscalls.iter().filter(move |r| {
            r.action == "SCMP_ACT_ALLOW"
                && r.names.iter().any(|n| n == syscall)
                && native(&r.includes)
                && !(r.excludes.arches.iter().any(|a| NATIVE_ARCHES.contains(&a.as_str())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_couples_syscalls_to_capabilities() {
        let rules = SeccompProfile::docker_default();
        assert_eq!(rules.required_caps("fanotify_init"), ["CAP_SYS_ADMIN"]);
        assert_eq!(rules.required_caps("unshare"), ["CAP_SYS_ADMIN"]);
        assert_eq!(rules.required_caps("init_module"), ["CAP_SYS_MODULE"]);
        assert_eq!(rules.required_caps("settimeofday"), ["CAP_SYS_TIME"]);
        assert!(rules.required_caps("openat").is_empty());
        assert!(rules.required_caps("fanotify_mark").is_empty());
    }

    #[test]
    fn the_capability_to_add_is_the_kernels_or_the_most_specific_rules() {
        let rules = SeccompProfile::docker_default();
        let syslog = libc::SYS_syslog as u32;
        assert_eq!(rules.required_caps("syslog"), ["CAP_SYSLOG", "CAP_SYS_ADMIN"]);
        assert_eq!(rules.unlocking_cap("syslog", syslog, &BTreeSet::new()).as_deref(), Some("CAP_SYSLOG"));
        let seen = BTreeSet::from([(21, syslog)]);
        assert_eq!(rules.unlocking_cap("syslog", syslog, &seen).as_deref(), Some("CAP_SYS_ADMIN"));
        assert_eq!(rules.unlocking_cap("mount", 165, &BTreeSet::new()).as_deref(), Some("CAP_SYS_ADMIN"));
        assert_eq!(rules.unlocking_cap("openat", 257, &BTreeSet::new()), None);
    }
}
