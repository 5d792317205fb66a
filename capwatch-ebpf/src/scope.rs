//! Which cgroups are watched: a subtree of the cgroup2 hierarchy, set by userspace at load time.
//! Everything outside it costs a few loads and a compare.

use core::ptr::read_volatile;

use aya_ebpf::helpers::{
    bpf_probe_read_kernel,
    generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id},
};

use crate::task::{self, Current};

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
/// `cgroup.level` and `cgroup.ancestors`: a cgroup's ancestor at a depth (0 where absent).
#[unsafe(no_mangle)]
static CW_CGROUP_LEVEL_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_CGROUP_ANCESTORS_OFFSET: u32 = 0;

/// The current task's cgroup id when it is watched.
#[inline(always)]
pub fn watched_cgroup() -> Option<u64> {
    watched(task::current())
}

/// `watched_cgroup()` where the caller holds the current task (`task::current`).
///
/// The task's cgroup2 cgroup, as `bpf_get_current_cgroup_id` and
/// `bpf_get_current_ancestor_cgroup_id` find it (kernel/bpf/helpers.c: `task_dfl_cgroup
/// (current)`, that is `current->cgroups->dfl_cgrp`, include/linux/cgroup.h), read by loads from
/// the typed task: the helpers take and drop the RCU read lock, calls the program does not need
/// (it runs under that lock). Through the helpers where an offset is unknown.
#[inline(always)]
pub fn watched(current: Current) -> Option<u64> {
    let (cgroups, dfl_cgrp, kn, kn_id) = unsafe {
        (
            read_volatile(&CW_TASK_CGROUPS_OFFSET),
            read_volatile(&CW_CSS_SET_DFL_CGRP_OFFSET),
            read_volatile(&CW_CGROUP_KN_OFFSET),
            read_volatile(&CW_KERNFS_NODE_ID_OFFSET),
        )
    };
    let known = cgroups != 0 && dfl_cgrp != 0 && kn != 0 && kn_id != 0;
    let cgroup = known.then(|| load_ptr(load_ptr(current.task, cgroups), dfl_cgrp));
    let id = cgroup.map_or_else(|| unsafe { bpf_get_current_cgroup_id() }, |cgroup| cgroup_id(cgroup, kn, kn_id));
    let root = unsafe { read_volatile(&CW_WATCH_ROOT_ID) };
    if id == root {
        return (unsafe { read_volatile(&CW_WATCH_ROOT_INCLUDED) } != 0).then_some(id);
    }
    let level = unsafe { read_volatile(&CW_WATCH_ROOT_LEVEL) };
    // Every cgroup descends from the hierarchy's root: no ancestor lookup needed there.
    if level == 0 {
        return Some(id);
    }
    let ancestor = cgroup
        .and_then(|cgroup| ancestor_id(current, cgroup, level, kn, kn_id))
        .unwrap_or_else(|| unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) });
    (ancestor == root).then_some(id)
}

/// A cgroup's id: `cgroup_id()` (include/linux/cgroup.h), `cgrp->kn->id`, at the offsets of
/// `cgroup.kn` and `kernfs_node.id`.
#[inline(always)]
fn cgroup_id(cgroup: *const u8, kn: u32, kn_id: u32) -> u64 {
    // SAFETY: as `load_ptr`.
    unsafe { *(load_ptr(cgroup, kn).wrapping_add(kn_id as usize) as *const u64) }
}

/// The id of a cgroup's ancestor at depth `level`: `cgroup_ancestor()` (include/linux/cgroup.h),
/// `cgrp->ancestors[level]`, none (id 0) below the cgroup's own depth, then `cgroup_id()`. Read
/// through casts (`Current::peek`): the verifier allows no load from a trailing array of
/// pointers. None where an offset is unknown or the task was not read by casts.
#[inline(always)]
fn ancestor_id(current: Current, cgroup: *const u8, level: u32, kn: u32, kn_id: u32) -> Option<u64> {
    let (level_at, ancestors_at) =
        unsafe { (read_volatile(&CW_CGROUP_LEVEL_OFFSET), read_volatile(&CW_CGROUP_ANCESTORS_OFFSET)) };
    if level_at == 0 || ancestors_at == 0 {
        return None;
    }
    // SAFETY: as `load_ptr`.
    let depth = unsafe { *(cgroup.wrapping_add(level_at as usize) as *const i32) };
    if depth < level as i32 {
        return Some(0);
    }
    let ancestor = current.peek(cgroup.wrapping_add((ancestors_at + level * 8) as usize))? as *const u8;
    let node = current.peek(ancestor.wrapping_add(kn as usize))? as *const u8;
    current.peek(node.wrapping_add(kn_id as usize))
}

/// Where a write of `task` into the `cgroup.procs` of `dst` left it: `dst`'s id where `dst` is
/// the task's cgroup2 cgroup now (`task_dfl_cgroup`), None where it is a cgroup v1 hierarchy's,
/// 0 where that cannot be told (an offset unknown, a read refused). Read with probe reads: `task`
/// is any task, and the program runs once per write, off every hot path.
pub fn cgroup2_destination(task: *const u8, dst: *const u8) -> Option<u64> {
    let offsets = unsafe {
        [
            read_volatile(&CW_TASK_CGROUPS_OFFSET),
            read_volatile(&CW_CSS_SET_DFL_CGRP_OFFSET),
            read_volatile(&CW_CGROUP_KN_OFFSET),
            read_volatile(&CW_KERNFS_NODE_ID_OFFSET),
        ]
    };
    let [cgroups, dfl_cgrp, kn, kn_id] = offsets;
    if offsets.contains(&0) {
        return Some(0);
    }
    let read = |base: *const u8, offset: u32| unsafe {
        bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const u64).unwrap_or(0)
    };
    match read(read(task, cgroups) as *const u8, dfl_cgrp) {
        0 => return Some(0),
        now if now != dst as u64 => return None,
        _ => {}
    }
    Some(read(read(dst, kn) as *const u8, kn_id))
}

/// The pointer at `offset` in the kernel object at `base`.
/// SAFETY, for every load here: typed kernel pointers, each load at a field of the type the
/// verifier knows it as (the offsets come from the running kernel's BTF); a load through a null
/// one reads 0.
#[inline(always)]
fn load_ptr(base: *const u8, offset: u32) -> *const u8 {
    unsafe { *(base.wrapping_add(offset as usize) as *const *const u8) }
}
