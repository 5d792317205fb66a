//! The benchmark's breakdown of capwatch's cost: programs on capwatch's hot hooks that run its
//! code up to one step and stop there (`cap::check_until`), beside empty programs on the other
//! hook the loop passes. `cargo xtask bench` measures them in the same alternating rounds as the
//! floor and the daemon; the difference between consecutive steps is what a step costs.
#![no_std]
#![no_main]
#![feature(core_intrinsics, asm_experimental_arch)]
#![allow(internal_features)]
// The modules are capwatch's own; only the check's path and the syscall exit's are used here.
#![allow(dead_code)]

mod aggregate;
mod calls;
mod cap;
mod consequence;
mod failure;
mod maps;
mod origin;
mod pending;
mod scope;
mod syscall_exit;
mod task;

use aya_ebpf::{bindings::pt_regs, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::cap::{check_until, step, Checked};

/// What a step found, turned into the program's return value (ignored by the kernel for
/// `tp_btf`), so that the work up to it cannot be optimised away.
#[inline(always)]
fn keep(found: u64) -> i32 {
    (found == 0x5eed_5eed) as i32
}

/// `cap_capable_tp` up to step `UNTIL`.
#[inline(always)]
fn cap_step<const UNTIL: u8>(ctx: &BtfTracePointContext) -> i32 {
    let cred: *const u8 = ctx.arg(0);
    let target_ns: *const u8 = ctx.arg(1);
    let cap: i32 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    keep(check_until::<UNTIL, _>(ctx, cap as u32, ret, 0, Checked::Typed(cred, target_ns)))
}

#[btf_tracepoint(function = "cap_capable")]
pub fn step_cap_scope(ctx: BtfTracePointContext) -> i32 {
    cap_step::<{ step::SCOPE }>(&ctx)
}

#[btf_tracepoint(function = "cap_capable")]
pub fn step_cap_syscall(ctx: BtfTracePointContext) -> i32 {
    cap_step::<{ step::SYSCALL }>(&ctx)
}

#[btf_tracepoint(function = "cap_capable")]
pub fn step_cap_judge(ctx: BtfTracePointContext) -> i32 {
    cap_step::<{ step::JUDGE }>(&ctx)
}

#[btf_tracepoint(function = "cap_capable")]
pub fn step_cap_origin(ctx: BtfTracePointContext) -> i32 {
    cap_step::<{ step::ORIGIN }>(&ctx)
}

#[btf_tracepoint(function = "cap_capable")]
pub fn step_cap_hash(ctx: BtfTracePointContext) -> i32 {
    cap_step::<{ step::HASH }>(&ctx)
}

#[btf_tracepoint(function = "cap_capable")]
pub fn step_cap_all(ctx: BtfTracePointContext) -> i32 {
    cap_step::<{ step::ALL }>(&ctx)
}

/// `sys_exit` up to reading its arguments and testing for EPERM/EACCES, before anything that
/// a denied check left (pending.rs) is looked at.
#[btf_tracepoint(function = "sys_exit")]
pub fn step_exit_args(ctx: BtfTracePointContext) -> i32 {
    let regs: *const pt_regs = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let syscall = unsafe { (*regs).orig_rax };
    keep(if ret == -1 || ret == -13 { syscall } else { 0 })
}

/// `sys_exit` with what a denied check left, and the failures: all of it but the syscall sets.
#[btf_tracepoint(function = "sys_exit")]
pub fn step_exit_all(ctx: BtfTracePointContext) -> i32 {
    syscall_exit::on_exit::<false>(ctx.arg(0), ctx.arg(1));
    0
}

/// `sys_exit` as main.rs has it, with the syscall sets (calls.rs): what every syscall pays.
#[btf_tracepoint(function = "sys_exit")]
pub fn step_exit_calls(ctx: BtfTracePointContext) -> i32 {
    syscall_exit::on_exit::<true>(ctx.arg(0), ctx.arg(1));
    0
}

/// The floor's empty programs on the hook a step leaves alone.
#[btf_tracepoint(function = "cap_capable")]
pub fn step_empty_cap_capable(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn step_empty_sys_exit(_ctx: BtfTracePointContext) -> i32 {
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
