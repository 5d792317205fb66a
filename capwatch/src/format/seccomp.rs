//! The least privilege in syscalls as the consumers load it: a Docker/runc seccomp profile, and
//! the Security Profiles Operator's `SeccompProfile` object with the securityContext that uses it.

use serde_json::json;

use crate::{
    advice::{Report, SyscallAdvice},
    seccomp_profile::MARKER,
};

/// Docker's and runc's profile format; its `comment` says what it rests on and what it leaves out.
pub fn docker(report: &Report) -> String {
    let Some(advice) = &report.syscalls else { return String::new() };
    let profile = json!({
        "comment": comments(report, advice),
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": advice.rules,
    });
    serde_json::to_string_pretty(&profile).expect("profiles serialize") + "\n"
}

/// The Security Profiles Operator's `SeccompProfile` (security-profiles-operator.x-k8s.io/v1beta1),
/// its notes as YAML comments, then the pod's securityContext that uses it once the operator has
/// installed it on the node (`operator/NAMESPACE/NAME.json`).
pub fn k8s(report: &Report) -> String {
    let Some(advice) = &report.syscalls else { return String::new() };
    let name = object_name(&report.container.name);
    let mut yaml: String = comments(report, advice).iter().map(|c| format!("# {c}\n")).collect();
    yaml.push_str("apiVersion: security-profiles-operator.x-k8s.io/v1beta1\nkind: SeccompProfile\n");
    yaml.push_str(&format!("metadata:\n  name: {name}\nspec:\n"));
    yaml.push_str("  defaultAction: SCMP_ACT_ERRNO\n  architectures:\n    - SCMP_ARCH_X86_64\n  syscalls:\n");
    for rule in &advice.rules {
        yaml.push_str(&format!("    # {}\n    - action: {}\n", rule.comment, rule.action));
        if let Some(errno) = rule.errno_ret {
            yaml.push_str(&format!("      errnoRet: {errno}\n"));
        }
        yaml.push_str("      names:\n");
        for syscall in &rule.names {
            yaml.push_str(&format!("        - {syscall}\n"));
        }
        if !rule.args.is_empty() {
            yaml.push_str("      args:\n");
            for arg in &rule.args {
                let fields = arg.as_object().into_iter().flatten().filter(|(_, v)| !v.is_null());
                for (i, (key, value)) in fields.enumerate() {
                    let lead = if i == 0 { "        - " } else { "          " };
                    yaml.push_str(&format!("{lead}{key}: {value}\n"));
                }
            }
        }
    }
    yaml.push_str("---\n# the pod's (or its container's) securityContext, with the profile in the pod's namespace:\n");
    yaml.push_str(&format!(
        "securityContext:\n  seccompProfile:\n    type: Localhost\n    localhostProfile: operator/NAMESPACE/{name}.json\n"
    ));
    yaml
}

/// The profile in one paragraph, for the report's table.
pub fn summary(advice: &SyscallAdvice) -> String {
    let mut text = format!(
        "seccomp: {} syscalls allowed, {} more for the runtime (--format seccomp writes the profile)",
        advice.allowed.len(),
        advice.runtime.len()
    );
    for left in &advice.left_out {
        text.push_str(&format!(
            "; left out: {} (Docker's default allows it only with {}, which the advice drops)",
            left.syscall,
            left.capabilities.join(" or ")
        ));
    }
    for unlocked in &advice.unlocked {
        text.push_str(&format!("; allowed with the advice though refused while watched: {}", unlocked.syscall));
    }
    if !advice.refused.is_empty() {
        text.push_str(&format!("; refused by its profile, not allowed: {}", advice.refused.join(", ")));
    }
    text
}

fn comments(report: &Report, advice: &SyscallAdvice) -> Vec<String> {
    let c = &report.container;
    let mut lines = vec![format!(
        "{MARKER} for {} ({}), from the syscalls it made while capwatch watched it{}",
        c.name,
        c.image.as_deref().unwrap_or("no image"),
        match (&report.observed_from, &report.observed_to) {
            (Some(from), Some(to)) => format!(" ({from} to {to})"),
            _ => String::new(),
        }
    )];
    lines.push(format!("run it with {}", super::docker(&report.cap_add)));
    for left in &advice.left_out {
        lines.push(format!(
            "left out: {} (Docker's default profile allows it only with {}, which the capability advice drops)",
            left.syscall,
            left.capabilities.join(" or ")
        ));
    }
    for unlocked in &advice.unlocked {
        lines.push(format!(
            "allowed, though refused while watched: {} (Docker's default allows it with {}, which the capability advice adds)",
            unlocked.syscall,
            unlocked.capabilities.join(" or ")
        ));
    }
    if !advice.refused.is_empty() {
        lines.push(format!(
            "refused by the container's profile while watched, so not allowed here either: {}",
            advice.refused.join(", ")
        ));
    }
    if !advice.exec_only.is_empty() {
        lines.push(format!(
            "made only by docker exec sessions (health checks among them): {}",
            advice.exec_only.join(", ")
        ));
    }
    lines.push("x86-64 syscalls only: 32-bit (x86, x32) calls are refused".into());
    lines.extend(report.uncertain.iter().map(|u| format!("uncertain: {u}")));
    lines
}

/// A Kubernetes object name (RFC 1123 subdomain) from a container's name.
fn object_name(name: &str) -> String {
    let mut out: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|ch| if ch.is_ascii_alphanumeric() || ch == '.' || ch == '-' { ch } else { '-' })
        .collect();
    out = out.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    out.truncate(253);
    if out.is_empty() {
        "capwatch-profile".into()
    } else {
        out
    }
}
