//! Types shared by capwatch's eBPF programs and its userspace.
//!
//! Every struct that crosses the kernel boundary is defined here once, `#[repr(C)]`, with
//! explicit padding and `u32` flags, so both sides agree on the layout byte for byte.
#![no_std]

/// Verdict of a capability check: the kernel granted the capability.
pub const VERDICT_GRANTED: u16 = 0;
/// Verdict of a capability check: the kernel refused the capability.
pub const VERDICT_DENIED: u16 = 1;

/// Who in a container's cgroup made a check or a failing call. Numbers are never reused.
pub mod origin {
    /// The container's own command and its descendants (the default).
    pub const APP: u16 = 0;
    /// The OCI runtime (runc init and the like) setting the container up before it execs the
    /// container's command, or before it execs a `docker exec` command.
    pub const RUNTIME: u16 = 1;
    /// A command started in the container after its own (`docker exec`), and its descendants.
    pub const EXEC: u16 = 2;
}

/// `CapKey::flags`: the probe saw `cap_capable`'s `opts` argument, so the NOAUDIT and INSETID
/// bits below are facts rather than unknowns.
pub const CAP_FLAG_OPTS_KNOWN: u32 = 1 << 0;
/// `CapKey::flags`: the check was made with `CAP_OPT_NOAUDIT` (an advisory probe by the kernel).
pub const CAP_FLAG_NOAUDIT: u32 = 1 << 1;
/// `CapKey::flags`: the check was made with `CAP_OPT_INSETID`.
pub const CAP_FLAG_INSETID: u32 = 1 << 2;

/// `CapKey::flags`: the check was on credentials other than the task's own (`cred` is not the
/// task's `real_cred`): the kernel acting with substituted credentials, as overlayfs does with
/// its mounter's. The task's own capabilities do not decide it.
pub const CAP_FLAG_FOREIGN_CRED: u32 = 1 << 3;

/// `CapKey::flags`: the check was against a user namespace above the credentials' own (a
/// container in its own user namespace asking for something only the host's can grant). No
/// capability added to the container can satisfy it.
pub const CAP_FLAG_OUTER_USERNS: u32 = 1 << 4;

/// `cap_capable`'s `opts` bits (include/linux/security.h).
pub const CAP_OPT_NOAUDIT: u32 = 1 << 1;
pub const CAP_OPT_INSETID: u32 = 1 << 2;

/// The syscall number recorded when the thread was not in a syscall (pt_regs `orig_ax` of -1).
pub const NO_SYSCALL: u32 = u32::MAX;

/// Capacity of a task's command name, as the kernel's `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;

/// One aggregate of capability checks: everything that is the same about them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CapKey {
    /// cgroup2 id (the inode of the cgroup's directory).
    pub cgroup_id: u64,
    /// Capability number (linux/capability.h).
    pub cap: u32,
    /// The syscall the thread was in, or `NO_SYSCALL`.
    pub syscall: u32,
    /// `VERDICT_GRANTED` or `VERDICT_DENIED`.
    pub verdict: u16,
    /// An `origin` constant.
    pub origin: u16,
    /// `CAP_FLAG_*` bits.
    pub flags: u32,
}

/// One aggregate of failing syscalls: with the evidence of its cause, as the failing thread
/// left it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FailKey {
    pub cgroup_id: u64,
    pub syscall: u32,
    /// Positive errno: `EPERM` (1) or `EACCES` (13).
    pub errno: u16,
    /// An `origin` constant.
    pub origin: u16,
    /// The failing thread's uid.
    pub uid: u32,
    /// A `seccomp` constant: what the thread's seccomp filter says of this syscall.
    pub seccomp: u32,
    /// Capabilities denied to the same thread in the same syscall, bit per capability.
    pub denied: u64,
}

/// `FailKey::seccomp`: the thread's seccomp filter and this syscall.
pub mod seccomp {
    /// No filter: seccomp did not refuse it.
    pub const NONE: u32 = 0;
    /// A filter that does not always allow this syscall: it may have refused it.
    pub const MAY_REFUSE: u32 = 1;
    /// A filter that allows this syscall whatever its arguments: seccomp did not refuse it.
    pub const ALLOWS: u32 = 2;
    /// The kernel's seccomp state could not be read.
    pub const UNKNOWN: u32 = 3;
}

/// What `CW_DENIED` keeps for a thread between a denied check and the end of its syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DeniedInSyscall {
    pub syscall: u32,
    pub _pad: u32,
    /// Bit per capability.
    pub caps: u64,
}

/// The thread that made a key's first occurrence.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: [u8; COMM_LEN],
}

/// The value of every aggregate map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totals {
    pub count: u64,
    /// CLOCK_MONOTONIC of the first occurrence (`bpf_ktime_get_ns`), and of the latest as far as
    /// userspace knows: the kernel leaves `last_ns` at the first; a drain that finds the count
    /// grown stamps the drain's time.
    pub first_ns: u64,
    pub last_ns: u64,
    /// Kernel stack of the first occurrence in `CW_STACKS`, or negative when none was taken.
    pub stack_id: i32,
    pub _pad: u32,
    pub sample: Sample,
}

/// What a ring-buffer record announces. Numbers are never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A `CapKey` was seen for the first time.
    NewCap = 1,
    /// A `FailKey` was seen for the first time.
    NewFailure = 2,
}

/// A ring-buffer record: a key's first occurrence. Repeats only bump the aggregate's counters.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NewCapEvent {
    /// `EventKind::NewCap`.
    pub kind: u32,
    pub _pad: u32,
    pub key: CapKey,
    pub totals: Totals,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NewFailureEvent {
    /// `EventKind::NewFailure`.
    pub kind: u32,
    pub _pad: u32,
    pub key: FailKey,
    pub totals: Totals,
}

/// Indices of `CW_LOSSES`: what the kernel side could not deliver, counted there so that nothing
/// is lost silently.
pub mod loss {
    /// A first-occurrence event found the ring buffer full (its counts are still aggregated).
    pub const RINGBUF_FULL: u32 = 0;
    /// A capability check found `CW_CAPS` full: the check was not counted.
    pub const CAP_MAP_FULL: u32 = 1;
    /// A failing syscall found `CW_FAILURES` full: the failure was not counted.
    pub const FAIL_MAP_FULL: u32 = 2;
    /// kprobe backend: a `cap_capable` return had no matching entry (the kprobe was missed or
    /// its stash was full); the check was not counted.
    pub const KRETPROBE_UNMATCHED: u32 = 3;
    /// kprobe backend: an entry was overwritten before its return was seen, or left behind by
    /// an exiting thread (a missed kretprobe); that check was not counted.
    pub const KPROBE_STASH_OVERWRITTEN: u32 = 4;
    /// kprobe backend: the per-thread stash was full; the check was not counted.
    pub const KPROBE_STASH_FULL: u32 = 5;
    /// A denied check could not be remembered for its syscall's exit (`CW_DENIED` full): a
    /// failure of that syscall may be explained without it.
    pub const DENIED_STASH_FULL: u32 = 6;
    /// Number of slots.
    pub const LEN: u32 = 8;
}

/// Per-thread state the kprobe backend keeps between `cap_capable`'s entry and its return.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KprobeStash {
    pub cap: u32,
    pub flags: u32,
}

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: all of these are `#[repr(C)]` plain data without implicit padding.
    unsafe impl aya::Pod for CapKey {}
    unsafe impl aya::Pod for FailKey {}
    unsafe impl aya::Pod for Totals {}
    unsafe impl aya::Pod for KprobeStash {}
    unsafe impl aya::Pod for DeniedInSyscall {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<CapKey>(), 8 + 3 * 4 + 2 * 2);
        assert_eq!(size_of::<FailKey>(), 32);
        assert_eq!(size_of::<DeniedInSyscall>(), 16);
        assert_eq!(size_of::<Sample>(), 4 * 4 + COMM_LEN);
        assert_eq!(size_of::<Totals>(), 3 * 8 + 2 * 4 + size_of::<Sample>());
        assert_eq!(size_of::<NewCapEvent>(), 8 + size_of::<CapKey>() + size_of::<Totals>());
        assert_eq!(size_of::<NewFailureEvent>(), 8 + size_of::<FailKey>() + size_of::<Totals>());
    }
}
