//! Checks whose answer cannot matter: for these syscall arguments and these credentials the call
//! does the same whether the capability is granted or denied. The kernel still asks (with full
//! audit, so no `opts` bit tells them apart); the syscall's arguments, in the task's saved user
//! registers and its memory, and the checked credentials do. Each rule mirrors the kernel code
//! that makes the check; where an argument cannot be read the check stays consequential:
//! sufficient comes before minimal. The rules are listed in docs/advice-rules.md.

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_user},
};
use capwatch_common::Moot;

const CAP_FSETID: u32 = 4;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
pub const CAP_SETPCAP: u32 = 8;
const CAP_NET_BIND_SERVICE: u32 = 10;

// x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
const SYS_BIND: u32 = 49;
const SYS_CHMOD: u32 = 90;
const SYS_FCHMOD: u32 = 91;
const SYS_SETUID: u32 = 105;
const SYS_SETGID: u32 = 106;
pub const SYS_CAPSET: u32 = 126;
const SYS_FCHMODAT: u32 = 268;
const SYS_FCHMODAT2: u32 = 452;

const S_ISGID: u64 = 0o2000;
/// include/uapi/linux/capability.h: version 1 passes one 32-bit data struct, later ones two.
const LINUX_CAPABILITY_VERSION_1: u32 = 0x1998_0330;

/// Offsets in `struct cred`, read by userspace from the kernel's BTF (0 where absent).
#[unsafe(no_mangle)]
static CW_CRED_UID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_CRED_SUID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_CRED_GID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_CRED_SGID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_CRED_CAP_INHERITABLE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_CRED_CAP_PERMITTED_OFFSET: u32 = 0;

/// How the checked credentials' fields are read: `Direct` loads where the probe got `cred` as a
/// typed kernel pointer (tracepoint, fexit: the verifier knows its type and the offsets are
/// constants to it), `Probed` through `bpf_probe_read_kernel` where it is a plain address.
pub trait CredRead {
    fn u32_at(cred: *const u8, offset: u32) -> Option<u32>;
}

pub struct Direct;
pub struct Probed;

impl CredRead for Direct {
    #[inline(always)]
    fn u32_at(cred: *const u8, offset: u32) -> Option<u32> {
        Some(unsafe { *(cred.wrapping_add(offset as usize) as *const u32) })
    }
}

impl CredRead for Probed {
    #[inline(always)]
    fn u32_at(cred: *const u8, offset: u32) -> Option<u32> {
        unsafe { bpf_probe_read_kernel(cred.wrapping_add(offset as usize) as *const u32) }.ok()
    }
}

/// Whether a check of `cap` in `syscall`, on `cred` (read as `R` says), with the caller's saved
/// registers `regs`, could change nothing. Everything but the few (capability, syscall) pairs
/// below leaves after two compares.
#[inline(always)]
pub fn judge<R: CredRead>(cap: u32, syscall: u32, regs: *const pt_regs, cred: *const u8) -> Moot {
    match (cap, syscall) {
        (CAP_SETPCAP, SYS_CAPSET) => capset_within_permitted(regs, cred),
        (CAP_FSETID, SYS_CHMOD | SYS_FCHMOD) => chmod_without_setgid(unsafe { (*regs).rsi }),
        (CAP_FSETID, SYS_FCHMODAT | SYS_FCHMODAT2) => chmod_without_setgid(unsafe { (*regs).rdx }),
        (CAP_SETUID, SYS_SETUID) => {
            unchanged::<R>(regs, cred, &CW_CRED_UID_OFFSET, &CW_CRED_SUID_OFFSET, Moot::SetuidUnchanged)
        }
        (CAP_SETGID, SYS_SETGID) => {
            unchanged::<R>(regs, cred, &CW_CRED_GID_OFFSET, &CW_CRED_SGID_OFFSET, Moot::SetgidUnchanged)
        }
        _ => Moot::No,
    }
}

/// The port a bind asks for, for a CAP_NET_BIND_SERVICE check in it (net/ipv4/af_inet.c
/// __inet_bind and net/ipv6/af_inet6.c __inet6_bind check it for ports below
/// net.ipv4.ip_unprivileged_port_start); 0 otherwise. sockaddr_in and sockaddr_in6 both keep
/// the port, in network order, right after the family.
#[inline(always)]
pub fn port(cap: u32, syscall: u32, regs: *const pt_regs) -> u32 {
    if (cap, syscall) != (CAP_NET_BIND_SERVICE, SYS_BIND) {
        return 0;
    }
    let address = unsafe { (*regs).rsi } as *const u16;
    match unsafe { bpf_probe_read_user(address.wrapping_add(1)) } {
        Ok(port) => u16::from_be(port) as u32,
        Err(_) => 0,
    }
}

/// security/commoncap.c, cap_capset():
///     if (cap_inh_is_capped() &&
///         !cap_issubset(*inheritable, cap_combine(old->cap_inheritable, old->cap_permitted)))
///             return -EPERM;
/// cap_inh_is_capped() asks for CAP_SETPCAP on every capset; its answer only matters when the
/// new inheritable set is not within the old inheritable and permitted sets. The new sets are
/// still in the caller's memory (capset(header, data), kernel/capability.c).
fn capset_within_permitted(regs: *const pt_regs, cred: *const u8) -> Moot {
    let Some(inheritable) = capset_arg(regs, INHERITABLE) else { return Moot::No };
    // kernel_cap_t is a u64 since 6.3 and two u32s before: the same eight bytes on x86_64.
    let (Some(old_inheritable), Some(old_permitted)) =
        (read_u64(cred, &CW_CRED_CAP_INHERITABLE_OFFSET), read_u64(cred, &CW_CRED_CAP_PERMITTED_OFFSET))
    else {
        return Moot::No;
    };
    if inheritable & !(old_inheritable | old_permitted) == 0 {
        Moot::CapsetWithinPermitted
    } else {
        Moot::No
    }
}

/// security/commoncap.c, cap_capset():
///     /* verify restrictions on target's new Permitted set */
///     if (!cap_issubset(*permitted, old->cap_permitted))
///             return -EPERM;
///     /* verify the _new_Effective_ is a subset of the _new_Permitted_ */
///     if (!cap_issubset(*effective, *permitted))
///             return -EPERM;
/// A capset that narrows the permitted set keeps what it names without any check: a program that
/// names a capability it was not granted fails there. The permitted set a capset asks for, from
/// the caller's memory, where it is strictly within the old one in the credentials it replaces;
/// 0 when it does not narrow it or cannot be read. Whether the capset then succeeded (passing
/// the effective and inheritable tests too), its return tells.
#[inline(always)]
pub fn capset_kept(regs: *const pt_regs, cred: *const u8) -> u64 {
    let Some(permitted) = capset_arg(regs, PERMITTED) else { return 0 };
    let Some(old_permitted) = read_u64(cred, &CW_CRED_CAP_PERMITTED_OFFSET) else { return 0 };
    if permitted & !old_permitted == 0 && permitted != old_permitted {
        permitted
    } else {
        0
    }
}

/// The positions of the sets in `struct __user_cap_data_struct { __u32 effective, permitted,
/// inheritable; }`.
const PERMITTED: usize = 1;
const INHERITABLE: usize = 2;

/// One of the sets capset(header, data) asks for (kernel/capability.c), read from the caller's
/// memory: the low word from the first data struct and, unless the header says version 1, the
/// high word from the second.
#[inline(always)]
fn capset_arg(regs: *const pt_regs, set: usize) -> Option<u64> {
    let (header, data) = unsafe { ((*regs).rdi as *const u32, (*regs).rsi as *const u32) };
    let version: u32 = unsafe { bpf_probe_read_user(header) }.ok()?;
    let low: u32 = unsafe { bpf_probe_read_user(data.wrapping_add(set)) }.ok()?;
    let high: u32 = if version == LINUX_CAPABILITY_VERSION_1 {
        0
    } else {
        unsafe { bpf_probe_read_user(data.wrapping_add(3 + set)) }.ok()?
    };
    Some((high as u64) << 32 | low as u64)
}

/// fs/attr.c, setattr_prepare(), for ATTR_MODE:
///     if (!in_group_or_capable(idmap, inode, vfsgid))
///             attr->ia_mode &= ~S_ISGID;
/// in_group_or_capable() asks for CAP_FSETID when the caller is not in the file's group; the
/// answer only decides whether S_ISGID survives, so without S_ISGID in the new mode it decides
/// nothing.
fn chmod_without_setgid(mode: u64) -> Moot {
    if mode & S_ISGID == 0 {
        Moot::ChmodWithoutSetgid
    } else {
        Moot::No
    }
}

/// kernel/sys.c, __sys_setuid() (and __sys_setgid() alike):
///     if (ns_capable_setid(old->user_ns, CAP_SETUID)) {
///             new->suid = new->uid = kuid; …
///     } else if (!uid_eq(kuid, old->uid) && !uid_eq(kuid, new->suid))
///             goto error;
///     new->fsuid = new->euid = kuid;
/// When the id asked for is already the real and the saved one, both ways end with the same
/// credentials. The id is compared as the caller passed it: in a user namespace that maps it
/// elsewhere the comparison fails and the check stays consequential.
#[inline(always)]
fn unchanged<R: CredRead>(regs: *const pt_regs, cred: *const u8, real: &u32, saved: &u32, moot: Moot) -> Moot {
    let wanted = unsafe { (*regs).rdi } as u32;
    let (real, saved) = unsafe { (read_volatile(real), read_volatile(saved)) };
    if real == 0 || saved == 0 {
        return Moot::No;
    }
    if R::u32_at(cred, real) != Some(wanted) || R::u32_at(cred, saved) != Some(wanted) {
        return Moot::No;
    }
    moot
}

fn read_u64(base: *const u8, offset: &u32) -> Option<u64> {
    let offset = unsafe { read_volatile(offset) };
    if offset == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const u64) }.ok()
}
