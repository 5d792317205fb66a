//! The current task and its saved user registers, as the typed pointers the verifier knows them
//! by (`bpf_get_current_task_btf`, `bpf_task_pt_regs`): their fields are plain loads. A program
//! asks for the task once and passes it on.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
};

/// The current task (`struct task_struct *`).
#[inline(always)]
pub fn current() -> *const u8 {
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// The saved user registers of `task`: `orig_rax` is the syscall it is in (-1 outside one),
/// `rdi`, `rsi`, `rdx`… its arguments (the uapi `pt_regs` layout).
#[inline(always)]
pub fn saved_regs(task: *const u8) -> *const pt_regs {
    unsafe { bpf_task_pt_regs(task as *mut _) as *const pt_regs }
}

/// The syscall the current thread is in (its saved `orig_rax`), or `NO_SYSCALL`.
pub fn current_syscall() -> u32 {
    let regs = saved_regs(current());
    if regs.is_null() {
        return capwatch_common::NO_SYSCALL;
    }
    unsafe { bpf_probe_read_kernel(&(*regs).orig_rax) }.map_or(capwatch_common::NO_SYSCALL, |nr| nr as u32)
}
