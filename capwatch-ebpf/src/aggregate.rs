//! In-kernel aggregation: a key's first occurrence creates its entry, stamped with the time, and
//! is announced through the ring buffer; every repeat only bumps its counter. The latest
//! occurrence's time is stamped by userspace when a drain finds the count grown: a clock read per
//! check would cost more than the counting itself.

use core::{
    intrinsics::{atomic_xadd, AtomicOrdering},
    ptr::{addr_of, addr_of_mut, read_volatile},
};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated::bpf_ktime_get_ns},
    maps::HashMap,
};
use capwatch_common::{cap_slot, AnnouncedKey, Announcement, CapKey, Loss, Sample, Totals, COMM_LEN};

use crate::maps::{CW_CAP_COUNTS, CW_CAP_SLOTS, CW_LOSSES};

const EEXIST: i32 = 17;

pub fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// Counts one occurrence of an existing key. False when the key is not in the map yet.
#[inline(always)]
fn bump<K>(map: &HashMap<K, Totals>, key: &K) -> bool {
    match map.get_ptr_mut(key) {
        Some(totals) => {
            unsafe { add(addr_of_mut!((*totals).count), 1) };
            true
        }
        None => false,
    }
}

/// Outcome of recording a key that `bump` did not find.
enum First {
    /// This occurrence created the entry: the caller announces it.
    Created(Totals),
    /// Another CPU created it first; this occurrence was counted there.
    Counted,
    /// The map is full; the occurrence was counted in `CW_LOSSES[full]`.
    Lost,
}

/// Creates the entry for a key's first occurrence.
#[inline(always)]
fn create<K>(map: &HashMap<K, Totals>, key: &K, (stack_id, judged): (i32, u32), full: Loss) -> First {
    let now = now();
    let totals = Totals { count: 1, first_ns: now, last_ns: now, stack_id, judged, sample: current_sample() };
    match map.insert(key, totals, BPF_NOEXIST as u64) {
        Ok(()) => First::Created(totals),
        Err(err) if err == -EEXIST && bump(map, key) => First::Counted,
        Err(_) => {
            count_loss(full);
            First::Lost
        }
    }
}

/// Atomic add (BPF `lock xadd`): the BPF target has no `AtomicU64::fetch_add`.
#[inline(always)]
pub unsafe fn add(counter: *mut u64, n: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n) };
}

pub fn count_loss(loss: Loss) {
    if let Some(slot) = CW_LOSSES.get_ptr_mut(loss.raw()) {
        unsafe { add(slot, 1) };
    }
}

/// Announces a key's first occurrence through the ring buffer, counting it as lost when there is
/// no room.
#[inline(always)]
fn announce<K: AnnouncedKey + 'static>(key: K, totals: Totals) {
    match crate::maps::CW_EVENTS.reserve::<Announcement<K>>(0) {
        Some(mut slot) => {
            slot.write(Announcement::new(key, totals));
            slot.submit(0);
        }
        None => count_loss(Loss::RingbufFull),
    }
}

/// Counts one occurrence of `key`: a repeat is one atomic add; a first occurrence creates the
/// entry (with `first()`'s stack id and judgement, taken only then) and announces it.
#[inline(always)]
pub fn record<K: AnnouncedKey + 'static>(
    map: &HashMap<K, Totals>,
    key: &K,
    first: impl FnOnce() -> (i32, u32),
    full: Loss,
) {
    if bump(map, key) {
        return;
    }
    if let First::Created(totals) = create(map, key, first(), full) {
        announce(*key, totals);
    }
}

/// Counts one capability check in its key's slot, if userspace gave it one: two array lookups
/// (which the verifier inlines) and a compare instead of hashing the key into `CW_CAPS`. False
/// when the key owns no slot; `record` counts it then.
#[inline(always)]
pub fn count_in_slot(key: &CapKey) -> bool {
    let (slot, check) = cap_slot(key);
    let Some(owner) = CW_CAP_SLOTS.get_ptr(slot) else {
        return false;
    };
    // SAFETY: a map value, valid for the program's run; userspace may be rewriting it, which the
    // check word (written with the key, zeroed when the slot is emptied) tells apart. The keys
    // are compared as the three words they are (no padding).
    let owned = unsafe {
        let (theirs, mine) = (owner as *const u64, key as *const CapKey as *const u64);
        read_volatile(addr_of!((*owner).check)) == check
            && *theirs == *mine
            && *theirs.add(1) == *mine.add(1)
            && *theirs.add(2) == *mine.add(2)
    };
    match CW_CAP_COUNTS.get_ptr_mut(slot) {
        Some(count) if owned => {
            unsafe { add(count, 1) };
            true
        }
        _ => false,
    }
}

fn current_sample() -> Sample {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    Sample {
        tid: pid_tgid as u32,
        pid: (pid_tgid >> 32) as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    }
}
