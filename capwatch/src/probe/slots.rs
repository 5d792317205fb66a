//! The counting slots of capability keys (`CW_CAP_SLOTS`, `CW_CAP_COUNTS`): userspace gives
//! them, the kernel counts in them.

use std::collections::HashMap;

use aya::maps::{Array, MapData};
use capwatch_common::{cap_slot, CapKey, CapSlot, Origin, Verdict};

use crate::error::Error;

/// The slots in which the kernel counts a capability key's checks once the key owns one
/// (capwatch-ebpf aggregate.rs `count_in_slot`), saving it a hash-map lookup per check. Each key
/// may own the one slot its hash names (`capwatch_common::cap_slot`); one whose slot is taken is
/// counted in `CW_CAPS` alone. A slot's counter is never reset: what a key's slot counted is its
/// counter now less what it held when the key got the slot.
pub struct CapSlots {
    owners: Array<MapData, CapSlot>,
    counters: Array<MapData, u64>,
    /// By slot: its owner, and the slot's counter when the owner got it.
    given: HashMap<u32, (CapKey, u64)>,
}

/// What an empty slot holds: its `check` of 0 matches no key.
const NO_OWNER: CapSlot = CapSlot {
    key: CapKey { cgroup_id: 0, cap: 0, syscall: 0, verdict: Verdict::Granted, origin: Origin::App, flags: 0 },
    check: 0,
};

impl CapSlots {
    pub fn new(owners: Array<MapData, CapSlot>, counters: Array<MapData, u64>) -> Self {
        Self { owners, counters, given: HashMap::new() }
    }

    /// The checks `key`'s slot counted, 0 when it owns none.
    pub fn counted(&self, key: &CapKey) -> Result<u64, Error> {
        let (slot, _) = cap_slot(key);
        match self.given.get(&slot) {
            Some((owner, base)) if owner == key => Ok(self.counters.get(&slot, 0)?.wrapping_sub(*base)),
            _ => Ok(0),
        }
    }

    /// Gives each key its slot, where the slot is free.
    pub fn give(&mut self, keys: impl Iterator<Item = CapKey>) -> Result<(), Error> {
        for key in keys {
            let (slot, check) = cap_slot(&key);
            if self.given.contains_key(&slot) {
                continue;
            }
            // Read before the key is written: from then on the kernel counts the key's checks.
            let base = self.counters.get(&slot, 0)?;
            self.owners.set(slot, CapSlot { key, check }, 0)?;
            self.given.insert(slot, (key, base));
        }
        Ok(())
    }

    /// Empties the slots of these keys (their cgroups are gone: their checks are over).
    pub fn release(&mut self, keys: &[CapKey]) -> Result<(), Error> {
        for key in keys {
            let (slot, _) = cap_slot(key);
            if self.given.get(&slot).is_some_and(|(owner, _)| owner == key) {
                self.owners.set(slot, NO_OWNER, 0)?;
                self.given.remove(&slot);
            }
        }
        Ok(())
    }
}
