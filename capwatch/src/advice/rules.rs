//! The rules the verdicts follow where a granted check is not a need, each beside the kernel
//! source it mirrors. docs/advice-rules.md lists them all, with the kernel-side ones
//! (capwatch-ebpf/src/consequence.rs) and the reasons they are sound; a check no rule covers is a
//! need: sufficient comes before minimal.

use capwatch_common::{Moot, CAP_FLAG_NOAUDIT, JUDGED_ADVISORY_SITE, JUDGED_STACK_READ};

use crate::{evidence::CheckEvidence, symbols::ADVISORY_FUNCTIONS};

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
        return check.judged & JUDGED_ADVISORY_SITE != 0;
    }
    match &check.call_site {
        Some(site) => ADVISORY_FUNCTIONS.iter().any(|f| site.split(" ← ").next() == Some(*f)),
        None => check.key.flags & CAP_FLAG_NOAUDIT != 0,
    }
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
