//! Who in a container's cgroup is acting: the container's own processes, the OCI runtime setting
//! it up, or a command an operator started later (`docker exec`).
//!
//! A process moved into a cgroup from outside (`cgroup_attach_task`: the runtime writes its
//! init's pid into `cgroup.procs`; written again into the cgroup it is in, it has not moved) is
//! the runtime until it execs a program: the first such exec while no command runs in the cgroup
//! starts the container's own command, any exec while one runs is an exec session. Execs of
//! anonymous files (a runtime re-executing itself from a memfd, as runc does against
//! CVE-2019-5736) are the runtime's own. Children inherit their parent's origin at fork. Only
//! processes that came in some other way (already running when capwatch attached, or cloned
//! straight into the cgroup) are classified by their command name.

use core::ptr::{addr_of, addr_of_mut, read_volatile};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use capwatch_common::Origin;

use crate::{aggregate, scope};

/// Origin by process (tgid). Processes that never made a check are classified on first use.
/// Every change to it goes through `set` or `unset`, which bump `CW_ORIGINS_GENERATION`.
#[map]
pub static CW_ORIGINS: LruHashMap<u32, Origin> = LruHashMap::with_max_entries(65536, 0);

/// The last origin each CPU looked up, packed into one word (written and read whole, so that a
/// program preempted on the same CPU never leaves half an entry): `CW_ORIGINS_GENERATION` as it
/// was before the lookup, the tgid, and the origin plus one (0: empty). An entry serves only
/// while the generation is unchanged, that is while `CW_ORIGINS` is: a cheaper lookup than the
/// hash map's for a process that makes check after check.
#[map]
static CW_ORIGIN_CACHE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// How many times `CW_ORIGINS` has changed (bumped after each change).
#[unsafe(no_mangle)]
static mut CW_ORIGINS_GENERATION: u64 = 0;

/// tgids are below PID_MAX_LIMIT, 2^22 on 64-bit kernels; the generation keeps 34 bits.
const TGID_BITS: u32 = 22;
const ORIGIN_BITS: u32 = 8;

/// What each process moved into a cgroup was running then and where it was moved.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct MovedIn {
    /// The program file's inode (0 where unread): executing it again is the runtime
    /// re-executing itself.
    exe: u64,
    /// The cgroup2 cgroup's id (0 where unread): written into it again, it has not moved.
    cgroup: u64,
}

#[map]
pub static CW_MOVED_IN: LruHashMap<u32, MovedIn> = LruHashMap::with_max_entries(16384, 0);

/// Cgroups whose own command runs, with the process (tgid) that started it; 0 where userspace
/// found the cgroup running when it attached.
#[map]
pub static CW_STARTED: HashMap<u64, u64> = HashMap::with_max_entries(16384, 0);

/// Offsets read by userspace from the kernel's BTF: `task_struct.tgid`, `linux_binprm.file`,
/// `file.f_inode`, `inode.__i_nlink`, `file.f_path.dentry`, `dentry.d_name.name`.
#[unsafe(no_mangle)]
static CW_TASK_TGID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_BPRM_FILE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_FILE_INODE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_INODE_NLINK_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_FILE_DENTRY_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_DENTRY_NAME_OFFSET: u32 = 0;
/// `task_struct.mm` and `mm_struct.exe_file`: the program a process runs.
#[unsafe(no_mangle)]
static CW_TASK_MM_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CW_MM_EXE_FILE_OFFSET: u32 = 0;

/// The name every memfd's dentry has (mm/memfd.c: "memfd:" and the name asked for).
const MEMFD_PREFIX: &[u8; 6] = b"memfd:";

/// Command names of OCI runtimes while they set a container up.
const RUNTIME_COMMS: [&[u8]; 4] = [b"runc", b"crun", b"youki", b"runsc"];

fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// The current process's origin, classified by its command name the first time it is asked.
#[inline(always)]
pub fn current() -> Origin {
    of_tgid(current_tgid())
}

/// `current()` where the caller holds the current task as a typed pointer
/// (`bpf_get_current_task_btf`): its tgid is a plain load, not a helper call.
#[inline(always)]
pub fn of_current_task(task: *const u8) -> Origin {
    let offset = unsafe { read_volatile(&CW_TASK_TGID_OFFSET) };
    if offset == 0 {
        return current();
    }
    of_tgid(unsafe { *(task.wrapping_add(offset as usize) as *const u32) })
}

#[inline(always)]
fn of_tgid(tgid: u32) -> Origin {
    // Read before the map: a change made after this read bumps the generation past it.
    let generation = unsafe { read_volatile(addr_of!(CW_ORIGINS_GENERATION)) };
    let tag = (generation << (TGID_BITS + ORIGIN_BITS)) | ((tgid as u64 & ((1 << TGID_BITS) - 1)) << ORIGIN_BITS);
    let cache = CW_ORIGIN_CACHE.get_ptr_mut(0);
    if let Some(cached) = cache.map(|c| unsafe { read_volatile(c) }) {
        if cached >> ORIGIN_BITS == tag >> ORIGIN_BITS {
            if let Some(origin) = Origin::from_raw(((cached & 0xff) as u16).wrapping_sub(1)) {
                return origin;
            }
        }
    }
    let origin = match unsafe { CW_ORIGINS.get(tgid) } {
        Some(origin) => *origin,
        None => classified(tgid),
    };
    if let Some(cache) = cache {
        unsafe { core::ptr::write_volatile(cache, tag | (origin.raw() as u64 + 1)) };
    }
    origin
}

/// A process's origin by its command name, kept unless something that knows better (the
/// runtime moving it in, `on_attach`, on another CPU) set one between the lookup that found none
/// and now: the process may be making syscalls while it is moved.
#[inline(always)]
fn classified(tgid: u32) -> Origin {
    let origin = classify();
    if CW_ORIGINS.insert(tgid, origin, BPF_NOEXIST as u64).is_ok() {
        bump_generation();
        return origin;
    }
    unsafe { CW_ORIGINS.get(tgid) }.copied().unwrap_or(origin)
}

/// `CW_ORIGINS[tgid] = origin`, then a new generation: every CPU's cached origin is stale.
#[inline(always)]
fn set(tgid: u32, origin: Origin) {
    let _ = CW_ORIGINS.insert(tgid, origin, 0);
    bump_generation();
}

/// Removes `tgid` from `CW_ORIGINS`, then a new generation.
#[inline(always)]
fn unset(tgid: u32) {
    let _ = CW_ORIGINS.remove(tgid);
    bump_generation();
}

#[inline(always)]
fn bump_generation() {
    unsafe { aggregate::add(addr_of_mut!(CW_ORIGINS_GENERATION), 1) };
}

fn classify() -> Origin {
    let Ok(comm) = bpf_get_current_comm() else { return Origin::App };
    for name in RUNTIME_COMMS {
        if comm.starts_with(name) {
            return Origin::Runtime;
        }
    }
    Origin::App
}

/// The `tgid` of a task.
fn tgid_of(task: *const u8) -> Option<u32> {
    let offset = unsafe { read_volatile(&CW_TASK_TGID_OFFSET) };
    if offset == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel(task.wrapping_add(offset as usize) as *const i32) }.ok().map(|tgid| tgid as u32)
}

/// `cgroup_attach_task`: a process moved into a cgroup from outside sets something up (the
/// runtime's init) until it execs a program. Marked whatever the cgroup: one outside the watched
/// subtree never reads the mark.
///
/// The tracepoint follows every write of a pid into a `cgroup.procs`, of any hierarchy, whether
/// or not the process moved (kernel/cgroup/cgroup.c cgroup_attach_task: `TRACE_CGROUP_PATH
/// (attach_task, …)` after `cgroup_migrate`, which leaves a task already in `dst_cgrp` where it
/// is). So a write into a cgroup v1 hierarchy, which capwatch does not key on, changes nothing,
/// and neither does a write into the cgroup2 cgroup the process was last moved into: systemd
/// writes a service's pid from both sides of the fork (src/core/execute.c exec_spawn, "both in the
/// child … and in the parent"), and the parent's write can come after the child exec'd the
/// service's program.
pub fn on_attach(dst: *const u8, task: *const u8) {
    let Some(tgid) = tgid_of(task) else { return };
    let Some(cgroup) = scope::cgroup2_destination(task, dst) else { return };
    if cgroup != 0 && unsafe { CW_MOVED_IN.get(tgid) }.is_some_and(|moved| moved.cgroup == cgroup) {
        return;
    }
    set(tgid, Origin::Runtime);
    let exe = read_ptr(task, at(&CW_TASK_MM_OFFSET))
        .and_then(|mm| read_ptr(mm, at(&CW_MM_EXE_FILE_OFFSET)))
        .and_then(|file| read_ptr(file, at(&CW_FILE_INODE_OFFSET)));
    let _ = CW_MOVED_IN.insert(tgid, MovedIn { exe: exe.map_or(0, |inode| inode as u64), cgroup }, 0);
}

fn at(offset: &u32) -> u32 {
    unsafe { read_volatile(offset) }
}

/// The pointer at `base + offset`; None where the offset is unknown or the read fails.
fn read_ptr(base: *const u8, offset: u32) -> Option<*const u8> {
    if offset == 0 || base.is_null() {
        return None;
    }
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const *const u8) }.ok()
}

/// `sched_process_fork`, in the parent: a new process inherits the parent's origin; a reused
/// pid loses whatever a dead process left behind.
pub fn on_fork(child: *const u8) {
    let Some(child_tgid) = tgid_of(child) else { return };
    if child_tgid == current_tgid() {
        return; // a thread: it shares the process's entry
    }
    set(child_tgid, current());
}

/// `sched_process_exec`: a runtime process that execs a program becomes the container's command
/// (when none runs in its cgroup) or an exec session (when one does).
pub fn on_exec(cgroup_id: u64, bprm: *const u8) {
    let tgid = current_tgid();
    let was_runtime = unsafe { CW_ORIGINS.get(tgid) }.is_some_and(|o| *o == Origin::Runtime);
    if !was_runtime || runtime_itself(tgid, bprm) {
        return;
    }
    let origin = if unsafe { CW_STARTED.get(cgroup_id) }.is_some() {
        Origin::Exec
    } else {
        let _ = CW_STARTED.insert(cgroup_id, tgid as u64, 0);
        Origin::App
    };
    set(tgid, origin);
}

/// Whether an exec re-executes the runtime itself rather than starting a program: the program
/// file it ran when it was moved into the cgroup (runc re-executes itself through a read-only
/// bind mount of its binary), or a file with no name on any filesystem (a memfd copy of it, or an
/// unlinked file).
fn runtime_itself(tgid: u32, bprm: *const u8) -> bool {
    let Some(file) = read_ptr(bprm, at(&CW_BPRM_FILE_OFFSET)) else { return false };
    let inode = read_ptr(file, at(&CW_FILE_INODE_OFFSET));
    if let (Some(inode), Some(moved)) = (inode, unsafe { CW_MOVED_IN.get(tgid) }) {
        if moved.exe != 0 && inode as u64 == moved.exe {
            return true;
        }
    }
    let memfd = read_ptr(file, at(&CW_FILE_DENTRY_OFFSET))
        .and_then(|dentry| read_ptr(dentry, at(&CW_DENTRY_NAME_OFFSET)))
        .and_then(|name| unsafe { bpf_probe_read_kernel(name as *const [u8; 6]) }.ok())
        .is_some_and(|prefix| prefix == *MEMFD_PREFIX);
    let nlink_at = at(&CW_INODE_NLINK_OFFSET);
    let unlinked = inode.is_some_and(|inode| {
        nlink_at != 0
            && unsafe { bpf_probe_read_kernel(inode.wrapping_add(nlink_at as usize) as *const u32) }
                .is_ok_and(|nlink| nlink == 0)
    });
    memfd || unlinked
}

/// `sched_process_exit` of a process's leader: its pid starts clean, and if it was its cgroup's
/// command, no command runs there any more.
pub fn on_exit(cgroup_id: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if pid_tgid as u32 != tgid {
        return;
    }
    unset(tgid);
    let _ = CW_MOVED_IN.remove(tgid);
    if unsafe { CW_STARTED.get(cgroup_id) }.is_some_and(|starter| *starter == tgid as u64) {
        let _ = CW_STARTED.remove(cgroup_id);
    }
}
