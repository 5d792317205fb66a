//! What a thread's syscall leaves for its exit, per thread in `CW_DENIED`: the capabilities
//! denied in it (a failure's evidence) and those a capset kept while narrowing the permitted set
//! (recorded only if the capset succeeds). `CW_DENIED_COUNT` counts the entries, so that the
//! exit of every other syscall on the host skips the map after one load.

use core::ptr::{addr_of, addr_of_mut, read_volatile};

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_get_current_pid_tgid};
use capwatch_common::Loss;

use crate::{
    aggregate,
    maps::{InSyscall, CW_DENIED},
};

/// How many entries `CW_DENIED` holds: while none, syscall exits skip it entirely. A global
/// rather than a map's element: one load where every syscall of the host looks.
#[unsafe(no_mangle)]
static mut CW_DENIED_COUNT: u64 = 0;

/// Remembers a capability denied to the current thread in `syscall`.
#[inline(always)]
pub fn note_denied(syscall: u32, cap: u32) {
    note(InSyscall { syscall, _pad: 0, denied: 1u64 << (cap & 63), kept: 0 });
}

/// Remembers the capabilities a capset of the current thread asks to keep (`kept`, a mask).
#[inline(always)]
pub fn note_kept(syscall: u32, kept: u64) {
    note(InSyscall { syscall, _pad: 0, denied: 0, kept });
}

#[inline(always)]
fn note(new: InSyscall) {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(entry) = CW_DENIED.get_ptr_mut(tid) {
        unsafe {
            if (*entry).syscall == new.syscall {
                (*entry).denied |= new.denied;
                (*entry).kept |= new.kept;
            } else {
                *entry = new;
            }
        }
        return;
    }
    match CW_DENIED.insert(tid, new, BPF_NOEXIST as u64) {
        Ok(()) => count(1),
        Err(_) => aggregate::count_loss(Loss::DeniedStashFull),
    }
}

/// What the current thread's `syscall` left, forgetting it: its syscall is over.
#[inline(always)]
pub fn take(syscall: u32) -> InSyscall {
    let none = InSyscall { syscall, _pad: 0, denied: 0, kept: 0 };
    if !any() {
        return none;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let left = match CW_DENIED.get_ptr(tid) {
        Some(entry) if unsafe { (*entry).syscall } == syscall => unsafe { *entry },
        _ => none,
    };
    forget();
    left
}

/// Forgets what the current thread's syscall left (its syscall is over, or the thread is).
#[inline(always)]
pub fn forget() {
    if CW_DENIED.remove(bpf_get_current_pid_tgid() as u32).is_ok() {
        count(u64::MAX); // -1
    }
}

#[inline(always)]
fn any() -> bool {
    unsafe { read_volatile(addr_of!(CW_DENIED_COUNT)) != 0 }
}

fn count(delta: u64) {
    unsafe { aggregate::add(addr_of_mut!(CW_DENIED_COUNT), delta) };
}
