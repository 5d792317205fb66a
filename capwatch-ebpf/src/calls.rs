//! The syscalls each watched cgroup's processes make, a bit per syscall number in `CW_CALLS`, per
//! origin: what a seccomp profile written for the container must allow. Recorded at every syscall
//! exit, and at a thread's exit for `exit` and `exit_group`, which never return.
//!
//! A set's bit is set once; what the kernel pays per syscall is a per-CPU cache's answer that this
//! thread's bit is already set. The cache holds one thread (its cgroup, origin and the bits known
//! set in its set) and is valid while the generation it was filled in lasts: anything that can
//! change a thread's cgroup or origin, or give its id to another, starts a new generation.
//! A call a seccomp filter may have refused (it returned the errno profiles answer with, and the
//! filter does not always allow it) is left out: it is a failure, never made.

use core::{
    intrinsics::{atomic_or, AtomicOrdering},
    ptr::read_volatile,
};

use aya_ebpf::{
    bindings::{pt_regs, BPF_NOEXIST},
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use capwatch_common::{CallSet, CallsKey, Origin, Seccomp, CALL_SET_BITS};

use crate::{aggregate, failure, origin, scope};

/// The syscalls made, by (cgroup, origin, under a filter).
#[map]
pub static CW_CALLS: HashMap<CallsKey, CallSet> = HashMap::with_max_entries(4096, 0);

/// The generation the caches are valid in (one slot).
#[map]
static CW_CALLS_GENERATION: Array<u64> = Array::with_max_entries(1, 0);

/// Per CPU: the last thread whose syscall was recorded.
#[map]
static CW_CALLS_CACHE: PerCpuArray<Cache> = PerCpuArray::with_max_entries(1, 0);

/// Set by userspace: 0 records nothing.
#[unsafe(no_mangle)]
static CW_CALLS_ENABLED: u32 = 1;

const EPERM: i64 = 1;
const ENOSYS: i64 = 38;
const WORDS: usize = (CALL_SET_BITS / 64) as usize;

#[repr(C)]
pub struct Cache {
    /// The thread, by the address of its saved user registers (`sys_exit`'s first argument, at
    /// the top of its kernel stack): no helper call to ask who is running. Two live threads never
    /// share it, and a thread that gets a dead one's stack was forked since, which started a new
    /// generation.
    thread: u64,
    generation: u64,
    /// 0: the thread is not watched.
    cgroup_id: u64,
    origin: Origin,
    _pad: [u8; 6],
    /// Bits known to be set in the thread's set.
    bits: [u64; WORDS],
}

/// A syscall's exit: `syscall` returned `ret` to the thread whose saved registers are at `regs`.
#[inline(always)]
pub fn on_exit(regs: *const pt_regs, syscall: u32, ret: i64) {
    if unsafe { read_volatile(&CW_CALLS_ENABLED) } == 0 || syscall >= CALL_SET_BITS {
        return;
    }
    let Some(cache) = CW_CALLS_CACHE.get_ptr_mut(0) else { return };
    let cache = unsafe { &mut *cache };
    let thread = regs as u64;
    let generation = generation();
    let (word, bit) = position(syscall);
    if cache.thread != thread || cache.generation != generation {
        fill(cache, thread, generation);
    }
    if cache.cgroup_id == 0 || (cache.origin != Origin::Runtime && cache.bits[word] & bit != 0) {
        return;
    }
    if (ret == -EPERM || ret == -ENOSYS) && !matches!(failure::seccomp_state(syscall), Seccomp::Allows | Seccomp::None)
    {
        return;
    }
    if record(cache.cgroup_id, cache.origin, word, bit) && cache.origin != Origin::Runtime {
        cache.bits[word] |= bit;
    }
}

/// A thread's exit in the watched `cgroup_id`: the `exit` or `exit_group` it was in never
/// returned. Recorded without the cache, which only `on_exit` uses: the sys_exit program runs once
/// at a time per CPU (the kernel skips its recursion), but this one may run while a preempted
/// sys_exit program of another thread is half-way through the cache.
#[inline(always)]
pub fn on_thread_exit(cgroup_id: u64, syscall: u32) {
    const EXIT: u32 = 60;
    const EXIT_GROUP: u32 = 231;
    if unsafe { read_volatile(&CW_CALLS_ENABLED) } != 0 && (syscall == EXIT || syscall == EXIT_GROUP) {
        let (word, bit) = position(syscall);
        record(cgroup_id, origin::current(), word, bit);
    }
}

/// The word and bit of `syscall` (below `CALL_SET_BITS`) in a set.
#[inline(always)]
fn position(syscall: u32) -> (usize, u64) {
    // Masked after an opaque read: the verifier must see the bound the compiler already knows.
    let word = (syscall / 64) as usize;
    (unsafe { read_volatile(&word) } & (WORDS - 1), 1u64 << (syscall % 64))
}

/// Sets the bit in the set of `cgroup_id`'s `origin`; for the runtime, in the one for whether
/// its seccomp filter is in force yet. False where the map is full.
#[inline(always)]
fn record(cgroup_id: u64, origin: Origin, word: usize, bit: u64) -> bool {
    let filtered = origin == Origin::Runtime && failure::under_filter();
    set(&CallsKey { cgroup_id, origin, filtered: filtered as u16, _pad: 0 }, word, bit)
}

/// Starts a new generation: every CPU's cache refills before it answers again.
#[inline(always)]
pub fn invalidate() {
    if let Some(slot) = CW_CALLS_GENERATION.get_ptr_mut(0) {
        unsafe { aggregate::add(slot, 1) };
    }
}

fn generation() -> u64 {
    CW_CALLS_GENERATION.get(0).copied().unwrap_or(0)
}

/// Fills the cache for the current thread: its cgroup if watched, its origin, and the bits its
/// set holds already. The runtime's calls are judged one by one (its filter comes mid-way).
fn fill(cache: &mut Cache, thread: u64, generation: u64) {
    cache.thread = thread;
    cache.generation = generation;
    cache.bits = [0; WORDS];
    let Some(cgroup_id) = scope::watched_cgroup() else {
        cache.cgroup_id = 0;
        return;
    };
    cache.cgroup_id = cgroup_id;
    cache.origin = origin::current();
    if cache.origin == Origin::Runtime {
        return;
    }
    let key = CallsKey { cgroup_id, origin: cache.origin, filtered: 0, _pad: 0 };
    if let Some(set) = unsafe { CW_CALLS.get(key) } {
        cache.bits = set.bits;
    }
}

/// Sets `bit` of `word` in `key`'s set, creating the set; false where the map is full.
fn set(key: &CallsKey, word: usize, bit: u64) -> bool {
    if CW_CALLS.get_ptr_mut(key).is_none() {
        let _ = CW_CALLS.insert(key, CallSet::EMPTY, BPF_NOEXIST as u64);
    }
    let Some(set) = CW_CALLS.get_ptr_mut(key) else {
        aggregate::count_loss(capwatch_common::Loss::CallsMapFull);
        return false;
    };
    unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(&mut (*set).bits[word], bit) };
    true
}
