//! The current task and its saved user registers, as pointers the verifier knows the types of:
//! their fields are plain loads. A program asks for the task once and passes it on.
//!
//! Where the kernel has the `bpf_rdonly_cast` kfunc (6.2+), neither takes a call into the
//! kernel: the verifier replaces the kfunc with a move (kernel/bpf/verifier.c
//! fixup_kfunc_call), where a helper is a call and its return.
//! - The task is what the per-CPU variable behind `current` holds (arch/x86/include/asm/
//!   current.h: `current_task`, inside `pcpu_hot` on 6.2–6.14). Each CPU finds its copy at its
//!   first check, from its run queue, and keeps the address in a per-CPU array, whose lookup the
//!   verifier inlines (6.10+).
//! - The registers lie at a fixed distance from the bottom of every task's kernel stack
//!   (arch/x86/include/asm/processor.h `task_pt_regs`: the stack's top, less its padding, less
//!   one `struct pt_regs`). The distance is learnt from `bpf_task_pt_regs` at the first check.
//!
//! A task read so is read-only to the verifier: a helper that takes a task gets `trusted()`.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::map,
    maps::PerCpuArray,
};
use capwatch_common::KFUNC_RDONLY_CAST_CALL;

/// The running kernel's BTF ids of `struct pt_regs` and `struct task_struct`, set by userspace
/// where the kernel has `bpf_rdonly_cast` and the loader gave the call below its id
/// (probe/kfuncs.rs); 0 otherwise, and the helpers are called.
#[unsafe(no_mangle)]
static CW_PT_REGS_BTF_ID: u32 = 0;
#[unsafe(no_mangle)]
static CW_TASK_STRUCT_BTF_ID: u32 = 0;
/// `task_struct.stack`, from the kernel's BTF (0 where absent).
#[unsafe(no_mangle)]
static CW_TASK_STACK_OFFSET: u32 = 0;
/// From a task's `stack` to its saved registers; 0 until a check learns it.
#[unsafe(no_mangle)]
static mut CW_PT_REGS_FROM_STACK: u64 = 0;
/// Where the distance is learnt: the registers' address as the helper gave it.
#[unsafe(no_mangle)]
static mut CW_PT_REGS_SEEN: u64 = 0;

/// `task_struct.se.cfs_rq` and `cfs_rq.rq`: a running task's CPU's run queue (0 where absent).
#[unsafe(no_mangle)]
static CW_TASK_SE_CFS_RQ_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_CFS_RQ_RQ_OFFSET: u32 = 0;
/// From a CPU's run queue (`runqueues`) to its copy of the variable that holds the current task,
/// two's complement: both are per-CPU variables (probe/offsets.rs). 0 where unknown.
#[unsafe(no_mangle)]
static CW_CURRENT_TASK_FROM_RUNQUEUES: u64 = 0;

/// Per CPU: the address of its copy of the variable that holds the current task; `UNKNOWN`
/// until the CPU's first check, `HELPER` where that check could not confirm one.
#[map]
static CW_CURRENT_TASK_AT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
const UNKNOWN: u64 = 0;
const HELPER: u64 = 1;

/// What reading the task and its registers by casts takes: `struct pt_regs`' and `struct
/// task_struct`'s ids and `task_struct.stack`, where the kernel has all of them. One test for
/// both, so that the task is read by a cast exactly where the registers are.
#[inline(always)]
fn casts() -> Option<(u32, u32, u32)> {
    let ids = unsafe {
        (read_volatile(&CW_PT_REGS_BTF_ID), read_volatile(&CW_TASK_STRUCT_BTF_ID), read_volatile(&CW_TASK_STACK_OFFSET))
    };
    (ids.0 != 0 && ids.1 != 0 && ids.2 != 0).then_some(ids)
}

/// The current task, and how it was read: its saved registers are read the same way.
#[derive(Clone, Copy)]
pub struct Current {
    /// `struct task_struct *`, for loads and `bpf_probe_read_kernel`.
    pub task: *const u8,
    /// `struct pt_regs`' id and `task_struct.stack`, where the task was read by casts.
    casts: Option<(u32, u32)>,
}

/// The current task.
#[inline(always)]
pub fn current() -> Current {
    let Some((pt_regs_id, task_id, stack_at)) = casts() else {
        return Current { task: trusted(), casts: None };
    };
    let holder = match CW_CURRENT_TASK_AT.get_ptr_mut(0) {
        Some(at) => match unsafe { read_volatile(at) } {
            UNKNOWN => find_current_task(at, pt_regs_id),
            holder => holder,
        },
        None => HELPER,
    };
    let task = match holder {
        HELPER => trusted() as u64,
        holder => unsafe { read_u64(holder, pt_regs_id) },
    };
    // Cast either way, so that the verifier knows one type of task after this, not two.
    Current { task: unsafe { rdonly_cast(task, task_id) }, casts: Some((pt_regs_id, stack_at)) }
}

/// The current task as the helper gives it: what a helper that takes a task wants.
#[inline(always)]
fn trusted() -> *const u8 {
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// Finds this CPU's copy of the variable that holds the current task, keeps its address in this
/// CPU's `at` and returns it, or `HELPER` where it does not hold the task the helper gives.
/// The copy lies at a fixed distance from this CPU's run queue, which is the one the running
/// task is queued on (kernel/sched/sched.h `set_task_rq`: `se.cfs_rq` follows the task's CPU).
/// `at` is written once, with what was found: a program that runs on this CPU meanwhile (one
/// that preempted or interrupted this one) finds it unknown, or known.
#[inline(never)]
fn find_current_task(at: *mut u64, pt_regs_id: u32) -> u64 {
    let (cfs_rq_at, rq_at, from_rq) = unsafe {
        (
            read_volatile(&CW_TASK_SE_CFS_RQ_OFFSET),
            read_volatile(&CW_CFS_RQ_RQ_OFFSET),
            read_volatile(&CW_CURRENT_TASK_FROM_RUNQUEUES),
        )
    };
    let task = trusted();
    let mut found = HELPER;
    if cfs_rq_at != 0 && rq_at != 0 && from_rq != 0 {
        // SAFETY: typed kernel pointers, each load at a field the running kernel's BTF gives;
        // the holder's address is only ever read through a cast.
        unsafe {
            let cfs_rq = *(task.wrapping_add(cfs_rq_at as usize) as *const *const u8);
            let rq = *(cfs_rq.wrapping_add(rq_at as usize) as *const *const u8);
            let holder = rq.wrapping_add(from_rq as usize) as u64;
            if read_u64(holder, pt_regs_id) == task as u64 {
                found = holder;
            }
        }
    }
    unsafe {
        write_volatile(at, found);
        read_volatile(at)
    }
}

/// The 8 bytes at kernel address `at`, read through a cast to `struct pt_regs` (id
/// `pt_regs_id`), whose first field (`r15`) is 8 bytes at offset 0: the verifier reads a cast
/// pointer only through a struct's fields.
#[inline(always)]
unsafe fn read_u64(at: u64, pt_regs_id: u32) -> u64 {
    unsafe { *(rdonly_cast(at, pt_regs_id) as *const u64) }
}

impl Current {
    /// The 8 bytes at kernel address `at`, whatever the verifier takes it for, where the task was
    /// read by casts: a load the verifier allows no other way (an element of a struct's trailing
    /// array of pointers: kernel/bpf/btf.c btf_struct_walk walks only arrays of structs there).
    /// None where it was read through the helpers.
    #[inline(always)]
    pub fn peek(self, at: *const u8) -> Option<u64> {
        let (pt_regs_id, _) = self.casts?;
        Some(unsafe { read_u64(at as u64, pt_regs_id) })
    }

    /// The task's saved user registers: `orig_rax` is the syscall it is in (-1 outside one),
    /// `rdi`, `rsi`, `rdx`… its arguments (the uapi `pt_regs` layout). Read-only.
    #[inline(always)]
    pub fn saved_regs(self) -> *const pt_regs {
        let Some((pt_regs_id, stack_at)) = self.casts else {
            // The task is the helper's.
            return unsafe { bpf_task_pt_regs(self.task as *mut _) as *const pt_regs };
        };
        // SAFETY: a typed task; the field's offset comes from the running kernel's BTF.
        let stack = unsafe { *(self.task.wrapping_add(stack_at as usize) as *const u64) };
        let from_stack = unsafe { read_volatile(addr_of!(CW_PT_REGS_FROM_STACK)) };
        if from_stack != 0 {
            return unsafe { rdonly_cast(stack.wrapping_add(from_stack), pt_regs_id) } as *const pt_regs;
        }
        let regs = helper_regs();
        learn(stack, regs);
        regs
    }
}

/// The current task's saved registers, from the helper.
#[inline(always)]
fn helper_regs() -> *const pt_regs {
    unsafe { bpf_task_pt_regs(trusted() as *mut _) as *const pt_regs }
}

/// Keeps the distance from `stack` to `regs`. The pointer is stored and read back as a number:
/// the verifier allows no arithmetic between the two kinds of pointer. What is read back is
/// another CPU's where it stored its own meanwhile: only this thread's own registers count.
/// Every task has the same distance, so the writers that do agree.
#[inline(never)]
fn learn(stack: u64, regs: *const pt_regs) {
    unsafe {
        write_volatile(addr_of_mut!(CW_PT_REGS_SEEN), regs as u64);
        let seen = read_volatile(addr_of!(CW_PT_REGS_SEEN));
        // The distance is taken from the number before it is compared with the pointer, and kept
        // where the compiler cannot see it: knowing the two equal, it would take it from the
        // pointer, a subtraction the verifier refuses (6.12: "math between ptr_ pointer and
        // register with unbounded min value").
        let mut distance = 0u64;
        write_volatile(&mut distance, seen.wrapping_sub(stack));
        if seen == regs as u64 && seen > stack {
            let distance = read_volatile(&distance);
            if distance < 1 << 20 {
                write_volatile(addr_of_mut!(CW_PT_REGS_FROM_STACK), distance);
            }
        }
    }
}

/// `bpf_rdonly_cast(obj, btf_id)`: `obj` as a read-only pointer to the kernel type `btf_id`
/// (`btf_id` must be a constant to the verifier: a global userspace set). aya 0.14 resolves no
/// kfunc calls, so the call is written out whole with a placeholder id, which the loader
/// replaces with the running kernel's (probe/ksyms.rs).
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
    let regs = helper_regs();
    if regs.is_null() {
        return capwatch_common::NO_SYSCALL;
    }
    unsafe { bpf_probe_read_kernel(&(*regs).orig_rax) }.map_or(capwatch_common::NO_SYSCALL, |nr| nr as u32)
}
