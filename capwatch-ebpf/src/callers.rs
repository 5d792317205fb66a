//! Checks that security/commoncap.c makes by calling `cap_capable` directly. Where the kernel's
//! compiler inlined `cap_capable` into such a caller there is no call for fexit or a kprobe on
//! `cap_capable` to see; these programs, on the callers themselves, see those checks. Userspace
//! attaches one only where its self-test showed that the probe on `cap_capable` misses that
//! caller's check, so that no check is counted twice.
//!
//! Every such call asks `cap_capable(current_cred(), ns, cap, opts)` with `ns` either the
//! credentials' own user namespace or `&init_user_ns`. `cap_capable` then answers from the
//! credentials alone (security/commoncap.c, 6.1 to 6.18): in the credentials' own namespace, the
//! capability's bit in `cap_effective`; in the initial namespace from credentials of a namespace
//! below it (`ns->level <= cred->user_ns->level`), -EPERM. So the answer is judged here the way
//! `cap_capable` gives it, from current's credentials: they cannot change between the call and
//! these programs, as only the task itself replaces its own, and capset commits the new ones
//! after the hooks return. The callers' own returns are used where they are the answer.
//!
//! `cap_ptrace_access_check` and `cap_ptrace_traceme` are not here: they ask through
//! `ns_capable` and `has_ns_capability`, that is `security_capable` and the LSM's `capable`
//! hook, an indirect (6.1) or static (6.12) call that no compiler can inline, so the probe on
//! `cap_capable` sees their checks wherever it attaches.

use core::ptr::read_volatile;

use aya_ebpf::{helpers::bpf_probe_read_kernel, programs::tracing::StackIdContext};
use capwatch_common::{flags_from_opts, Loss, CAP_FLAG_FOREIGN_CRED, CAP_FLAG_OUTER_USERNS, CAP_OPT_NOAUDIT};

use crate::{
    aggregate,
    cap::{self, CW_CRED_USER_NS_OFFSET, CW_TASK_REAL_CRED_OFFSET, CW_USER_NS_LEVEL_OFFSET},
    maps::CW_MMAP_MIN_ADDR,
    scope, task,
};

const CAP_SETPCAP: u32 = 8;
const CAP_SYS_RAWIO: u32 = 17;
const CAP_SYS_ADMIN: u32 = 21;
const EPERM: i32 = 1;

/// Offsets read by userspace from the kernel's BTF: `task_struct.cred` (the subjective
/// credentials, `current_cred()`) and `cred.cap_effective` (a `kernel_cap_t`: two u32 words
/// before 6.3, one u64 since; the same bits either way on a little-endian machine).
#[unsafe(no_mangle)]
static CW_TASK_CRED_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_CRED_CAP_EFFECTIVE_OFFSET: u32 = 0;

/// The user namespace a direct call asks in.
#[derive(Clone, Copy)]
enum Target {
    /// `current_cred()->user_ns`.
    Own,
    /// `&init_user_ns`.
    Initial,
}

/// `cap_capset(new, old, effective, inheritable, permitted)`: its first statement is
/// `cap_inh_is_capped()`, which asks `cap_capable(current_cred(), current_cred()->user_ns,
/// CAP_SETPCAP, CAP_OPT_NONE)`. So every capset that reaches the hook makes one audited check,
/// whatever it asks for; the answer only decides anything when the new inheritable set exceeds
/// old inheritable ∪ permitted (consequence.rs judges that from the syscall's arguments, as for
/// the probe on `cap_capable`). The return does not tell the answer: -EPERM has four causes, and
/// a refused check still returns 0 when the inheritable set does not grow.
#[inline(always)]
pub fn on_capset<C: StackIdContext>(ctx: &C) {
    record(ctx, CAP_SETPCAP, Target::Own, flags_from_opts(0), None);
}

/// `cap_mmap_addr(addr)`: `if (addr < dac_mmap_min_addr) ret = cap_capable(current_cred(),
/// &init_user_ns, CAP_SYS_RAWIO, CAP_OPT_NONE);` then `return ret;`. A check only for an address
/// below vm.mmap_min_addr, and then the return is its answer (`ret`, at fexit); at a kprobe on
/// the entry (`ret` None) the answer is judged from the credentials.
#[inline(always)]
pub fn on_mmap_addr<C: StackIdContext>(ctx: &C, addr: u64, ret: Option<i32>) {
    if scope::watched_cgroup().is_none() {
        return;
    }
    // A non-zero return can only be the check's refusal; otherwise the address tells.
    if ret.is_some_and(|r| r != 0) || mmap_min_addr().is_some_and(|min| addr < min) {
        record(ctx, CAP_SYS_RAWIO, Target::Initial, flags_from_opts(0), ret);
    }
}

/// `cap_vm_enough_memory(mm, pages)`: asks `cap_capable(current_cred(), &init_user_ns,
/// CAP_SYS_ADMIN, CAP_OPT_NOAUDIT)` on every call, the kernel's advisory check of every
/// accountable mapping. The return carries the answer in two encodings (6.1: 1 granted, 0 not;
/// since the vm_enough_memory hook's return was refactored in 2024: 0 granted, -EPERM not), so
/// it is judged from the credentials instead.
#[inline(always)]
pub fn on_vm_enough_memory<C: StackIdContext>(ctx: &C) {
    record(ctx, CAP_SYS_ADMIN, Target::Initial, flags_from_opts(CAP_OPT_NOAUDIT), None);
}

/// Records the check as `cap_capable` would have: `answer` where the caller returned it,
/// otherwise judged from current's credentials.
#[inline(always)]
fn record<C: StackIdContext>(ctx: &C, cap: u32, target: Target, flags: u32, answer: Option<i32>) {
    if scope::watched_cgroup().is_none() {
        return;
    }
    match judge(cap, target) {
        Some((judged, cred_flags, cred)) => {
            cap::on_check(ctx, cap, answer.unwrap_or(judged), flags | cred_flags, cap::Checked::Current(cred));
        }
        None => aggregate::count_loss(Loss::CallerUnjudged),
    }
}

/// `cap_capable(current_cred(), target, cap, …)`'s answer (0 or -EPERM), the flags its key
/// carries (`CAP_FLAG_FOREIGN_CRED` where current's credentials are overridden, not its
/// `real_cred`; `CAP_FLAG_OUTER_USERNS` where the initial namespace lies above them), and the
/// credentials. None when they cannot be read.
#[inline(always)]
fn judge(cap: u32, target: Target) -> Option<(i32, u32, *const u8)> {
    let (cred_at, real_cred_at, effective_at, user_ns_at, level_at) = unsafe {
        (
            read_volatile(&CW_TASK_CRED_OFFSET),
            read_volatile(&CW_TASK_REAL_CRED_OFFSET),
            read_volatile(&CW_CRED_CAP_EFFECTIVE_OFFSET),
            read_volatile(&CW_CRED_USER_NS_OFFSET),
            read_volatile(&CW_USER_NS_LEVEL_OFFSET),
        )
    };
    if cred_at == 0 || effective_at == 0 || user_ns_at == 0 || level_at == 0 {
        return None;
    }
    let read = |base: *const u8, offset: u32| unsafe {
        bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const u64).ok()
    };
    let task = task::current().task;
    let cred = read(task, cred_at)? as *const u8;
    let mut flags = 0;
    if real_cred_at != 0 && read(task, real_cred_at)? as *const u8 != cred {
        flags |= CAP_FLAG_FOREIGN_CRED;
    }
    let holds = read(cred, effective_at)? & (1 << cap) != 0;
    let granted = match target {
        Target::Own => holds,
        Target::Initial => {
            let own_ns = read(cred, user_ns_at)? as *const u8;
            let level = unsafe { bpf_probe_read_kernel(own_ns.wrapping_add(level_at as usize) as *const i32) }.ok()?;
            if level != 0 {
                flags |= CAP_FLAG_OUTER_USERNS;
            }
            level == 0 && holds
        }
    };
    Some((if granted { 0 } else { -EPERM }, flags, cred))
}

/// `dac_mmap_min_addr`, the sysctl vm.mmap_min_addr: read where it lives when userspace found
/// its address in /proc/kallsyms, else the value userspace read from /proc/sys when it attached
/// the hook (0, no check, until then).
#[inline(always)]
fn mmap_min_addr() -> Option<u64> {
    let at = *CW_MMAP_MIN_ADDR.get(0)?;
    if at != 0 {
        return unsafe { bpf_probe_read_kernel(at as *const u64) }.ok();
    }
    CW_MMAP_MIN_ADDR.get(1).copied()
}
