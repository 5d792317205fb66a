//! Event intake: the ring buffer of first occurrences, read as it fills (tokio `AsyncFd`), and
//! the in-kernel aggregates, read in full on each drain.

use std::collections::HashSet;

use aya::maps::{Array, HashMap, MapData, RingBuf, StackTraceMap};
use capwatch_common::{loss, CapKey, EventKind, FailKey, NewCapEvent, NewFailureEvent, Totals};
use tokio::io::{unix::AsyncFd, Interest};

use crate::{error::Error, probe::KernelMaps};

/// A key's first occurrence, as the kernel announced it.
#[derive(Debug, Clone, Copy)]
pub enum Announcement {
    Cap(CapKey, Totals),
    Failure(FailKey, Totals),
}

/// Everything the kernel side holds at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub caps: Vec<(CapKey, Totals)>,
    pub failures: Vec<(FailKey, Totals)>,
    /// By `capwatch_common::loss` index.
    pub losses: Vec<u64>,
}

pub struct Intake {
    events: AsyncFd<RingBuf<MapData>>,
    caps: HashMap<MapData, CapKey, Totals>,
    failures: HashMap<MapData, FailKey, Totals>,
    losses: Array<MapData, u64>,
    stacks: StackTraceMap<MapData>,
    started: HashMap<MapData, u64, u64>,
}

impl Intake {
    /// Needs a tokio runtime (the ring buffer is registered with its reactor).
    pub fn new(maps: KernelMaps) -> Result<Self, Error> {
        let KernelMaps { events, caps, failures, losses, stacks, started } = maps;
        // SAFETY: the RingBuf owns its map's descriptor for as long as the AsyncFd owns it.
        let events = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .map_err(|e| Error::io("ring buffer", e.into()))?;
        Ok(Self { events, caps, failures, losses, stacks, started })
    }

    /// Waits for the kernel to announce something and returns all that is announced.
    pub async fn announced(&mut self) -> Result<Vec<Announcement>, Error> {
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
    pub fn pending(&mut self) -> Vec<Announcement> {
        read_ring(self.events.get_mut())
    }

    /// Reads every aggregate and loss counter.
    pub fn snapshot(&self) -> Result<Snapshot, Error> {
        Ok(Snapshot {
            caps: self.caps.iter().collect::<Result<_, _>>()?,
            failures: self.failures.iter().collect::<Result<_, _>>()?,
            losses: (0..loss::LEN).map(|i| self.losses.get(&i, 0)).collect::<Result<_, _>>()?,
        })
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
        let caps: Vec<CapKey> = self.caps.keys().filter_map(Result::ok).filter(|k| cgroups.contains(&k.cgroup_id)).collect();
        for key in caps {
            self.caps.remove(&key)?;
        }
        let failures: Vec<FailKey> =
            self.failures.keys().filter_map(Result::ok).filter(|k| cgroups.contains(&k.cgroup_id)).collect();
        for key in failures {
            self.failures.remove(&key)?;
        }
        for id in cgroups {
            // Absent when the cgroup's command never started while watched.
            let _ = self.started.remove(id);
        }
        Ok(())
    }
}

fn read_ring(ring: &mut RingBuf<MapData>) -> Vec<Announcement> {
    let mut announced = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(announcement) = parse(&item) {
            announced.push(announcement);
        }
    }
    announced
}

/// A record is a `#[repr(C)]` struct from capwatch-common whose first u32 is its `EventKind`.
fn parse(bytes: &[u8]) -> Option<Announcement> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    if kind == EventKind::NewCap as u32 && bytes.len() >= size_of::<NewCapEvent>() {
        // SAFETY: the length is checked and NewCapEvent is plain data.
        let event: NewCapEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Some(Announcement::Cap(event.key, event.totals))
    } else if kind == EventKind::NewFailure as u32 && bytes.len() >= size_of::<NewFailureEvent>() {
        // SAFETY: as above.
        let event: NewFailureEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Some(Announcement::Failure(event.key, event.totals))
    } else {
        None
    }
}
