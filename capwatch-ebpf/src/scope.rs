//! Which cgroups are watched: a subtree of the cgroup2 hierarchy, set by userspace at load time.
//! Everything outside it costs a few loads and a compare.

use core::ptr::read_volatile;

use aya_ebpf::helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id};

use crate::task;

/// The watched subtree's root cgroup id (1 is the cgroup2 root).
#[unsafe(no_mangle)]
static CW_WATCH_ROOT_ID: u64 = 1;
/// Its depth in the hierarchy (0 for the cgroup2 root).
#[unsafe(no_mangle)]
static CW_WATCH_ROOT_LEVEL: u32 = 0;
/// Whether processes in the root itself are watched (not by default: those are the host's).
#[unsafe(no_mangle)]
static CW_WATCH_ROOT_INCLUDED: u32 = 0;

/// Offsets read by userspace from the kernel's BTF, the path from a task to its cgroup2 id:
/// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.kn`, `kernfs_node.id` (0 where absent).
#[unsafe(no_mangle)]
static CW_TASK_CGROUPS_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_CSS_SET_DFL_CGRP_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_CGROUP_KN_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_KERNFS_NODE_ID_OFFSET: u32 = 0;

/// The current task's cgroup id when it is watched.
#[inline(always)]
pub fn watched_cgroup() -> Option<u64> {
    watched(task::current())
}

/// `watched_cgroup()` where the caller holds the current task (`task::current`).
#[inline(always)]
pub fn watched(task: *const u8) -> Option<u64> {
    let id = cgroup_id(task);
    let root = unsafe { read_volatile(&CW_WATCH_ROOT_ID) };
    if id == root {
        return (unsafe { read_volatile(&CW_WATCH_ROOT_INCLUDED) } != 0).then_some(id);
    }
    let level = unsafe { read_volatile(&CW_WATCH_ROOT_LEVEL) };
    // Every cgroup descends from the hierarchy's root: no ancestor lookup needed there.
    if level == 0 || unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) } == root {
        Some(id)
    } else {
        None
    }
}

/// The current task's cgroup2 id, as `bpf_get_current_cgroup_id` gives it
/// (kernel/bpf/helpers.c: `cgroup_id(task_dfl_cgroup(current))`, that is
/// `current->cgroups->dfl_cgrp->kn->id`, include/linux/cgroup.h), read by four loads from the
/// typed task: the helper takes and drops the RCU read lock, two calls more, which the program
/// does not need (it runs under that lock). Through the helper where an offset is unknown.
#[inline(always)]
fn cgroup_id(task: *const u8) -> u64 {
    let (cgroups, dfl_cgrp, kn, id) = unsafe {
        (
            read_volatile(&CW_TASK_CGROUPS_OFFSET),
            read_volatile(&CW_CSS_SET_DFL_CGRP_OFFSET),
            read_volatile(&CW_CGROUP_KN_OFFSET),
            read_volatile(&CW_KERNFS_NODE_ID_OFFSET),
        )
    };
    if cgroups == 0 || dfl_cgrp == 0 || kn == 0 || id == 0 {
        return unsafe { bpf_get_current_cgroup_id() };
    }
    // SAFETY: typed kernel pointers, each load at a field of the type the verifier knows it as
    // (the offsets come from the running kernel's BTF); a load through a null one reads 0.
    unsafe {
        let at = |base: *const u8, offset: u32| *(base.wrapping_add(offset as usize) as *const *const u8);
        let node = at(at(at(task, cgroups), dfl_cgrp), kn);
        *(node.wrapping_add(id as usize) as *const u64)
    }
}
