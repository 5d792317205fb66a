//! The rules the verdicts follow where a granted check is not a need, each beside the kernel
//! source it mirrors. docs/advice-rules.md lists them all, with the kernel-side ones
//! (capwatch-ebpf/src/consequence.rs) and the reasons they are sound; a check no rule covers is a
//! need: sufficient comes before minimal.

use capwatch_common::{
    Moot, Origin, Site, Verdict as Answer, CAP_FLAG_FOREIGN_CRED, CAP_FLAG_NOAUDIT, CAP_FLAG_OUTER_USERNS,
    JUDGED_STACK_READ,
};

use super::{Alternative, CapabilityReport, Verdict};
use crate::{
    evidence::CheckEvidence,
    filecaps::{self, FileCaps},
    names,
    symbols::advisory_functions,
};

pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_NET_BIND_SERVICE: u32 = 10;
pub const CAP_AUDIT_WRITE: u32 = 29;

/// Capabilities the kernel tries one after the other for the same permission
/// (fs/namei.c generic_permission → capable_wrt_inode_uidgid): CAP_DAC_READ_SEARCH denied then
/// CAP_DAC_OVERRIDE granted in the same call means CAP_DAC_OVERRIDE sufficed, and the other way
/// round.
pub const FALLBACKS: [(u32, u32); 2] =
    [(CAP_DAC_READ_SEARCH, CAP_DAC_OVERRIDE), (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)];

/// A check the kernel makes without consequence: the overcommit accounting's CAP_SYS_ADMIN
/// probe (security/commoncap.c cap_vm_enough_memory, mm/util.c __vm_enough_memory), recognised
/// in the kernel from the first occurrence's stack, whatever syscall it ran in and whether its
/// stack was kept. Stores written before the kernel judged it fall back on the call site's name,
/// then on CAP_OPT_NOAUDIT where the probe saw `opts`.
pub fn advisory(check: &CheckEvidence) -> bool {
    if check.judged & JUDGED_STACK_READ != 0 {
        return at(check, Site::Advisory);
    }
    match &check.call_site {
        Some(site) => advisory_functions().any(|f| site.split(" ← ").next() == Some(f)),
        None => check.key.flags & CAP_FLAG_NOAUDIT != 0,
    }
}

/// A granted check whose answer the container's own capabilities gave and something depended on:
/// the application's, against its own credentials (not ones the kernel substituted, as overlayfs
/// does with its mounter's) in its own user namespace, neither advisory nor moot. Only these make
/// a capability needed.
pub fn consequential_use(check: &CheckEvidence) -> bool {
    check.key.origin == Origin::App
        && check.key.verdict == Answer::Granted
        && !check.key.kept()
        && check.key.flags & (CAP_FLAG_FOREIGN_CRED | CAP_FLAG_OUTER_USERNS) == 0
        && !advisory(check)
        && check.key.moot().is_none()
}

/// Why a moot check changed nothing, in the report's words.
pub fn moot(moot: Moot) -> &'static str {
    match moot {
        Moot::No => "",
        Moot::CapsetWithinPermitted => {
            "capset kept the inheritable set within the permitted one, where CAP_SETPCAP decides nothing (commoncap.c cap_capset)"
        }
        Moot::ChmodWithoutSetgid => {
            "chmod without the set-group-ID bit, where CAP_FSETID only decides whether that bit survives (fs/attr.c setattr_prepare)"
        }
        Moot::SetuidUnchanged => "setuid to the uid that was already the real and saved one (kernel/sys.c __sys_setuid)",
        Moot::SetgidUnchanged => "setgid to the gid that was already the real and saved one (kernel/sys.c __sys_setgid)",
    }
}

/// security/commoncap.c cap_capset():
///     if (!cap_issubset(*permitted, old->cap_permitted))
///             return -EPERM;
/// A capset that narrows the permitted set names what it keeps, and the kernel asks no
/// capability for that: a program naming a fixed set (chronyd keeping CAP_NET_BIND_SERVICE)
/// fails without it, one keeping only what it holds (iputils ping's `limit_capabilities`) does
/// not, and one observation with the capability granted cannot tell them apart. So a capability
/// the application kept and never used is needed (sufficient before minimal), with this reason,
/// and the report says it could not tell.
pub fn kept_by_capset(kept: &[&CheckEvidence]) -> Option<String> {
    let count: u64 = kept.iter().map(|c| c.count).sum();
    (!kept.is_empty()).then(|| {
        format!(
            "kept by capset {count}×, which fails without it if the program names it whatever it holds (security/commoncap.c cap_capset); never used while observed"
        )
    })
}

/// The sentence `uncertain` has for a capability needed only because capset kept it.
pub fn kept_uncertain(capability: &str) -> String {
    format!(
        "{capability} was kept by capset but never used while observed: capwatch cannot tell whether the program needs it or only keeps what it is given, so it stays in the advice; a run without it would tell"
    )
}

/// The sentence `uncertain` has where the application's capsets failed asking to keep what it did
/// not hold (`Cause::KeptCapabilities`): no check names the capabilities, so no advice can.
pub fn refused_keeps_uncertain(count: u64) -> String {
    format!(
        "capset failed {count}× asking to keep capabilities the container did not hold (security/commoncap.c cap_capset checks none): capwatch cannot tell which, and the advice lacks them; observe the container with more capabilities (Docker's defaults, or --cap-add ALL) to learn them"
    )
}

/// Capabilities a program may use whose refusal it tolerates by design, with what is lost
/// without them. Kept small: each is justified in docs/advice-rules.md.
pub fn optional(cap: u32) -> Option<&'static str> {
    match cap {
        // kernel/audit.c audit_netlink_ok refuses AUDIT_USER messages without CAP_AUDIT_WRITE;
        // libaudit's callers (Linux-PAM's pam_audit.c, shadow's su and login, sudo, sshd) log the
        // EPERM and go on.
        CAP_AUDIT_WRITE => Some("writes audit records; refused, the records are lost and the program goes on"),
        _ => None,
    }
}

/// Ways around the capabilities of the least privilege that the kernel offers:
/// - CAP_NET_BIND_SERVICE, needed only to bind ports below net.ipv4.ip_unprivileged_port_start
///   (net/ipv4/af_inet.c inet_port_requires_bind_service): that sysctl, per network namespace,
///   set to the lowest port bound.
/// - A capability needed only because an exec'd file carries it, which the program never
///   exercised: removing the file's capability (setcap -r) lets it exec without it. Debian's
///   ping is the case: it carries cap_net_raw=ep, yet uses ICMP datagram sockets, which
///   net.ipv4.ping_group_range allows (Docker sets it to every group).
pub fn alternatives(
    capabilities: &[CapabilityReport],
    checks: &[CheckEvidence],
    exec_needs: &[(&str, FileCaps)],
) -> Vec<Alternative> {
    let mut alternatives = Vec::new();
    let needed = capabilities.iter().filter(|c| matches!(c.verdict, Verdict::Needed | Verdict::Missing));
    for report in needed {
        let cap = report.number;
        let used: Vec<&CheckEvidence> = checks
            .iter()
            .filter(|c| {
                c.key.cap == cap && c.key.origin == Origin::App && c.key.verdict == Answer::Granted && !c.key.kept()
            })
            .collect();
        let name = report.capability.trim_start_matches("CAP_").to_string();
        if cap == CAP_NET_BIND_SERVICE && !used.is_empty() && used.iter().all(|c| c.key.port().is_some()) {
            let lowest = used.iter().filter_map(|c| c.key.port()).min().unwrap_or_default();
            alternatives.push(Alternative {
                capability: name,
                instead: format!("--sysctl net.ipv4.ip_unprivileged_port_start={lowest}"),
                why: format!("it binds port {lowest} and none lower; that sysctl lets any process bind from there up"),
            });
            continue;
        }
        let files: Vec<&str> =
            exec_needs.iter().filter(|(_, caps)| caps.permitted & (1 << cap) != 0).map(|(path, _)| *path).collect();
        // A capability capset kept counts as exercised: the program named it, and may fail
        // without it whatever the file carries.
        let exercised = checks.iter().any(|c| c.key.cap == cap && c.key.origin == Origin::App);
        if !files.is_empty() && !exercised {
            let carried: Vec<String> = exec_needs
                .iter()
                .filter(|(path, _)| files.contains(path))
                .map(|(path, caps)| format!("{path} ({})", filecaps::describe(caps)))
                .collect();
            alternatives.push(Alternative {
                capability: name,
                instead: format!("setcap -r {} in the image", files.join(" ")),
                why: format!(
                    "the program never used {}; only the file capabilities of {} ask for it at exec",
                    names::capability(cap),
                    carried.join(", ")
                ),
            });
        }
    }
    alternatives
}

/// Whether the kernel judged the check's first occurrence to come through `site`.
pub fn at(check: &CheckEvidence, site: Site) -> bool {
    check.judged & JUDGED_STACK_READ != 0 && check.judged & site.bit() != 0
}

/// What a refused OOM-score adjustment loses.
pub const OOM_ADJUST_LOST: &str =
    "lowers its OOM score (fs/proc/base.c __set_oom_adj); refused, the process keeps the score it had and goes on";

/// A denied check in a netlink request handled in the sender's call (netlink_rcv_skb: e.g.
/// net/core/rtnetlink.c rtnetlink_rcv_msg asks for CAP_NET_ADMIN for every change): the kernel
/// refused the request, in its reply rather than as the call's error, so the request failed.
/// Optional capabilities' refusals stay tolerated.
pub fn refused_requests(cap: u32, denied: &[&CheckEvidence]) -> Option<String> {
    if optional(cap).is_some() {
        return None;
    }
    let refused: Vec<&&CheckEvidence> = denied.iter().filter(|c| at(c, Site::NetlinkRequest)).collect();
    let calls: std::collections::BTreeSet<String> =
        refused.iter().map(|c| names::syscall(c.key.syscall).into_owned()).collect();
    (!refused.is_empty()).then(|| {
        format!(
            "denied to a netlink request sent by {} (netlink_rcv_skb): the kernel refused the request in its reply",
            calls.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

/// fs/namei.c generic_permission asks CAP_DAC_READ_SEARCH before CAP_DAC_OVERRIDE for reads and
/// searches: with both granted the first answers them, yet CAP_DAC_OVERRIDE alone would. Where
/// CAP_DAC_OVERRIDE is needed anyway, CAP_DAC_READ_SEARCH used only there is not.
pub fn dac_override_covers_reads(capabilities: &mut [CapabilityReport], checks: &[CheckEvidence]) {
    let needed = |capabilities: &[CapabilityReport], cap: u32| {
        capabilities.iter().any(|c| c.number == cap && c.verdict == Verdict::Needed)
    };
    if !needed(capabilities, CAP_DAC_OVERRIDE) || !needed(capabilities, CAP_DAC_READ_SEARCH) {
        return;
    }
    let reads: Vec<&CheckEvidence> =
        checks.iter().filter(|c| c.key.cap == CAP_DAC_READ_SEARCH && consequential_use(c)).collect();
    if reads.iter().all(|c| at(c, Site::DacFallback)) {
        if let Some(report) = capabilities.iter_mut().find(|c| c.number == CAP_DAC_READ_SEARCH) {
            report.verdict = Verdict::NotNeeded;
            report.reason = "CAP_DAC_OVERRIDE, needed too, answers these reads and searches as well (fs/namei.c generic_permission asks CAP_DAC_READ_SEARCH first)".into();
        }
    }
}

/// A capability the host's bounding set lacks cannot be granted to a container there: advising
/// it would keep the container from starting at all (runc: "unable to apply caps").
pub fn only_what_the_host_can_grant(capabilities: &mut [CapabilityReport], bounding: u64) {
    for report in capabilities.iter_mut() {
        if matches!(report.verdict, Verdict::Needed | Verdict::Missing) && bounding & (1 << report.number) == 0 {
            report.reason = format!(
                "{}; but this host's bounding set lacks it, so no container here can be granted it",
                report.reason
            );
            report.verdict = Verdict::Unavailable;
        }
    }
}
