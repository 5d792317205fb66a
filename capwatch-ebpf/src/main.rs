//! capwatch's kernel side: thin program entries. The logic lives in the modules named for it.
#![no_std]
#![no_main]
#![feature(core_intrinsics, asm_experimental_arch)]
#![allow(internal_features)]

mod aggregate;
mod callers;
mod calls;
mod cap;
mod consequence;
mod exec;
mod failure;
mod maps;
mod origin;
mod pending;
mod scope;
mod syscall_exit;
mod task;

use aya_ebpf::{
    macros::{btf_tracepoint, fexit, kprobe, kretprobe},
    programs::{BtfTracePointContext, FExitContext, ProbeContext, RetProbeContext},
};

/// `tp_btf/cap_capable(cred, target_ns, capable_ns, cap, ret)`: the capability tracepoint (6.14+).
/// It has no `opts`, so advisory checks are told apart later from the call site.
#[btf_tracepoint(function = "cap_capable")]
pub fn cap_capable_tp(ctx: BtfTracePointContext) -> i32 {
    let cred: *const u8 = ctx.arg(0);
    let target_ns: *const u8 = ctx.arg(1);
    let cap: i32 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    cap::on_check(&ctx, cap as u32, ret, 0, cap::Checked::Typed(cred, target_ns));
    0
}

/// fexit on `cap_capable(cred, ns, cap, opts)`: arguments and verdict in one program, so
/// nothing has to be carried from entry to return. The return value follows the four arguments
/// in the trampoline's context (read as an argument, it needs no `bpf_get_func_ret`, 5.17+).
#[fexit(function = "cap_capable")]
pub fn cap_capable_fexit(ctx: FExitContext) -> i32 {
    let cred: *const u8 = ctx.arg(0);
    let ns: *const u8 = ctx.arg(1);
    let cap: i32 = ctx.arg(2);
    let opts: u32 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    cap::on_check(&ctx, cap as u32, ret, capwatch_common::flags_from_opts(opts), cap::Checked::Typed(cred, ns));
    0
}

/// kprobe on `cap_capable(cred, ns, cap, opts)`: stashes the arguments until the return.
#[kprobe]
pub fn cap_capable_entry(ctx: ProbeContext) -> u32 {
    if let (Some(cred), Some(ns), Some(cap), Some(opts)) =
        (ctx.arg::<*const u8>(0), ctx.arg::<*const u8>(1), ctx.arg::<i32>(2), ctx.arg::<u32>(3))
    {
        cap::on_kprobe_entry(cred, ns, cap as u32, opts);
    }
    0
}

/// kretprobe on `cap_capable`: the verdict, joined with the stashed arguments.
#[kretprobe]
pub fn cap_capable_return(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    cap::on_kprobe_return(&ctx, ret);
    0
}

/// fexit on `cap_capset(new, old, effective, inheritable, permitted)`: its CAP_SETPCAP check,
/// where `cap_capable` was inlined into it (callers.rs).
#[fexit(function = "cap_capset")]
pub fn cap_capset_fexit(ctx: FExitContext) -> i32 {
    callers::on_capset(&ctx);
    0
}

/// kprobe on `cap_capset`'s entry: the same check, judged before it is made.
#[kprobe]
pub fn cap_capset_entry(ctx: ProbeContext) -> u32 {
    callers::on_capset(&ctx);
    0
}

/// fexit on `cap_mmap_addr(addr)`: its CAP_SYS_RAWIO check below vm.mmap_min_addr, the return
/// being its answer.
#[fexit(function = "cap_mmap_addr")]
pub fn cap_mmap_addr_fexit(ctx: FExitContext) -> i32 {
    let addr: u64 = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    callers::on_mmap_addr(&ctx, addr, Some(ret));
    0
}

/// kprobe on `cap_mmap_addr`'s entry.
#[kprobe]
pub fn cap_mmap_addr_entry(ctx: ProbeContext) -> u32 {
    if let Some(addr) = ctx.arg::<u64>(0) {
        callers::on_mmap_addr(&ctx, addr, None);
    }
    0
}

/// fexit on `cap_vm_enough_memory(mm, pages)`: its advisory CAP_SYS_ADMIN check.
#[fexit(function = "cap_vm_enough_memory")]
pub fn cap_vm_enough_memory_fexit(ctx: FExitContext) -> i32 {
    callers::on_vm_enough_memory(&ctx);
    0
}

/// kprobe on `cap_vm_enough_memory`'s entry.
#[kprobe]
pub fn cap_vm_enough_memory_entry(ctx: ProbeContext) -> u32 {
    callers::on_vm_enough_memory(&ctx);
    0
}

/// `tp_btf/sys_exit(regs, ret)`: every syscall's return on the host (syscall_exit.rs).
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    syscall_exit::on_exit::<true>(ctx.arg(0), ctx.arg(1));
    0
}

/// `tp_btf/sched_process_fork(parent, child)`: the child inherits its parent's origin.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn process_fork(ctx: BtfTracePointContext) -> i32 {
    calls::invalidate();
    if scope::watched_cgroup().is_some() {
        let child: *const u8 = ctx.arg(1);
        origin::on_fork(child);
    }
    0
}

/// `tp_btf/sched_process_exec(task, old_pid, bprm)`: the runtime hands over to a command, and
/// the program exec'd is recorded for its file capabilities.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn process_exec(ctx: BtfTracePointContext) -> i32 {
    if let Some(cgroup_id) = scope::watched_cgroup() {
        let bprm: *const u8 = ctx.arg(2);
        origin::on_exec(cgroup_id, bprm);
        calls::invalidate();
        exec::on_exec(cgroup_id, bprm);
    }
    0
}

/// `tp_btf/cgroup_attach_task(dst_cgrp, path, task, threadgroup)`: a process moved into a
/// cgroup from outside (the runtime placing its init) sets it up until it execs a program.
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn cgroup_attach(ctx: BtfTracePointContext) -> i32 {
    calls::invalidate();
    let (dst, task): (*const u8, *const u8) = (ctx.arg(0), ctx.arg(2));
    origin::on_attach(dst, task);
    0
}

/// `tp_btf/sched_process_exit(task)`: an exiting thread leaves nothing behind for the next one
/// given its id: no denied checks, no kprobe stash, and (a process's leader) no origin.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn process_exit(_ctx: BtfTracePointContext) -> i32 {
    if let Some(cgroup_id) = scope::watched_cgroup() {
        calls::on_thread_exit(cgroup_id, task::current_syscall());
        pending::forget();
        cap::forget_kprobe_stash();
        origin::on_exit(cgroup_id);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
