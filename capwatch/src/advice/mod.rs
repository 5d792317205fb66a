//! Which capabilities a container needs: verdicts from what the store recorded about it, and
//! the least privilege it can run with. The rules for checks that are not needs are in
//! `rules`.

pub mod image;
pub mod rules;
pub mod seccomp;
pub mod whatif;

use std::collections::{BTreeMap, BTreeSet};

use capwatch_common::{Origin, Site, Verdict as Answer, CAP_FLAG_FOREIGN_CRED, CAP_FLAG_OUTER_USERNS};
use serde::Serialize;

use self::rules::{CAP_DAC_OVERRIDE, FALLBACKS};
pub use self::seccomp::SyscallAdvice;
use crate::{
    cause::{self, Cause, Profile},
    containers::Container,
    evidence::{CheckEvidence, Evidence, ExecEvidence, FailureEvidence},
    filecaps::{self, FileCaps, Found},
    names,
    seccomp_profile::SeccompProfile,
};

/// The reason of a capability the kernel never checked for anyone in the container.
pub const NEVER_CHECKED: &str = "never checked while observed";

/// Docker's default capability set (moby's oci/caps/defaults.go).
pub const DOCKER_DEFAULT_CAPS: u64 = 0x00000000a80425fb;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The application used it: a granted, consequential check.
    Needed,
    /// It was never needed while observed; `reason` says why.
    NotNeeded,
    /// It was denied and a syscall failed because of it.
    Missing,
    /// The application used it, but tolerates its refusal by design; `reason` says what is lost.
    /// Left out of the least privilege.
    Optional,
    /// Needed, but the host cannot grant it (its bounding set lacks it): left out of the least
    /// privilege, which could not start the container otherwise.
    Unavailable,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub syscalls: Vec<String>,
    pub programs: Vec<String>,
    /// The same, syscall by syscall.
    pub by_syscall: Vec<SyscallUsage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyscallUsage {
    pub syscall: String,
    pub count: u64,
    pub programs: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CapabilityReport {
    pub capability: String,
    pub number: u32,
    /// Whether the container held it at start; None when no runtime said.
    pub granted: Option<bool>,
    /// The application's consequential granted checks.
    pub used: Option<Usage>,
    /// The application's denied checks.
    pub denied: Option<Usage>,
    /// The application's capsets that kept it while narrowing the permitted set: no checks,
    /// but a capset naming it fails without it.
    pub kept: Option<Usage>,
    pub verdict: Verdict,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub container: Container,
    /// From the first to the latest thing seen in the container.
    pub observed_from: Option<String>,
    pub observed_to: Option<String>,
    pub observed_seconds: u64,
    pub capabilities: Vec<CapabilityReport>,
    /// The least privilege: `--cap-drop ALL` and these.
    pub cap_add: Vec<String>,
    /// What the advice could not see, each a sentence: it may lack what these hide.
    pub uncertain: Vec<String>,
    /// Ways around a capability of the least privilege, beside it (never instead of it).
    pub alternatives: Vec<Alternative>,
    /// The programs the application exec'd whose files carry capabilities: they gain them at
    /// exec, which `no_new_privs` (systemd's NoNewPrivileges=) would stop.
    pub file_capabilities: Vec<String>,
    /// The least privilege in syscalls, where they were recorded: a seccomp profile.
    pub syscalls: Option<SyscallAdvice>,
    /// The latest `capwatch verify` of the container, if it had one.
    pub verified: Option<Verified>,
    /// For an image's report: the containers it merges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged: Option<image::Merged>,
}

/// What `capwatch verify` last concluded.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// `proven minimal`, `sufficient, not minimal (X can go)`, `not sufficient (…)`.
    pub verdict: String,
    /// The set it tried, as in `cap_add`.
    pub capabilities: Vec<String>,
    pub at: String,
}

/// A way to run without one capability of the least privilege.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alternative {
    /// As in `cap_add`.
    pub capability: String,
    /// What to do instead, as a `docker run` flag or a change to the image.
    pub instead: String,
    pub why: String,
}

/// A program whose file capabilities make its exec need capabilities in the bounding set.
struct ExecNeed<'a> {
    path: &'a str,
    caps: FileCaps,
}

/// Builds a container's report from what the store recorded of it.
pub fn report(container: Container, evidence: &Evidence) -> Report {
    let Evidence { checks: caps, failures, execs, calls, losses, kernel_checks, host_bounding } = evidence;
    let granted_mask = granted_mask(&container);
    let mut numbers: BTreeSet<u32> = caps.iter().map(|r| r.key.cap).collect();
    if let Some(mask) = granted_mask {
        numbers.extend(names::mask_bits(mask));
    }
    let app_execs = || execs.iter().filter(|e| e.origin == Origin::App);
    let exec_needs: Vec<ExecNeed<'_>> =
        exec_needs(execs).into_iter().map(|(e, caps)| ExecNeed { path: &e.path, caps }).collect();
    numbers.extend(exec_needs.iter().flat_map(|n| names::mask_bits(n.caps.permitted)));
    let missing = missing_caps(failures, &Profile::of(&container), kernel_checks);
    // A call refused before any check (seccomp) leaves its capability in no check.
    numbers.extend(missing.keys());
    // Nor does a call Docker's default profile let through only for a capability.
    let opening = match Profile::of(&container) {
        Profile::DockerDefault => seccomp::opening_caps(calls, granted_mask, kernel_checks),
        _ => BTreeMap::new(),
    };
    numbers.extend(opening.keys());
    let capabilities: Vec<CapabilityReport> = numbers
        .into_iter()
        .map(|cap| {
            let rows: Vec<&CheckEvidence> = caps.iter().filter(|r| r.key.cap == cap).collect();
            let needed_by: Vec<&ExecNeed<'_>> =
                exec_needs.iter().filter(|n| n.caps.permitted & (1 << cap) != 0).collect();
            let granted = granted_mask.map(|m| m & (1 << cap) != 0);
            let mut report = judge(cap, granted, &rows, caps, missing.get(&cap), opening.get(&cap));
            if !needed_by.is_empty() {
                let files: Vec<String> =
                    needed_by.iter().map(|n| format!("{} carries {}", n.path, filecaps::describe(&n.caps))).collect();
                let exec =
                    format!("{}: execve fails without {} in the bounding set", files.join(", "), report.capability);
                report.reason = match report.verdict {
                    Verdict::Needed | Verdict::Missing => format!("{}; {exec}", report.reason),
                    _ => exec,
                };
                if report.verdict != Verdict::Missing {
                    report.verdict = Verdict::Needed;
                }
            }
            report
        })
        .collect();
    let mut capabilities = capabilities;
    rules::dac_override_covers_reads(&mut capabilities, caps);
    if let Some(bounding) = host_bounding {
        rules::only_what_the_host_can_grant(&mut capabilities, *bounding);
    }
    let cap_add = capabilities
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Needed | Verdict::Missing))
        .map(|c| c.capability.trim_start_matches("CAP_").to_string())
        .collect();
    let alternatives =
        rules::alternatives(&capabilities, caps, &exec_needs.iter().map(|n| (n.path, n.caps)).collect::<Vec<_>>());
    let unreadable = app_execs().filter_map(|e| match &e.found {
        Found::Unreadable { reason } => Some(format!(
            "the file capabilities of {} could not be read ({reason}): the advice may lack what its exec needs",
            e.path
        )),
        _ => None,
    });
    let lost = losses.iter().filter(|(_, n)| *n > 0).map(|(loss, n)| {
        format!(
            "the kernel side lost {n} event(s) ({}) while the container was observed: the advice may be incomplete",
            loss.name()
        )
    });
    // Needed only because capset kept it: the one need capwatch infers rather than sees.
    let kept_only = capabilities.iter().filter(|c| {
        c.verdict == Verdict::Needed
            && c.used.is_none()
            && c.kept.is_some()
            && !exec_needs.iter().any(|n| n.caps.permitted & (1 << c.number) != 0)
    });
    let kept_only = kept_only.map(|c| rules::kept_uncertain(&c.capability));
    let profile = Profile::of(&container);
    let refused_keeps: u64 = failures
        .iter()
        .filter(|f| f.key.origin == Origin::App && cause_of(f, &profile) == Cause::KeptCapabilities)
        .map(|f| f.count)
        .sum();
    let refused_keeps = (refused_keeps > 0).then(|| rules::refused_keeps_uncertain(refused_keeps));
    let uncertain = kept_only.chain(refused_keeps).chain(unreadable).chain(lost).collect();
    let file_capabilities: BTreeSet<String> = app_execs()
        .filter(|e| matches!(&e.found, Found::Caps(caps) if caps.permitted != 0))
        .map(|e| e.path.clone())
        .collect();
    let cap_add: Vec<String> = cap_add;
    let refused = seccomp::refused(failures, |f| cause_of(f, &profile));
    let syscalls = seccomp::advise(calls, &refused, profile == Profile::DockerDefault, &cap_add);
    let observed = evidence.observed();
    let observed_seconds = observed.map_or(0, |(from, to)| to.duration_since(from).map_or(0, |d| d.as_secs()));
    Report {
        observed_from: observed.map(|(from, _)| crate::clock::rfc3339(from)),
        observed_to: observed.map(|(_, to)| crate::clock::rfc3339(to)),
        observed_seconds,
        container,
        capabilities,
        cap_add,
        uncertain,
        alternatives,
        file_capabilities: file_capabilities.into_iter().collect(),
        syscalls,
        verified: None,
        merged: None,
    }
}

/// The application's execs of programs whose file capabilities make execve need them in the
/// bounding set. security/commoncap.c bprm_caps_from_vfs_caps: with the effective bit, execve
/// fails with EPERM unless every capability in the file's permitted set is in the bounding set.
pub fn exec_needs(execs: &[ExecEvidence]) -> Vec<(&ExecEvidence, FileCaps)> {
    execs
        .iter()
        .filter(|e| e.origin == Origin::App)
        .filter_map(|e| match &e.found {
            Found::Caps(caps) if caps.effective && caps.permitted != 0 => Some((e, *caps)),
            _ => None,
        })
        .collect()
}

/// The container's capabilities at start: the init process's effective set, or what its
/// runtime configuration implies.
pub fn granted_mask(container: &Container) -> Option<u64> {
    let granted = container.granted.as_ref()?;
    if let Some(eff) = granted.cap_eff {
        return Some(eff);
    }
    if granted.privileged {
        return Some(names::all_capabilities());
    }
    // moby's oci/caps TweakCapabilities: ALL among the additions starts from every capability and
    // takes the drops away; ALL among the drops starts from none and gives the additions;
    // otherwise the defaults, without the drops, with the additions.
    let all = |list: &[String]| list.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
    let mask_of =
        |list: &[String]| list.iter().filter_map(|c| names::capability_number(c)).fold(0u64, |m, n| m | 1 << n);
    let (add, drop) = (mask_of(&granted.cap_add), mask_of(&granted.cap_drop));
    Some(if all(&granted.cap_add) {
        names::all_capabilities() & !drop
    } else if all(&granted.cap_drop) {
        add
    } else {
        (DOCKER_DEFAULT_CAPS & !drop) | add
    })
}

/// Capabilities whose absence made one of the application's syscalls fail, each with what failed:
/// denied in the call (of a fallback chain, the capability that suffices), or refused by Docker's
/// default seccomp profile, which opens the call only with it (`SeccompProfile::unlocking_cap`).
fn missing_caps(
    failures: &[FailureEvidence],
    profile: &Profile,
    kernel_checks: &BTreeSet<(u32, u32)>,
) -> BTreeMap<u32, BTreeSet<String>> {
    let rules = SeccompProfile::docker_default();
    let mut missing: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for failure in failures.iter().filter(|f| f.key.origin == Origin::App) {
        let syscall = names::syscall(failure.key.syscall);
        match cause_of(failure, profile) {
            Cause::Capability { .. } => {
                let mut denied = failure.key.denied;
                for &(first, then) in &FALLBACKS {
                    if denied & (1 << first) != 0 && denied & (1 << then) != 0 && then == CAP_DAC_OVERRIDE {
                        denied &= !(1 << first);
                    }
                }
                for cap in names::mask_bits(denied) {
                    missing.entry(cap).or_default().insert(format!("denied in {syscall}, which failed because of it"));
                }
            }
            Cause::Seccomp { profile_requires } if !profile_requires.is_empty() => {
                let unlocking = rules.unlocking_cap(&syscall, failure.key.syscall, kernel_checks);
                if let Some(cap) = unlocking.as_deref().and_then(names::capability_number) {
                    missing.entry(cap).or_default().insert(format!(
                        "{syscall} was refused by Docker's default seccomp profile, which allows it only with this capability"
                    ));
                }
            }
            _ => {}
        }
    }
    missing
}

/// A failure's cause: as the daemon explained it when it was recorded, or from its evidence.
fn cause_of(failure: &FailureEvidence, profile: &Profile) -> Cause {
    match &failure.explained {
        Some(explained) => explained.cause.clone(),
        None => cause::cause(&failure.key, profile, SeccompProfile::docker_default()),
    }
}

fn judge(
    cap: u32,
    granted: Option<bool>,
    rows: &[&CheckEvidence],
    all: &[CheckEvidence],
    missing: Option<&BTreeSet<String>>,
    opening: Option<&BTreeSet<String>>,
) -> CapabilityReport {
    let app: Vec<&CheckEvidence> = rows.iter().copied().filter(|r| r.key.origin == Origin::App).collect();
    let (kept, app): (Vec<&CheckEvidence>, Vec<&CheckEvidence>) = app.into_iter().partition(|r| r.key.kept());
    let (outer_ns, app): (Vec<&CheckEvidence>, Vec<&CheckEvidence>) =
        app.into_iter().partition(|r| r.key.flags & CAP_FLAG_OUTER_USERNS != 0);
    let (substituted, app): (Vec<&CheckEvidence>, Vec<&CheckEvidence>) =
        app.into_iter().partition(|r| r.key.flags & CAP_FLAG_FOREIGN_CRED != 0);
    let (granted_rows, denied_rows): (Vec<&CheckEvidence>, Vec<&CheckEvidence>) =
        app.iter().partition(|r| r.key.verdict == Answer::Granted);
    let (advisory, granted_rows): (Vec<&CheckEvidence>, Vec<&CheckEvidence>) =
        granted_rows.into_iter().partition(|r| rules::advisory(r));
    let (moot, consequential): (Vec<&CheckEvidence>, Vec<&CheckEvidence>) =
        granted_rows.into_iter().partition(|r| r.key.moot().is_some());

    // Denied only against an outer user namespace, a capability is not the container's to add:
    // its failures are not `Missing`.
    let (verdict, reason) = if let (false, Some(lost)) = (consequential.is_empty(), rules::optional(cap)) {
        (Verdict::Optional, format!("used in {}, but optional: it {lost}", syscalls(&consequential).join(", ")))
    } else if !consequential.is_empty() {
        (Verdict::Needed, format!("used in {}", syscalls(&consequential).join(", ")))
    } else if let Some(opened) = opening {
        (Verdict::Needed, opened.iter().cloned().collect::<Vec<_>>().join("; "))
    } else if let Some(failed) = missing.filter(|_| outer_ns.is_empty() || !denied_rows.is_empty()) {
        let all_oom = !denied_rows.is_empty() && denied_rows.iter().all(|r| rules::at(r, Site::OomAdjust));
        match all_oom {
            true => (Verdict::Optional, format!("refused where it {}", rules::OOM_ADJUST_LOST)),
            false => (Verdict::Missing, failed.iter().cloned().collect::<Vec<_>>().join("; ")),
        }
    } else if let Some(refused) = rules::refused_requests(cap, &denied_rows) {
        (Verdict::Missing, refused)
    } else if let Some(kept) = rules::kept_by_capset(&kept) {
        (Verdict::Needed, kept)
    } else if !denied_rows.is_empty() {
        let covered = fallback_cover(cap, &denied_rows, all);
        match covered {
            Some(partner) => {
                (Verdict::NotNeeded, format!("denied, but {partner} was granted in the same call and sufficed"))
            }
            None => (
                Verdict::NotNeeded,
                format!("denied in {}, and nothing failed for want of it", syscalls(&denied_rows).join(", ")),
            ),
        }
    } else if !moot.is_empty() {
        let why: BTreeSet<&str> = moot.iter().filter_map(|r| r.key.moot()).map(rules::moot).collect();
        (
            Verdict::NotNeeded,
            format!("asked only where the answer changed nothing: {}", why.into_iter().collect::<Vec<_>>().join("; ")),
        )
    } else if !advisory.is_empty() {
        (
            Verdict::NotNeeded,
            format!("only advisory checks (kernel overcommit accounting in {})", syscalls(&advisory).join(", ")),
        )
    } else if !outer_ns.is_empty() {
        (
            Verdict::NotNeeded,
            format!(
                "checked against a user namespace above the container's own (in {}): only the host's namespace can grant it, --cap-add cannot help",
                syscalls(&outer_ns).join(", ")
            ),
        )
    } else if !substituted.is_empty() {
        (
            Verdict::NotNeeded,
            format!(
                "checked only against credentials the kernel substituted (in {}, e.g. overlayfs acting as its mounter): --cap-add cannot change that",
                syscalls(&substituted).join(", ")
            ),
        )
    } else if rows.iter().any(|r| r.key.origin == Origin::Runtime) || rows.iter().any(|r| r.key.origin == Origin::Exec)
    {
        let who: Vec<&str> = [(Origin::Runtime, "the runtime's setup"), (Origin::Exec, "docker exec sessions")]
            .into_iter()
            .filter(|(o, _)| rows.iter().any(|r| r.key.origin == *o))
            .map(|(_, who)| who)
            .collect();
        (Verdict::NotNeeded, format!("used only by {}", who.join(" and ")))
    } else {
        (Verdict::NotNeeded, NEVER_CHECKED.to_string())
    };
    CapabilityReport {
        capability: names::capability(cap).into_owned(),
        number: cap,
        granted,
        used: usage(&consequential),
        denied: usage(&denied_rows),
        kept: usage(&kept),
        verdict,
        reason,
    }
}

fn fallback_cover(cap: u32, denied: &[&CheckEvidence], all: &[CheckEvidence]) -> Option<String> {
    let partners: Vec<String> = denied.iter().filter_map(|r| partner_granted(cap, r.key.syscall, all)).collect();
    (partners.len() == denied.len()).then(|| partners.into_iter().next()).flatten()
}

/// The fallback partner of `cap` the application used in the same syscall, with its own
/// credentials (not those overlayfs substitutes, granted whatever the container holds).
fn partner_granted(cap: u32, syscall: u32, all: &[CheckEvidence]) -> Option<String> {
    FALLBACKS.iter().filter(|(first, _)| *first == cap).find_map(|&(_, partner)| {
        all.iter()
            .any(|r| r.key.cap == partner && r.key.syscall == syscall && rules::consequential_use(r))
            .then(|| names::capability(partner).into_owned())
    })
}

fn syscalls(rows: &[&CheckEvidence]) -> Vec<String> {
    rows.iter().map(|r| names::syscall(r.key.syscall).into_owned()).collect::<BTreeSet<_>>().into_iter().collect()
}

fn usage(rows: &[&CheckEvidence]) -> Option<Usage> {
    if rows.is_empty() {
        return None;
    }
    let programs: BTreeMap<String, ()> = rows.iter().map(|r| (names::comm(&r.sample.comm), ())).collect();
    let mut by_syscall: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
    for r in rows {
        let entry = by_syscall.entry(names::syscall(r.key.syscall).into_owned()).or_default();
        entry.0 += r.count;
        entry.1.insert(names::comm(&r.sample.comm));
    }
    let by_syscall = by_syscall
        .into_iter()
        .map(|(syscall, (count, programs))| SyscallUsage { syscall, count, programs: programs.into_iter().collect() })
        .collect();
    Some(Usage {
        count: rows.iter().map(|r| r.count).sum(),
        first_seen: crate::clock::rfc3339(rows.iter().map(|r| r.first_seen).min().expect("not empty")),
        last_seen: crate::clock::rfc3339(rows.iter().map(|r| r.last_seen).max().expect("not empty")),
        syscalls: syscalls(rows),
        programs: programs.into_keys().collect(),
        by_syscall,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use capwatch_common::{
        CapKey, FailKey, Moot, Sample, Seccomp, CAP_FLAG_KEPT, CAP_FLAG_MOOT_SHIFT, CAP_FLAG_NOAUDIT,
        JUDGED_ADVISORY_SITE, JUDGED_STACK_READ,
    };

    use super::{rules::advisory, *};
    use crate::{containers::Granted, evidence::ExecEvidence};

    fn checks_only(container: Container, caps: &[CheckEvidence], failures: &[FailureEvidence]) -> Report {
        with_execs(container, caps, failures, &[])
    }

    fn with_execs(
        container: Container,
        caps: &[CheckEvidence],
        failures: &[FailureEvidence],
        execs: &[ExecEvidence],
    ) -> Report {
        report(
            container,
            &Evidence {
                checks: caps.to_vec(),
                failures: failures.to_vec(),
                execs: execs.to_vec(),
                ..Evidence::default()
            },
        )
    }

    fn container(granted: Option<Granted>) -> Container {
        Container::for_tests("a", "app", granted)
    }

    fn row(cap: u32, syscall: u32, verdict: Answer, origin: Origin, call_site: Option<&str>) -> CheckEvidence {
        CheckEvidence {
            key: CapKey { cgroup_id: 0, cap, syscall, verdict, origin, flags: 0 },
            count: 3,
            first_seen: UNIX_EPOCH + Duration::from_secs(100),
            last_seen: UNIX_EPOCH + Duration::from_secs(160),
            sample: Sample { tid: 1, pid: 1, uid: 0, gid: 0, comm: *b"app\0\0\0\0\0\0\0\0\0\0\0\0\0" },
            call_site: call_site.map(Into::into),
            judged: 0,
        }
    }

    fn failure(syscall: u32, errno: u16, denied: &[u32]) -> FailureEvidence {
        FailureEvidence {
            key: FailKey {
                cgroup_id: 0,
                syscall,
                errno,
                origin: Origin::App,
                uid: 0,
                seccomp: Seccomp::None,
                denied: denied.iter().fold(0, |m, c| m | 1 << c),
            },
            count: 1,
            first_seen: UNIX_EPOCH + Duration::from_secs(120),
            last_seen: UNIX_EPOCH + Duration::from_secs(120),
            sample: Sample { tid: 1, pid: 1, uid: 0, gid: 0, comm: [0; 16] },
            explained: None,
        }
    }

    fn verdict_of(report: &Report, cap: u32) -> (Verdict, String) {
        let c = report.capabilities.iter().find(|c| c.number == cap).expect("listed");
        (c.verdict, c.reason.clone())
    }

    const SOCKET: u32 = 41;
    const MMAP: u32 = 9;
    const OPENAT: u32 = 257;

    #[test]
    fn advisory_runtime_and_exec_checks_are_not_needs() {
        let caps = [
            row(13, SOCKET, Answer::Granted, Origin::App, Some("inet_create ← __sock_create")),
            row(21, MMAP, Answer::Granted, Origin::App, Some("security_vm_enough_memory_mm ← __mmap_region")),
            row(8, 126, Answer::Granted, Origin::Runtime, Some("cap_capset")),
            row(12, 54, Answer::Granted, Origin::Exec, Some("do_ip_setsockopt")),
        ];
        let report = checks_only(
            container(Some(Granted { cap_eff: Some(DOCKER_DEFAULT_CAPS), ..Default::default() })),
            &caps,
            &[],
        );
        assert_eq!(verdict_of(&report, 13).0, Verdict::Needed);
        assert!(verdict_of(&report, 21).1.contains("advisory"));
        assert!(verdict_of(&report, 8).1.contains("runtime"));
        assert!(verdict_of(&report, 12).1.contains("exec"));
        assert_eq!(verdict_of(&report, 0), (Verdict::NotNeeded, "never checked while observed".into()));
        assert_eq!(report.cap_add, ["NET_RAW"]);
        assert_eq!(report.observed_seconds, 60);
    }

    #[test]
    fn a_denied_check_in_a_failed_call_is_missing_unless_a_fallback_sufficed() {
        let caps = [
            row(13, SOCKET, Answer::Denied, Origin::App, None),
            row(2, OPENAT, Answer::Denied, Origin::App, None),
            row(1, OPENAT, Answer::Granted, Origin::App, None),
            row(7, 105, Answer::Denied, Origin::App, None),
        ];
        let report = checks_only(container(None), &caps, &[failure(SOCKET, 1, &[13]), failure(105, 1, &[])]);
        assert_eq!(verdict_of(&report, 13).0, Verdict::Missing);
        let (verdict, reason) = verdict_of(&report, 2);
        assert_eq!(verdict, Verdict::NotNeeded);
        assert!(reason.contains("CAP_DAC_OVERRIDE"), "{reason}");
        assert_eq!(verdict_of(&report, 1).0, Verdict::Needed);
        // setuid(0) refused but succeeding (already uid 0) is no failure.
        assert_eq!(verdict_of(&report, 7).0, Verdict::NotNeeded);
        assert_eq!(report.cap_add, ["DAC_OVERRIDE", "NET_RAW"]);
    }

    #[test]
    fn of_a_fallback_chain_that_failed_the_capability_that_suffices_is_missing() {
        let caps =
            [row(2, OPENAT, Answer::Denied, Origin::App, None), row(1, OPENAT, Answer::Denied, Origin::App, None)];
        let report = checks_only(container(None), &caps, &[failure(OPENAT, 13, &[1, 2])]);
        assert_eq!(verdict_of(&report, 1).0, Verdict::Missing);
        assert_eq!(verdict_of(&report, 2).0, Verdict::NotNeeded);
        assert_eq!(report.cap_add, ["DAC_OVERRIDE"]);
    }

    #[test]
    fn checks_on_substituted_credentials_are_not_the_applications_need() {
        let mut overlay = row(21, 262, Answer::Granted, Origin::App, Some("ovl_getattr"));
        overlay.key.flags = CAP_FLAG_FOREIGN_CRED;
        let report = checks_only(container(None), &[overlay], &[]);
        let (verdict, reason) = verdict_of(&report, 21);
        assert_eq!(verdict, Verdict::NotNeeded);
        assert!(reason.contains("substituted") && reason.contains("--cap-add cannot"), "{reason}");
        assert!(report.cap_add.is_empty());
    }

    #[test]
    fn checks_against_an_outer_user_namespace_cannot_be_granted() {
        let mut mknod = row(27, 259, Answer::Denied, Origin::App, Some("vfs_mknod"));
        mknod.key.flags = CAP_FLAG_OUTER_USERNS;
        let report = checks_only(container(None), &[mknod], &[failure(259, 1, &[27])]);
        let (verdict, reason) = verdict_of(&report, 27);
        assert_eq!(verdict, Verdict::NotNeeded);
        assert!(reason.contains("user namespace") && reason.contains("--cap-add cannot help"), "{reason}");
        assert!(report.cap_add.is_empty());
    }

    #[test]
    fn noaudit_marks_advisory_only_where_no_call_site_was_recorded() {
        let mut probe = row(21, MMAP, Answer::Granted, Origin::App, None);
        probe.key.flags = CAP_FLAG_NOAUDIT | capwatch_common::CAP_FLAG_OPTS_KNOWN;
        assert!(advisory(&probe));
        // seccomp filter setup asks noaudit too, and its answer decides the call.
        let mut seccomp =
            row(21, 317, Answer::Granted, Origin::App, Some("ns_capable_noaudit ← seccomp_set_mode_filter"));
        seccomp.key.flags = probe.key.flags;
        assert!(!advisory(&seccomp));
    }

    #[test]
    fn granted_sets_follow_docker_flags_when_no_process_was_read() {
        let drop_all = Granted { cap_drop: vec!["ALL".into()], cap_add: vec!["NET_RAW".into()], ..Default::default() };
        assert_eq!(granted_mask(&container(Some(drop_all))), Some(1 << 13));
        let defaults =
            Granted { cap_add: vec!["SYS_ADMIN".into()], cap_drop: vec!["MKNOD".into()], ..Default::default() };
        assert_eq!(granted_mask(&container(Some(defaults))), Some((DOCKER_DEFAULT_CAPS | 1 << 21) & !(1 << 27)));
    }

    #[test]
    fn the_kernels_judgement_of_the_stack_decides_advisory_whatever_the_syscall_or_call_site() {
        // The overcommit accounting's check in mprotect, its stack judged in the kernel but not kept.
        let mut judged = row(21, 10, Answer::Granted, Origin::App, None);
        judged.judged = JUDGED_STACK_READ | JUDGED_ADVISORY_SITE;
        assert!(advisory(&judged));
        // Read and not advisory: a real CAP_SYS_ADMIN need, whatever its opts say.
        let mut real = row(21, 165, Answer::Granted, Origin::App, Some("security_vm_enough_memory_mm"));
        real.judged = JUDGED_STACK_READ;
        real.key.flags = CAP_FLAG_NOAUDIT | capwatch_common::CAP_FLAG_OPTS_KNOWN;
        assert!(!advisory(&real));
        let report = checks_only(container(None), &[judged, real], &[]);
        assert_eq!(verdict_of(&report, 21).0, Verdict::Needed);
        assert_eq!(verdict_of(&report, 21).1, "used in mount");
    }

    #[test]
    fn moot_checks_are_not_needs_and_say_why() {
        let mut capset = row(8, 126, Answer::Granted, Origin::App, Some("cap_capset"));
        capset.key.flags = Moot::CapsetWithinPermitted.raw() << CAP_FLAG_MOOT_SHIFT;
        let mut chmod = row(4, 90, Answer::Granted, Origin::App, None);
        chmod.key.flags = Moot::ChmodWithoutSetgid.raw() << CAP_FLAG_MOOT_SHIFT;
        let mut setuid = row(7, 105, Answer::Granted, Origin::App, None);
        setuid.key.flags = Moot::SetuidUnchanged.raw() << CAP_FLAG_MOOT_SHIFT;
        // A consequential setuid beside a moot one is a need.
        let setgid = row(6, 106, Answer::Granted, Origin::App, None);
        let report = checks_only(container(None), &[capset, chmod, setuid, setgid], &[]);
        for (cap, words) in [(8, "cap_capset"), (4, "setattr_prepare"), (7, "__sys_setuid")] {
            let (verdict, reason) = verdict_of(&report, cap);
            assert_eq!(verdict, Verdict::NotNeeded, "{cap}: {reason}");
            assert!(reason.contains(words), "{reason}");
        }
        assert_eq!(report.cap_add, ["SETGID"]);
    }

    #[test]
    fn a_capability_capset_kept_and_nothing_used_is_needed_and_said_uncertain() {
        const CAPSET: u32 = 126;
        let mut bind = row(10, CAPSET, Answer::Granted, Origin::App, None);
        bind.key.flags = CAP_FLAG_KEPT;
        // Kept and used: a need like any other, and nothing uncertain about it.
        let mut setuid = row(7, CAPSET, Answer::Granted, Origin::App, None);
        setuid.key.flags = CAP_FLAG_KEPT;
        let used = row(7, 105, Answer::Granted, Origin::App, None);
        // Kept by the runtime's capset: not the application's.
        let mut runtime = row(21, CAPSET, Answer::Granted, Origin::Runtime, None);
        runtime.key.flags = CAP_FLAG_KEPT;
        let report = checks_only(container(None), &[bind, setuid, used, runtime], &[]);
        let (verdict, reason) = verdict_of(&report, 10);
        assert_eq!(verdict, Verdict::Needed);
        assert!(reason.contains("kept by capset 3×") && reason.contains("cap_capset"), "{reason}");
        assert_eq!(verdict_of(&report, 7), (Verdict::Needed, "used in setuid".into()));
        assert_eq!(verdict_of(&report, 21).0, Verdict::NotNeeded);
        assert_eq!(report.cap_add, ["SETUID", "NET_BIND_SERVICE"]);
        assert_eq!(report.uncertain.len(), 1, "{:?}", report.uncertain);
        assert!(report.uncertain[0].starts_with("CAP_NET_BIND_SERVICE was kept by capset"), "{:?}", report.uncertain);
    }

    #[test]
    fn a_capset_refused_for_keeping_what_was_not_held_is_said_uncertain() {
        let report = checks_only(container(None), &[], &[failure(126, 1, &[])]);
        assert!(report.cap_add.is_empty());
        assert_eq!(report.uncertain.len(), 1, "{:?}", report.uncertain);
        assert!(report.uncertain[0].starts_with("capset failed 1× asking to keep"), "{:?}", report.uncertain);
    }

    #[test]
    fn audit_writes_are_optional_and_left_out() {
        let audit = row(29, 44, Answer::Granted, Origin::App, Some("audit_netlink_ok"));
        let report = checks_only(container(None), &[audit], &[]);
        let (verdict, reason) = verdict_of(&report, 29);
        assert_eq!(verdict, Verdict::Optional);
        assert!(reason.contains("records are lost"), "{reason}");
        assert!(report.cap_add.is_empty());
    }

    #[test]
    fn a_program_with_effective_file_capabilities_needs_them_in_the_bounding_set() {
        let exec = |path: &str, found: Found| ExecEvidence {
            origin: Origin::App,
            path: path.into(),
            count: 1,
            first_seen: UNIX_EPOCH,
            last_seen: UNIX_EPOCH,
            program: "ping".into(),
            found,
        };
        let ping = exec("/bin/ping", Found::Caps(FileCaps { permitted: 1 << 13, inheritable: 0, effective: true }));
        // Without the effective bit, exec never fails for them.
        let aware = exec("/bin/aware", Found::Caps(FileCaps { permitted: 1 << 12, inheritable: 0, effective: false }));
        let hidden = exec("/bin/hidden", Found::Unreadable { reason: "gone".into() });
        let report = with_execs(container(None), &[], &[], &[ping, aware, hidden]);
        let (verdict, reason) = verdict_of(&report, 13);
        assert_eq!(verdict, Verdict::Needed);
        assert_eq!(reason, "/bin/ping carries cap_net_raw=ep: execve fails without CAP_NET_RAW in the bounding set");
        assert_eq!(report.cap_add, ["NET_RAW"]);
        assert!(report.uncertain.iter().any(|u| u.contains("/bin/hidden")), "{:?}", report.uncertain);
    }

    #[test]
    fn alternatives_stand_beside_the_least_privilege() {
        let bind = |port: u32| {
            let mut r = row(10, 49, Answer::Granted, Origin::App, Some("__inet_bind"));
            r.key.flags = port << capwatch_common::CAP_FLAG_PORT_SHIFT;
            r
        };
        let report = with_execs(container(None), &[bind(443), bind(80)], &[], &ping());
        assert_eq!(report.cap_add, ["NET_BIND_SERVICE", "NET_RAW"]);
        let instead: Vec<(&str, &str)> =
            report.alternatives.iter().map(|a| (a.capability.as_str(), a.instead.as_str())).collect();
        assert_eq!(
            instead,
            [
                ("NET_BIND_SERVICE", "--sysctl net.ipv4.ip_unprivileged_port_start=80"),
                ("NET_RAW", "setcap -r /usr/bin/ping in the image")
            ]
        );
        // A program that exercised NET_RAW itself gets no setcap alternative.
        let raw = row(13, 41, Answer::Granted, Origin::App, Some("inet_create"));
        let ping_exec = |r: &Report| r.alternatives.iter().any(|a| a.capability == "NET_RAW");
        assert!(!ping_exec(&with_execs(container(None), &[raw], &[], &ping())));
    }

    /// Debian's ping, with its file capabilities.
    fn ping() -> Vec<ExecEvidence> {
        vec![ExecEvidence {
            origin: Origin::App,
            path: "/usr/bin/ping".into(),
            count: 1,
            first_seen: UNIX_EPOCH,
            last_seen: UNIX_EPOCH,
            program: "ping".into(),
            found: Found::Caps(FileCaps { permitted: 1 << 13, inheritable: 0, effective: true }),
        }]
    }

    fn judged(mut check: CheckEvidence, site: Site) -> CheckEvidence {
        check.judged = JUDGED_STACK_READ | site.bit();
        check
    }

    #[test]
    fn a_netlink_request_refused_in_its_reply_is_missing_but_audit_records_are_not() {
        let route = judged(row(12, 46, Answer::Denied, Origin::App, Some("rtnetlink_rcv_msg")), Site::NetlinkRequest);
        let audit = judged(row(29, 44, Answer::Denied, Origin::App, Some("audit_receive_msg")), Site::NetlinkRequest);
        let report = checks_only(container(None), &[route, audit], &[]);
        let (verdict, reason) = verdict_of(&report, 12);
        assert_eq!(verdict, Verdict::Missing, "{reason}");
        assert!(reason.contains("netlink request sent by sendmsg"), "{reason}");
        assert_eq!(verdict_of(&report, 29).0, Verdict::NotNeeded);
        assert_eq!(report.cap_add, ["NET_ADMIN"]);
    }

    #[test]
    fn a_refused_oom_score_adjustment_is_optional() {
        let oom = judged(row(24, 1, Answer::Denied, Origin::App, Some("__set_oom_adj")), Site::OomAdjust);
        let report = checks_only(container(None), &[oom], &[failure(1, 13, &[24])]);
        let (verdict, reason) = verdict_of(&report, 24);
        assert_eq!(verdict, Verdict::Optional, "{reason}");
        assert!(report.cap_add.is_empty());
    }

    #[test]
    fn dac_override_covers_the_reads_generic_permission_asks_dac_read_search_for() {
        let read = judged(row(2, 257, Answer::Granted, Origin::App, Some("generic_permission")), Site::DacFallback);
        let write = judged(row(1, 257, Answer::Granted, Origin::App, Some("generic_permission")), Site::DacFallback);
        let report = checks_only(container(None), &[read.clone(), write.clone()], &[]);
        assert_eq!(report.cap_add, ["DAC_OVERRIDE"]);
        // A check against credentials overlayfs substituted (its mounter's) is not the
        // container's, wherever the kernel made it.
        let mut overlay = judged(row(2, 83, Answer::Granted, Origin::App, None), Site::Advisory);
        overlay.judged = JUDGED_STACK_READ;
        overlay.key.flags = CAP_FLAG_FOREIGN_CRED;
        let report = checks_only(container(None), &[read.clone(), write, overlay], &[]);
        assert_eq!(report.cap_add, ["DAC_OVERRIDE"]);
        // Without DAC_OVERRIDE needed, the reads need DAC_READ_SEARCH.
        assert_eq!(checks_only(container(None), &[read], &[]).cap_add, ["DAC_READ_SEARCH"]);
        // open_by_handle_at asks CAP_DAC_READ_SEARCH alone: no fallback covers it.
        let handle = judged(row(2, 304, Answer::Granted, Origin::App, Some("handle_to_path")), Site::Advisory);
        let mut handle = handle;
        handle.judged = JUDGED_STACK_READ;
        let write = judged(row(1, 257, Answer::Granted, Origin::App, None), Site::DacFallback);
        assert_eq!(checks_only(container(None), &[handle, write], &[]).cap_add, ["DAC_OVERRIDE", "DAC_READ_SEARCH"]);
    }

    #[test]
    fn a_denial_is_covered_only_by_its_partner_used_with_the_applications_own_credentials() {
        // A user refused a file (CAP_DAC_OVERRIDE denied in openat) while overlayfs, as its
        // mounter, was granted CAP_DAC_READ_SEARCH in the same syscall.
        let denied = row(1, 257, Answer::Denied, Origin::App, None);
        let mut overlay = row(2, 257, Answer::Granted, Origin::App, None);
        overlay.key.flags = CAP_FLAG_FOREIGN_CRED;
        let report = checks_only(container(None), &[denied.clone(), overlay], &[]);
        let (verdict, reason) = verdict_of(&report, 1);
        assert_eq!(
            (verdict, reason.as_str()),
            (Verdict::NotNeeded, "denied in openat, and nothing failed for want of it")
        );
        // The application's own use of the partner covers it.
        let used = judged(row(2, 257, Answer::Granted, Origin::App, None), Site::DacFallback);
        let report = checks_only(container(None), &[denied, used], &[]);
        assert!(verdict_of(&report, 1).1.contains("CAP_DAC_READ_SEARCH was granted in the same call"), "{report:?}");
    }

    #[test]
    fn a_call_refused_by_dockers_profile_misses_the_capability_that_opens_it() {
        let mut syslog = failure(libc::SYS_syslog as u32, 1, &[]);
        syslog.key.seccomp = Seccomp::MayRefuse;
        let defaults = Granted { cap_eff: Some(DOCKER_DEFAULT_CAPS), ..Default::default() };
        let report = checks_only(container(Some(defaults)), &[], &[syslog]);
        let (verdict, reason) = verdict_of(&report, 34);
        assert_eq!(verdict, Verdict::Missing, "{reason}");
        assert!(reason.contains("seccomp"), "{reason}");
        assert_eq!(report.cap_add, ["SYSLOG"]);
    }

    #[test]
    fn what_the_host_cannot_grant_is_left_out() {
        let evidence = Evidence {
            failures: vec![failure(1, 13, &[24])],
            host_bounding: Some(names::all_capabilities() & !(1 << 24)),
            ..Evidence::default()
        };
        let report = report(container(None), &evidence);
        assert_eq!(verdict_of(&report, 24).0, Verdict::Unavailable);
        assert!(report.cap_add.is_empty());
    }

    #[test]
    fn docker_flags_with_all_added_and_some_dropped() {
        let granted =
            Granted { cap_add: vec!["ALL".into()], cap_drop: vec!["SYS_RESOURCE".into()], ..Default::default() };
        assert_eq!(granted_mask(&container(Some(granted))), Some(names::all_capabilities() & !(1 << 24)));
    }
}
