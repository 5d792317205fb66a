//! A syscall's exit, as `tp_btf/sys_exit` sees every one on the host. What the syscall left
//! (pending.rs) goes to a failure's evidence or, where a capset succeeded, to what it kept; only
//! EPERM/EACCES go on to the failures; and the call joins its cgroup's syscall set (calls.rs),
//! which the benchmark's breakdown leaves out to tell its cost (`SETS`).

use aya_ebpf::bindings::pt_regs;

use crate::{calls, cap, failure, pending};

#[inline(always)]
pub fn on_exit<const SETS: bool>(regs: *const pt_regs, ret: i64) {
    let left = pending::take(unsafe { (*regs).orig_rax } as u32);
    if ret == 0 && left.kept != 0 {
        cap::on_kept(left.syscall, left.kept);
    }
    failure::on_exit(regs, ret, left.denied);
    if SETS {
        calls::on_exit(regs, left.syscall, ret);
    }
}
