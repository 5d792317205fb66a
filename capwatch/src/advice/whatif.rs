//! What-if: which of a container's observed operations would have failed under another
//! capability set. The same judgement as the advice's, asked of a set instead of producing one:
//! an operation fails where the report holds its capability needed (or missing) and the set
//! lacks it, and an exec of a program with effective file capabilities fails where the set (the
//! bounding set, under Docker) lacks any of them. Checks the advice does not count (the
//! runtime's, moot, advisory, optional ones) break nothing here either.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{exec_needs, granted_mask, CapabilityReport, Report, Verdict};
use crate::{containers::Container, evidence::Evidence, filecaps, names};

/// The answer for one container and one set.
#[derive(Debug, Clone, Serialize)]
pub struct WhatIf {
    pub container: Container,
    /// The set asked about, as in `cap_add`: what the container would hold.
    pub capabilities: Vec<String>,
    /// Whether anything observed would have failed.
    pub breaks: bool,
    /// Each capability the set lacks that the application's operations needed.
    pub operations: Vec<Lacking>,
    /// Each exec that would fail for its program's file capabilities.
    pub execs: Vec<FailingExec>,
}

/// Operations that would fail for want of one capability: one syscall's, or, where no check was
/// recorded (a call Docker's seccomp profile refused without it), the capability's.
#[derive(Debug, Clone, Serialize)]
pub struct Lacking {
    /// As in `cap_add`.
    pub capability: String,
    pub syscall: Option<String>,
    pub count: u64,
    pub programs: Vec<String>,
    /// The advice's reason for the capability.
    pub why: String,
}

/// An exec that would fail with EPERM.
#[derive(Debug, Clone, Serialize)]
pub struct FailingExec {
    pub path: String,
    pub program: String,
    pub count: u64,
    /// As getcap shows them: `cap_net_raw=ep`.
    pub file_capabilities: String,
    /// Those of its permitted set the set lacks, as in `cap_add`.
    pub lacking: Vec<String>,
}

/// The set `docker run --cap-add ADD --cap-drop DROP` would give, relative to what the container
/// holds now where anything is dropped: with only additions, `--cap-drop ALL` is implied, as in
/// the advice's flags. Names with or without `CAP_`, any case, or `ALL`.
pub fn set_of(container: &Container, add: &[String], drop: &[String]) -> Result<u64, String> {
    let mask = |list: &[String]| -> Result<u64, String> {
        list.iter().filter(|name| !name.is_empty()).try_fold(0u64, |mask, name| {
            if name.eq_ignore_ascii_case("ALL") {
                return Ok(names::all_capabilities());
            }
            names::capability_number(name).map(|n| mask | 1 << n).ok_or_else(|| {
                format!("\"{}\" is not a capability: name one as Docker does, such as NET_RAW", names::shown(name))
            })
        })
    };
    let (add, drop_mask) = (mask(add)?, mask(drop)?);
    let base = match drop.is_empty() {
        true => 0,
        false => granted_mask(container).unwrap_or(super::DOCKER_DEFAULT_CAPS) & !drop_mask,
    };
    Ok(base | add)
}

/// What would fail under `set`, judged from the container's report and its evidence.
pub fn whatif(report: &Report, evidence: &Evidence, set: u64) -> WhatIf {
    let short = |cap: u32| names::capability(cap).trim_start_matches("CAP_").to_string();
    let needs = exec_needs(&evidence.execs);
    let exec_only = |c: &&CapabilityReport| {
        c.used.is_none()
            && c.denied.is_none()
            && c.kept.is_none()
            && needs.iter().any(|(_, caps)| caps.permitted & (1 << c.number) != 0)
    };
    let operations: Vec<Lacking> = report
        .capabilities
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Needed | Verdict::Missing | Verdict::Unavailable))
        .filter(|c| set & (1 << c.number) == 0)
        // Needed only by an exec: listed with the execs.
        .filter(|c| !exec_only(c))
        .flat_map(|c| {
            let mut calls: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
            for call in [&c.used, &c.denied, &c.kept].into_iter().flatten().flat_map(|u| &u.by_syscall) {
                let entry = calls.entry(call.syscall.clone()).or_default();
                entry.0 += call.count;
                entry.1.extend(call.programs.iter().cloned());
            }
            let lacking = |syscall: Option<String>, count: u64, programs: BTreeSet<String>| Lacking {
                capability: short(c.number),
                syscall,
                count,
                programs: programs.into_iter().collect(),
                why: c.reason.clone(),
            };
            match calls.is_empty() {
                true => vec![lacking(None, 0, BTreeSet::new())],
                false => calls
                    .into_iter()
                    .map(|(syscall, (count, programs))| lacking(Some(syscall), count, programs))
                    .collect(),
            }
        })
        .collect();
    let execs: Vec<FailingExec> = needs
        .into_iter()
        .filter(|(_, caps)| caps.permitted & !set != 0)
        .map(|(exec, caps)| FailingExec {
            path: exec.path.clone(),
            program: exec.program.clone(),
            count: exec.count,
            file_capabilities: filecaps::describe(&caps),
            lacking: names::mask_bits(caps.permitted & !set).map(short).collect(),
        })
        .collect();
    WhatIf {
        container: report.container.clone(),
        capabilities: names::mask_bits(set).map(short).collect(),
        breaks: !operations.is_empty() || !execs.is_empty(),
        operations,
        execs,
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use capwatch_common::{CapKey, Origin, Sample, Verdict as Answer};

    use super::*;
    use crate::{
        advice,
        containers::Granted,
        evidence::{CheckEvidence, ExecEvidence},
        filecaps::{FileCaps, Found},
    };

    fn container() -> Container {
        let granted = Granted { cap_eff: Some(advice::DOCKER_DEFAULT_CAPS), ..Default::default() };
        Container::for_tests("c", "web", Some(granted))
    }

    fn chown() -> CheckEvidence {
        CheckEvidence {
            key: CapKey { cgroup_id: 0, cap: 0, syscall: 92, verdict: Answer::Granted, origin: Origin::App, flags: 0 },
            count: 3,
            first_seen: UNIX_EPOCH,
            last_seen: UNIX_EPOCH,
            sample: Sample { tid: 1, pid: 1, uid: 0, gid: 0, comm: *b"chown\0\0\0\0\0\0\0\0\0\0\0" },
            call_site: None,
            judged: 0,
        }
    }

    fn ping() -> ExecEvidence {
        ExecEvidence {
            origin: Origin::App,
            path: "/bin/ping".into(),
            count: 2,
            first_seen: UNIX_EPOCH,
            last_seen: UNIX_EPOCH,
            program: "ping".into(),
            found: Found::Caps(FileCaps { permitted: 1 << 13, inheritable: 0, effective: true }),
        }
    }

    fn ask(add: &[&str], drop: &[&str]) -> WhatIf {
        let evidence = Evidence { checks: vec![chown()], execs: vec![ping()], ..Default::default() };
        let report = advice::report(container(), &evidence);
        let words = |list: &[&str]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
        let set = set_of(&report.container, &words(add), &words(drop)).unwrap();
        whatif(&report, &evidence, set)
    }

    #[test]
    fn the_advised_set_breaks_nothing() {
        let answer = ask(&["CHOWN", "net_raw"], &[]);
        assert!(!answer.breaks, "{answer:?}");
        assert_eq!(answer.capabilities, ["CHOWN", "NET_RAW"]);
    }

    #[test]
    fn a_set_without_a_used_capability_fails_its_operations_and_execs() {
        let answer = ask(&["CAP_NET_RAW"], &[]);
        assert!(answer.breaks);
        assert_eq!(answer.operations.len(), 1, "{answer:?}");
        let chown = &answer.operations[0];
        assert_eq!((chown.capability.as_str(), chown.count), ("CHOWN", 3));
        assert_eq!(chown.syscall.as_deref(), Some("chown"));
        assert!(answer.execs.is_empty(), "{answer:?}");

        let answer = ask(&[], &["NET_RAW"]);
        assert!(answer.operations.is_empty(), "{answer:?}");
        assert_eq!(answer.execs.len(), 1, "{answer:?}");
        assert_eq!(answer.execs[0].lacking, ["NET_RAW"]);
        assert_eq!(answer.execs[0].file_capabilities, "cap_net_raw=ep");
    }

    #[test]
    fn unknown_names_are_refused() {
        let err = set_of(&container(), &["NET_RAWR".into()], &[]).unwrap_err();
        assert!(err.contains("NET_RAWR"), "{err}");
        assert_eq!(set_of(&container(), &["ALL".into()], &[]).unwrap(), names::all_capabilities());
    }
}
