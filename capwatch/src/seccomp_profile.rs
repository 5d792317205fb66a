//! Docker's seccomp profiles: which syscalls a profile allows only with a capability
//! (`includes.caps`). Docker's default profile couples, e.g., fanotify_init and unshare to
//! CAP_SYS_ADMIN, so dropping a capability also closes syscalls, and adding one opens them.

use std::collections::BTreeSet;

use serde::Deserialize;

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
        let native = |f: &Filter| f.arches.is_empty() || f.arches.iter().any(|a| NATIVE_ARCHES.contains(&a.as_str()));
        let allowing = self.syscalls.iter().filter(|r| {
            r.action == "SCMP_ACT_ALLOW"
                && r.names.iter().any(|n| n == syscall)
                && native(&r.includes)
                && !(r.excludes.arches.iter().any(|a| NATIVE_ARCHES.contains(&a.as_str())))
        });
        let mut caps = BTreeSet::new();
        for rule in allowing {
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
}
