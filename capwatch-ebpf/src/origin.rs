//! Who in a container's cgroup is acting: the container's own processes, the OCI runtime setting
//! it up, or a command an operator started later (`docker exec`). The runtime's processes enter
//! the cgroup from outside and run under the runtime's name (`runc:[2:INIT]`) until they exec
//! the command; the first such exec in a cgroup starts the container's own command, every later
//! one an exec session. Children inherit their parent's origin at fork.

use core::ptr::read_volatile;

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::map,
    maps::{HashMap, LruHashMap},
};
use capwatch_common::Origin;

/// Origin by process (tgid). Processes that never made a check are classified on first use.
#[map]
pub static CW_ORIGINS: LruHashMap<u32, Origin> = LruHashMap::with_max_entries(65536, 0);

/// Cgroups whose own command has started (set by the first exec out of the runtime; userspace
/// marks the cgroups that were running before it attached).
#[map]
pub static CW_STARTED: HashMap<u64, u64> = HashMap::with_max_entries(16384, 0);

/// Offset of `tgid` in `struct task_struct`, read by userspace from the kernel's BTF.
#[unsafe(no_mangle)]
static CW_TASK_TGID_OFFSET: u32 = 0;

/// Command names of OCI runtimes while they set a container up.
const RUNTIME_COMMS: [&[u8]; 4] = [b"runc", b"crun", b"youki", b"runsc"];

fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// The current process's origin, classified by its command name the first time it is asked.
#[inline(always)]
pub fn current() -> Origin {
    let tgid = current_tgid();
    if let Some(origin) = unsafe { CW_ORIGINS.get(tgid) } {
        return *origin;
    }
    let origin = classify();
    let _ = CW_ORIGINS.insert(tgid, origin, 0);
    origin
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

/// `sched_process_fork`, in the parent: a new process inherits the parent's origin; a reused
/// pid loses whatever a dead process left behind.
pub fn on_fork(child: *const u8) {
    let offset = unsafe { read_volatile(&CW_TASK_TGID_OFFSET) };
    if offset == 0 {
        return;
    }
    let Ok(child_tgid) = (unsafe { bpf_probe_read_kernel(child.wrapping_add(offset as usize) as *const i32) }) else {
        return;
    };
    let child_tgid = child_tgid as u32;
    if child_tgid == current_tgid() {
        return; // a thread: it shares the process's entry
    }
    let _ = CW_ORIGINS.insert(child_tgid, current(), 0);
}

/// `sched_process_exec`: a runtime process that execs becomes the container's command (the
/// first time in its cgroup) or an exec session.
pub fn on_exec(cgroup_id: u64, now: u64) {
    let tgid = current_tgid();
    let was_runtime = unsafe { CW_ORIGINS.get(tgid) }.is_some_and(|o| *o == Origin::Runtime);
    if !was_runtime {
        return;
    }
    let origin = if unsafe { CW_STARTED.get(cgroup_id) }.is_some() {
        Origin::Exec
    } else {
        let _ = CW_STARTED.insert(cgroup_id, now, 0);
        Origin::App
    };
    let _ = CW_ORIGINS.insert(tgid, origin, 0);
}

/// `sched_process_exit` of a thread: a process's leader leaves no origin, so its pid starts clean.
pub fn on_exit() {
    let pid_tgid = bpf_get_current_pid_tgid();
    if pid_tgid as u32 == (pid_tgid >> 32) as u32 {
        let _ = CW_ORIGINS.remove(current_tgid());
    }
}
