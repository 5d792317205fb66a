//! Syscalls that fail with EPERM or EACCES, into `CW_FAILURES`. This runs at every syscall exit
//! on the host, so everything else leaves after one compare.

use aya_ebpf::bindings::pt_regs;
use capwatch_common::{loss, EventKind, FailKey, NewFailureEvent};

use crate::{
    aggregate::{self, First},
    maps::CW_FAILURES,
    origin, scope,
};

const EPERM: i64 = 1;
const EACCES: i64 = 13;

#[inline(always)]
pub fn on_exit(regs: *const pt_regs, ret: i64) {
    if ret != -EPERM && ret != -EACCES {
        return;
    }
    let Some(cgroup_id) = scope::watched_cgroup() else {
        return;
    };
    let key = FailKey {
        cgroup_id,
        syscall: unsafe { (*regs).orig_rax } as u32,
        errno: -ret as u16,
        origin: origin::current(),
    };
    let now = aggregate::now();
    if aggregate::bump(&CW_FAILURES, &key, now) {
        return;
    }
    if let First::Created(totals) = aggregate::create(&CW_FAILURES, &key, now, -1, loss::FAIL_MAP_FULL) {
        aggregate::announce(NewFailureEvent { kind: EventKind::NewFailure as u32, _pad: 0, key, totals });
    }
}
