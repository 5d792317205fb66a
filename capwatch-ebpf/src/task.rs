//! The current task and its saved user registers, as the typed pointers the verifier knows them
//! by: their fields are plain loads. A program asks for the task once and passes it on.
//!
//! The registers lie at a fixed distance from the bottom of every task's kernel stack
//! (arch/x86/include/asm/processor.h `task_pt_regs`: the stack's top, less its padding, less one
//! `struct pt_regs`). Where the kernel has the `bpf_rdonly_cast` kfunc (6.2+), a check finds them
//! from `task->stack` with two loads instead of calling `bpf_task_pt_regs`: the helper is a call
//! into the kernel, the kfunc a move (the verifier replaces it, kernel/bpf/verifier.c
//! fixup_kfunc_call). The distance is learnt from the helper the first time.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
};
use capwatch_common::KFUNC_RDONLY_CAST_CALL;

/// The running kernel's BTF id of `struct pt_regs`, set by userspace where the kernel has
/// `bpf_rdonly_cast` and the loader gave the call below its id (probe/kfuncs.rs); 0 otherwise,
/// and the helper is called.
#[unsafe(no_mangle)]
static CW_PT_REGS_BTF_ID: u32 = 0;
/// `task_struct.stack`, from the kernel's BTF (0 where absent).
#[unsafe(no_mangle)]
static CW_TASK_STACK_OFFSET: u32 = 0;
/// From a task's `stack` to its saved registers; 0 until a check learns it.
#[unsafe(no_mangle)]
static mut CW_PT_REGS_FROM_STACK: u64 = 0;
/// Where the distance is learnt: the registers' address as the helper gave it.
#[unsafe(no_mangle)]
static mut CW_PT_REGS_SEEN: u64 = 0;

/// The current task (`struct task_struct *`).
#[inline(always)]
pub fn current() -> *const u8 {
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// The saved user registers of `task`: `orig_rax` is the syscall it is in (-1 outside one),
/// `rdi`, `rsi`, `rdx`… its arguments (the uapi `pt_regs` layout). Read-only.
#[inline(always)]
pub fn saved_regs(task: *const u8) -> *const pt_regs {
    let (btf_id, stack_at) = unsafe { (read_volatile(&CW_PT_REGS_BTF_ID), read_volatile(&CW_TASK_STACK_OFFSET)) };
    if btf_id != 0 && stack_at != 0 {
        // SAFETY: a typed task; the field's offset comes from the running kernel's BTF.
        let stack = unsafe { *(task.wrapping_add(stack_at as usize) as *const u64) };
        let from_stack = unsafe { read_volatile(addr_of!(CW_PT_REGS_FROM_STACK)) };
        if from_stack != 0 {
            return unsafe { rdonly_cast(stack.wrapping_add(from_stack), btf_id) } as *const pt_regs;
        }
        let regs = helper_regs(task);
        learn(stack, regs);
        return regs;
    }
    helper_regs(task)
}

#[inline(always)]
fn helper_regs(task: *const u8) -> *const pt_regs {
    unsafe { bpf_task_pt_regs(task as *mut _) as *const pt_regs }
}

/// Keeps the distance from `stack` to `regs`. The pointer is stored and read back as a number:
/// the verifier allows no arithmetic between the two kinds of pointer. Every task has the same
/// distance, so racing writers agree.
#[inline(never)]
fn learn(stack: u64, regs: *const pt_regs) {
    unsafe {
        write_volatile(addr_of_mut!(CW_PT_REGS_SEEN), regs as u64);
        let seen = read_volatile(addr_of!(CW_PT_REGS_SEEN));
        if seen > stack && seen - stack < 1 << 20 {
            write_volatile(addr_of_mut!(CW_PT_REGS_FROM_STACK), seen - stack);
        }
    }
}

/// `bpf_rdonly_cast(obj, btf_id)`: `obj` as a read-only pointer to the kernel type `btf_id`
/// (`btf_id` must be a constant to the verifier: a global userspace set). aya 0.14 resolves no
/// kfunc calls, so the call is written out whole with a placeholder id, which the loader
/// replaces with the running kernel's (probe/kfuncs.rs).
#[inline(always)]
unsafe fn rdonly_cast(obj: u64, btf_id: u32) -> *const u8 {
    let cast: u64;
    unsafe {
        core::arch::asm!(
            ".quad {call}",
            call = const KFUNC_RDONLY_CAST_CALL,
            inout("r1") obj => _,
            inout("r2") btf_id as u64 => _,
            lateout("r0") cast,
            out("r3") _, out("r4") _, out("r5") _,
            options(nostack),
        );
    }
    cast as *const u8
}

/// The syscall the current thread is in (its saved `orig_rax`), or `NO_SYSCALL`.
pub fn current_syscall() -> u32 {
    let regs = helper_regs(current());
    if regs.is_null() {
        return capwatch_common::NO_SYSCALL;
    }
    unsafe { bpf_probe_read_kernel(&(*regs).orig_rax) }.map_or(capwatch_common::NO_SYSCALL, |nr| nr as u32)
}
