//! Which cgroups are watched: a subtree of the cgroup2 hierarchy, set by userspace at load time.
//! Everything outside it costs one helper call and a compare.

use core::ptr::read_volatile;

use aya_ebpf::helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id};

/// The watched subtree's root cgroup id (1 is the cgroup2 root).
#[unsafe(no_mangle)]
static CW_WATCH_ROOT_ID: u64 = 1;
/// Its depth in the hierarchy (0 for the cgroup2 root).
#[unsafe(no_mangle)]
static CW_WATCH_ROOT_LEVEL: u32 = 0;
/// Whether processes in the root itself are watched (not by default: those are the host's).
#[unsafe(no_mangle)]
static CW_WATCH_ROOT_INCLUDED: u32 = 0;

/// The current task's cgroup id when it is watched.
#[inline(always)]
pub fn watched_cgroup() -> Option<u64> {
    let id = unsafe { bpf_get_current_cgroup_id() };
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
