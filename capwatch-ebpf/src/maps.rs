//! Every map the programs share with userspace. Names carry the `CW_` prefix so that a pinned or
//! listed map is recognisable on a host.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, RingBuf, StackTrace},
};
use capwatch_common::{CapKey, CapSlot, ExecKey, FailKey, Loss, Totals, CAP_SLOTS};

/// Capability checks by (cgroup, capability, verdict, syscall, flags).
#[map]
pub static CW_CAPS: HashMap<CapKey, Totals> = HashMap::with_max_entries(16384, 0);

/// The owners of the counting slots, which userspace gives the keys of `CW_CAPS` as it learns
/// them (aggregate.rs `count_in_slot`).
#[map]
pub static CW_CAP_SLOTS: Array<CapSlot> = Array::with_max_entries(CAP_SLOTS, 0);

/// Checks counted in each slot since its owner got it, beside its key's count in `CW_CAPS`.
#[map]
pub static CW_CAP_COUNTS: Array<u64> = Array::with_max_entries(CAP_SLOTS, 0);

/// Syscalls that failed with EPERM/EACCES by (cgroup, syscall, errno).
#[map]
pub static CW_FAILURES: HashMap<FailKey, Totals> = HashMap::with_max_entries(16384, 0);

/// Programs exec'd, by cgroup, origin and path: userspace reads their file capabilities.
#[map]
pub static CW_EXECS: HashMap<ExecKey, Totals> = HashMap::with_max_entries(8192, 0);

/// First occurrences of keys, announced to userspace.
#[map]
pub static CW_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Kernel stacks of first occurrences (their call sites tell advisory checks apart).
#[map]
pub static CW_STACKS: StackTrace = StackTrace::with_max_entries(1024, 0);

/// What could not be delivered, by `capwatch_common::Loss` slot.
#[map]
pub static CW_LOSSES: Array<u64> = Array::with_max_entries(Loss::SLOTS, 0);

/// kprobe backend: `cap_capable`'s arguments by thread, between entry and return.
#[map]
pub static CW_KPROBE_STASH: HashMap<u64, KprobeStash> = HashMap::with_max_entries(8192, 0);

/// Where `cap_mmap_addr`'s threshold is, for the program on it (callers.rs): [0] the address of
/// the kernel's `dac_mmap_min_addr` (0 where /proc/kallsyms does not list it), [1] its value as
/// /proc/sys/vm/mmap_min_addr gave it when the program was attached.
#[map]
pub static CW_MMAP_MIN_ADDR: Array<u64> = Array::with_max_entries(2, 0);

/// What a thread's current syscall leaves for its exit (pending.rs): capabilities denied in it,
/// and those a capset kept.
#[map]
pub static CW_DENIED: HashMap<u32, InSyscall> = HashMap::with_max_entries(16384, 0);

/// What `CW_DENIED` keeps for a thread until the end of its syscall.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct InSyscall {
    pub syscall: u32,
    pub _pad: u32,
    /// Capabilities denied in it, a bit each.
    pub denied: u64,
    /// Capabilities a capset in it asks to keep, narrowing the permitted set.
    pub kept: u64,
}

/// What the kprobe backend keeps per thread between `cap_capable`'s entry and its return.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KprobeStash {
    pub cap: u32,
    pub flags: u32,
}
