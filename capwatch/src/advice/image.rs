//! The least privilege of an image: what every container of it that capwatch saw needed, as
//! one answer (`capwatch report --image`). A capability is in it if any container needed it; a
//! syscall is allowed if any container made it; each container's uncertainty stays, named.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{seccomp, Report, Verdict};
use crate::{cause::Profile, evidence::Evidence, names};

/// The containers a merged report rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Merged {
    pub image: String,
    /// Their names.
    pub containers: Vec<String>,
}

/// One report for `image` from its containers' reports and the evidence each was judged on.
/// `parts` is not empty.
pub fn merge(image: &str, parts: &[(Report, Evidence)]) -> Report {
    let mut merged = parts[0].0.clone();
    let named = |r: &Report, what: &str| format!("{}: {what}", r.container.name);
    let mut caps: BTreeSet<(u32, String)> = BTreeSet::new();
    let mut capabilities = Vec::new();
    let mut uncertain = Vec::new();
    let mut alternatives = Vec::new();
    let mut file_capabilities = BTreeSet::new();
    let mut calls = Vec::new();
    let mut refused = BTreeSet::new();
    let mut docker_default = true;
    for (report, evidence) in parts {
        for cap in &report.cap_add {
            caps.insert((names::capability_number(cap).unwrap_or(u32::MAX), cap.clone()));
        }
        // The capabilities of its least privilege, as `report` chose them.
        let advised = report.capabilities.iter().filter(|c| matches!(c.verdict, Verdict::Needed | Verdict::Missing));
        for capability in advised {
            if !capabilities.iter().any(|c: &super::CapabilityReport| c.capability == capability.capability) {
                let mut capability = capability.clone();
                capability.reason = named(report, &capability.reason);
                capabilities.push(capability);
            }
        }
        uncertain.extend(report.uncertain.iter().map(|u| named(report, u)));
        for alternative in &report.alternatives {
            if !alternatives.contains(alternative) {
                alternatives.push(alternative.clone());
            }
        }
        file_capabilities.extend(report.file_capabilities.iter().cloned());
        calls.extend(evidence.calls.iter().copied());
        // Every refusal, whether the container's own advice undid it or not: the merged advice
        // judges them again.
        if let Some(syscalls) = &report.syscalls {
            refused.extend(syscalls.refused.iter().chain(syscalls.unlocked.iter().map(|u| &u.syscall)).cloned());
        }
        docker_default &= Profile::of(&report.container) == Profile::DockerDefault;
        merged.observed_from = earliest(merged.observed_from, report.observed_from.clone(), |a, b| a <= b);
        merged.observed_to = earliest(merged.observed_to, report.observed_to.clone(), |a, b| a >= b);
    }
    capabilities.sort_by_key(|c| c.number);
    merged.cap_add = caps.into_iter().map(|(_, cap)| cap).collect();
    merged.capabilities = capabilities;
    merged.uncertain = uncertain;
    merged.alternatives = alternatives;
    merged.file_capabilities = file_capabilities.into_iter().collect();
    merged.syscalls = seccomp::advise(&calls, &refused, docker_default, &merged.cap_add);
    merged.observed_seconds = parts.iter().map(|(r, _)| r.observed_seconds).max().unwrap_or(0);
    merged.verified = None;
    merged.container.name = format!("image {image}");
    merged.merged = Some(Merged {
        image: image.to_string(),
        containers: parts.iter().map(|(r, _)| r.container.name.clone()).collect(),
    });
    merged
}

/// The one of `a` and `b` that `first` puts first, or whichever is known.
fn earliest(a: Option<String>, b: Option<String>, first: impl Fn(&str, &str) -> bool) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if first(&a, &b) { a } else { b }),
        (a, b) => a.or(b),
    }
}
