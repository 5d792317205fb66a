//! Syscalls that fail with EPERM or EACCES, into `CW_FAILURES`, with the evidence of their
//! cause: the capabilities denied to the same thread in the same syscall, the thread's uid, and
//! what its seccomp filter says of the syscall. This runs at every syscall exit on the host, so
//! everything else leaves after a compare or two.

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_uid_gid, bpf_probe_read_kernel},
};
use capwatch_common::{FailKey, Loss, Seccomp, NO_SYSCALL};

use crate::{aggregate, maps::CW_FAILURES, origin, scope, task};

const EPERM: i64 = 1;
const EACCES: i64 = 13;
const SECCOMP_MODE_FILTER: i32 = 2;

/// Offsets read by userspace from the kernel's BTF: `task_struct.seccomp.mode`,
/// `task_struct.seccomp.filter`, and the filter's cache of always-allowed native syscalls
/// (`seccomp_filter.cache.allow_native`, a bitmap of `CW_SECCOMP_NATIVE_BITS` bits).
#[unsafe(no_mangle)]
static CW_TASK_SECCOMP_MODE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_TASK_SECCOMP_FILTER_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_FILTER_ALLOW_NATIVE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_SECCOMP_NATIVE_BITS: u32 = 0;

/// A syscall's exit, with the capabilities `denied` to the thread in it.
#[inline(always)]
pub fn on_exit(regs: *const pt_regs, ret: i64, denied: u64) {
    if ret != -EPERM && ret != -EACCES {
        return;
    }
    // No call failed: rt_sigreturn restores the interrupted code's registers, sets `orig_ax` to
    // -1 and returns the restored rax, whatever the code held there (arch/x86/kernel/
    // signal_64.c sys_rt_sigreturn and restore_sigcontext(): "disable syscall checks"); a tracer
    // that skips a call sets -1 too, and then no call ran.
    let syscall = unsafe { (*regs).orig_rax } as u32;
    if syscall == NO_SYSCALL {
        return;
    }
    let Some(cgroup_id) = scope::watched_cgroup() else {
        return;
    };
    let key = FailKey {
        cgroup_id,
        syscall,
        errno: -ret as u16,
        origin: origin::current(),
        uid: bpf_get_current_uid_gid() as u32,
        seccomp: seccomp_state(syscall),
        denied,
    };
    aggregate::record(&CW_FAILURES, &key, || (-1, 0), Loss::FailureMapFull);
}

/// Whether the current thread runs under a seccomp filter.
pub fn under_filter() -> bool {
    let mode_at = unsafe { read_volatile(&CW_TASK_SECCOMP_MODE_OFFSET) };
    if mode_at == 0 {
        return false;
    }
    let task = task::current().task;
    unsafe { bpf_probe_read_kernel(task.wrapping_add(mode_at as usize) as *const i32) }
        .is_ok_and(|mode| mode == SECCOMP_MODE_FILTER)
}

/// What the current thread's seccomp filter says of `syscall`. The kernel caches, per filter
/// chain, the syscalls it allows whatever their arguments; one outside that set may have been
/// refused by the filter before it ran.
pub fn seccomp_state(syscall: u32) -> Seccomp {
    let (mode_at, filter_at, allow_at, bits) = unsafe {
        (
            read_volatile(&CW_TASK_SECCOMP_MODE_OFFSET),
            read_volatile(&CW_TASK_SECCOMP_FILTER_OFFSET),
            read_volatile(&CW_FILTER_ALLOW_NATIVE_OFFSET),
            read_volatile(&CW_SECCOMP_NATIVE_BITS),
        )
    };
    if mode_at == 0 || filter_at == 0 {
        return Seccomp::Unknown;
    }
    let task = task::current().task;
    let Ok(mode) = (unsafe { bpf_probe_read_kernel(task.wrapping_add(mode_at as usize) as *const i32) }) else {
        return Seccomp::Unknown;
    };
    if mode != SECCOMP_MODE_FILTER {
        return Seccomp::None;
    }
    if allow_at == 0 || syscall >= bits {
        return Seccomp::MayRefuse;
    }
    let Ok(filter) = (unsafe { bpf_probe_read_kernel(task.wrapping_add(filter_at as usize) as *const *const u8) })
    else {
        return Seccomp::Unknown;
    };
    let word = filter.wrapping_add(allow_at as usize + (syscall as usize / 64) * 8) as *const u64;
    match unsafe { bpf_probe_read_kernel(word) } {
        Ok(bits) if bits & (1 << (syscall % 64)) != 0 => Seccomp::Allows,
        Ok(_) => Seccomp::MayRefuse,
        Err(_) => Seccomp::Unknown,
    }
}
