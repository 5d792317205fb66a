//! Event intake: the ring buffer of first occurrences, read as it fills (tokio `AsyncFd`), and
//! the in-kernel aggregates, read in full on each drain.

use std::collections::HashSet;

use aya::maps::{Array, HashMap, MapData, RingBuf, StackTraceMap};
use capwatch_common::{
    AnnouncedKey, Announcement, CallSet, CallsKey, CapKey, EventKind, ExecKey, FailKey, Loss, Totals,
};
use tokio::io::{unix::AsyncFd, Interest};

use crate::{
    error::Error,
    probe::{CapSlots, KernelMaps},
};

/// A key's first occurrence, as the kernel announced it.
#[derive(Debug, Clone, Copy)]
pub enum Announced {
    Cap(CapKey, Totals),
    Failure(FailKey, Totals),
    Exec(ExecKey, Totals),
}

impl Announced {
    pub fn cap_key(&self) -> Option<CapKey> {
        match self {
            Announced::Cap(key, _) => Some(*key),
            _ => None,
        }
    }

    pub fn cgroup_id(&self) -> u64 {
        match self {
            Announced::Cap(key, _) => key.cgroup_id,
            Announced::Failure(key, _) => key.cgroup_id,
            Announced::Exec(key, _) => key.cgroup_id,
        }
    }
}

/// Everything the kernel side holds at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub caps: Vec<(CapKey, Totals)>,
    pub failures: Vec<(FailKey, Totals)>,
    pub execs: Vec<(ExecKey, Totals)>,
    /// The syscalls made, by cgroup and origin.
    pub calls: Vec<(CallsKey, CallSet)>,
    /// By `Loss` slot.
    pub losses: Vec<u64>,
}

pub struct Intake {
    events: AsyncFd<RingBuf<MapData>>,
    caps: HashMap<MapData, CapKey, Totals>,
    failures: HashMap<MapData, FailKey, Totals>,
    execs: HashMap<MapData, ExecKey, Totals>,
    losses: Array<MapData, u64>,
    stacks: StackTraceMap<MapData>,
    started: HashMap<MapData, u64, u64>,
    calls: HashMap<MapData, CallsKey, CallSet>,
    slots: CapSlots,
}

impl Intake {
    /// Needs a tokio runtime (the ring buffer is registered with its reactor).
    pub fn new(maps: KernelMaps) -> Result<Self, Error> {
        let KernelMaps { events, caps, failures, execs, losses, stacks, started, calls, slots } = maps;
        // SAFETY: the RingBuf owns its map's descriptor for as long as the AsyncFd owns it.
        let events = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .map_err(|e| Error::io("ring buffer", e.into()))?;
        Ok(Self { events, caps, failures, execs, losses, stacks, started, calls, slots })
    }

    /// Waits for the kernel to announce something and returns all that is announced.
    pub async fn announced(&mut self) -> Result<Vec<Announced>, Error> {
        loop {
            let mut guard = self.events.readable_mut().await.map_err(|e| Error::io("ring buffer", e))?;
            let announced = read_ring(guard.get_inner_mut());
            guard.clear_ready();
            if !announced.is_empty() {
                return Ok(announced);
            }
        }
    }

    /// What is announced now, without waiting.
    pub fn pending(&mut self) -> Vec<Announced> {
        read_ring(self.events.get_mut())
    }

    /// Gives each of these capability keys a counting slot, where its slot is free: the kernel
    /// counts its checks there from then on, without a hash-map lookup (probe/slots.rs).
    pub fn give_slots(&mut self, keys: impl Iterator<Item = CapKey>) -> Result<(), Error> {
        self.slots.give(keys)
    }

    /// Reads every aggregate and loss counter. A capability key's count is its count in
    /// `CW_CAPS` and in its slot.
    pub fn snapshot(&self) -> Result<Snapshot, Error> {
        let mut caps: Vec<(CapKey, Totals)> = self.caps.iter().collect::<Result<_, _>>()?;
        for (key, totals) in &mut caps {
            totals.count += self.slots.counted(key)?;
        }
        Ok(Snapshot {
            caps,
            failures: self.failures.iter().collect::<Result<_, _>>()?,
            execs: self.execs.iter().collect::<Result<_, _>>()?,
            calls: self.calls.iter().collect::<Result<_, _>>()?,
            losses: (0..Loss::SLOTS).map(|i| self.losses.get(&i, 0)).collect::<Result<_, _>>()?,
        })
    }

    /// The checks of `key` its counting slot took.
    pub fn counted_in_slot(&self, key: &CapKey) -> Result<u64, Error> {
        self.slots.counted(key)
    }

    /// The kernel stack (instruction pointers, innermost first) recorded under `id`.
    pub fn stack(&self, id: i32) -> Option<Vec<u64>> {
        let id = u32::try_from(id).ok()?;
        let trace = self.stacks.get(&id, 0).ok()?;
        Some(trace.frames().iter().map(|f| f.ip).collect())
    }

    /// Tells the kernel side that these cgroups' own commands were running before it attached,
    /// so that a runtime process exec-ing there later is an exec session.
    pub fn mark_started(&mut self, cgroups: &[u64]) -> Result<(), Error> {
        for &id in cgroups {
            self.started.insert(id, 0, 0)?;
        }
        Ok(())
    }

    /// Drops the kernel's entries for cgroups that no longer exist, once their totals have been
    /// read: a removed cgroup makes no more checks, and the maps stay small.
    pub fn forget(&mut self, cgroups: &HashSet<u64>) -> Result<(), Error> {
        let caps: Vec<CapKey> =
            self.caps.keys().filter_map(Result::ok).filter(|k| cgroups.contains(&k.cgroup_id)).collect();
        self.slots.release(&caps)?;
        for key in caps {
            self.caps.remove(&key)?;
        }
        let failures: Vec<FailKey> =
            self.failures.keys().filter_map(Result::ok).filter(|k| cgroups.contains(&k.cgroup_id)).collect();
        for key in failures {
            self.failures.remove(&key)?;
        }
        let execs: Vec<ExecKey> =
            self.execs.keys().filter_map(Result::ok).filter(|k| cgroups.contains(&k.cgroup_id)).collect();
        for key in execs {
            self.execs.remove(&key)?;
        }
        let calls: Vec<CallsKey> =
            self.calls.keys().filter_map(Result::ok).filter(|k| cgroups.contains(&k.cgroup_id)).collect();
        for key in calls {
            self.calls.remove(&key)?;
        }
        for id in cgroups {
            // Absent when the cgroup's command never started while watched.
            let _ = self.started.remove(id);
        }
        Ok(())
    }
}

fn read_ring(ring: &mut RingBuf<MapData>) -> Vec<Announced> {
    let mut announced = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(announcement) = parse(&item) {
            announced.push(announcement);
        }
    }
    announced
}

/// A record is an `Announcement<K>` whose first u32 is its `EventKind`; one of a kind this build
/// does not know, or too short for its kind, is skipped.
fn parse(bytes: &[u8]) -> Option<Announced> {
    match EventKind::from_raw(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))? {
        EventKind::NewCap => read::<CapKey>(bytes).map(|a| Announced::Cap(a.key, a.totals)),
        EventKind::NewFailure => read::<FailKey>(bytes).map(|a| Announced::Failure(a.key, a.totals)),
        EventKind::NewExec => read::<ExecKey>(bytes).map(|a| Announced::Exec(a.key, a.totals)),
    }
}

fn read<K: AnnouncedKey>(bytes: &[u8]) -> Option<Announcement<K>> {
    let key = bytes.get(std::mem::offset_of!(Announcement<K>, key)..)?;
    (bytes.len() >= size_of::<Announcement<K>>() && K::valid(key))
        // SAFETY: the length is checked and so is every enum field: the bytes are a valid
        // `Announcement<K>`, plain `#[repr(C)]` data.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

#[cfg(test)]
mod tests {
    use capwatch_common::{Announcement, CapKey, Origin, Sample, Verdict};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_record_is_read_back_as_written() {
        let key =
            CapKey { cgroup_id: 7, cap: 13, syscall: 41, verdict: Verdict::Denied, origin: Origin::Exec, flags: 3 };
        let totals = Totals {
            count: 1,
            first_ns: 5,
            last_ns: 5,
            stack_id: -1,
            judged: 0,
            sample: Sample { tid: 1, pid: 1, uid: 0, gid: 0, comm: [b'x'; 16] },
        };
        let record = Announcement::new(key, totals);
        // SAFETY: reading the bytes of a plain `#[repr(C)]` value.
        let bytes = unsafe {
            std::slice::from_raw_parts((&record as *const Announcement<CapKey>).cast::<u8>(), size_of_val(&record))
        };
        assert!(matches!(parse(bytes), Some(Announced::Cap(k, t)) if k == key && t == totals));
        assert!(parse(&bytes[..bytes.len() - 1]).is_none(), "a short record is skipped");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// Whatever the ring buffer hands over, a record of an unknown kind or the wrong length
        /// is skipped, never a panic.
        #[test]
        fn any_bytes_are_a_record_or_nothing(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Some(Announced::Cap(key, _)) = parse(&bytes) {
                prop_assert!(Origin::from_raw(key.origin.raw()).is_some());
            }
        }

        /// A record whose kind is known but whose enums hold numbers this build does not know.
        #[test]
        fn a_known_kind_with_any_payload_never_panics(kind in 1u32..4, rest in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut bytes = kind.to_ne_bytes().to_vec();
            bytes.extend(rest);
            let _ = parse(&bytes);
        }
    }
}
