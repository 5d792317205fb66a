//! Programs on `cap_capable`'s direct callers in security/commoncap.c (the kernel side is
//! capwatch-ebpf/src/callers.rs), for kernels whose compiler inlined `cap_capable` into them:
//! there the probe on `cap_capable` cannot see their checks. They are attached on demand, by the
//! self-test, and only for a caller whose check that probe was shown to miss, so that no check is
//! counted twice. Whether a caller exists is the running kernel's answer: its BTF for fexit, its
//! symbols for a kprobe. Each is tried with fexit, then with a kprobe on its entry, and every try
//! is kept, as the backends' attempts are.

use std::{fs, path::Path};

use aya::{
    maps::Array,
    programs::{FExit, KProbe},
};
use serde::{Deserialize, Serialize};

use super::{chain, fexit, kprobe, program, Probe};
use crate::symbols;

/// A direct caller of `cap_capable` that capwatch can watch itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Caller {
    /// `cap_capset`: CAP_SETPCAP on every capset.
    Capset,
    /// `cap_mmap_addr`: CAP_SYS_RAWIO for a mapping below vm.mmap_min_addr.
    MmapAddr,
    /// `cap_vm_enough_memory`: the advisory CAP_SYS_ADMIN of every accountable mapping.
    VmEnoughMemory,
}

impl Caller {
    /// The kernel function.
    pub fn function(self) -> &'static str {
        match self {
            Caller::Capset => "cap_capset",
            Caller::MmapAddr => "cap_mmap_addr",
            Caller::VmEnoughMemory => "cap_vm_enough_memory",
        }
    }

    /// Its programs: (fexit, kprobe on the entry).
    fn programs(self) -> (&'static str, &'static str) {
        match self {
            Caller::Capset => ("cap_capset_fexit", "cap_capset_entry"),
            Caller::MmapAddr => ("cap_mmap_addr_fexit", "cap_mmap_addr_entry"),
            Caller::VmEnoughMemory => ("cap_vm_enough_memory_fexit", "cap_vm_enough_memory_entry"),
        }
    }
}

/// How a program is attached to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    Fexit,
    Kprobe,
}

/// One try at watching a caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookAttempt {
    pub caller: Caller,
    pub mechanism: Mechanism,
    /// None when it attached.
    pub refused: Option<String>,
}

impl HookAttempt {
    /// "cap_capset (fexit)"
    pub fn describe(&self) -> String {
        let mechanism = match self.mechanism {
            Mechanism::Fexit => "fexit",
            Mechanism::Kprobe => "kprobe",
        };
        format!("{} ({mechanism})", self.caller.function())
    }
}

impl Probe {
    /// Attaches a program to each caller: fexit where the kernel builds trampolines, a kprobe on
    /// its entry where it does not. Returns every try, in order.
    pub fn hook_callers(&mut self, callers: &[Caller]) -> Vec<HookAttempt> {
        let btf = super::loader_btf().map_err(|e| format!("reading the kernel's BTF: {e}"));
        let mut attempts = Vec::new();
        for &caller in callers {
            if caller == Caller::MmapAddr {
                if let Err(reason) = self.set_mmap_min_addr() {
                    attempts.push(HookAttempt { caller, mechanism: Mechanism::Fexit, refused: Some(reason) });
                    continue;
                }
            }
            let (fexit_program, kprobe_program) = caller.programs();
            let by_fexit = btf.as_ref().map_err(Clone::clone).and_then(|btf| {
                let program: &mut FExit = program(&mut self.ebpf, fexit_program).map_err(|e| e.to_string())?;
                program.load(caller.function(), btf).map_err(|e| fexit::refusal(caller.function(), &e))?;
                program.attach().map(drop).map_err(|e| chain(&e))
            });
            let attached = by_fexit.is_ok();
            attempts.push(HookAttempt { caller, mechanism: Mechanism::Fexit, refused: by_fexit.err() });
            if attached {
                continue;
            }
            let by_kprobe = kprobe::available().and_then(|()| {
                let program: &mut KProbe = program(&mut self.ebpf, kprobe_program).map_err(|e| e.to_string())?;
                program.load().map_err(|e| chain(&e))?;
                program.attach(caller.function(), 0).map(drop).map_err(|e| chain(&e))
            });
            attempts.push(HookAttempt { caller, mechanism: Mechanism::Kprobe, refused: by_kprobe.err() });
        }
        attempts
    }

    /// Tells the program on `cap_mmap_addr` where the kernel keeps vm.mmap_min_addr: its
    /// `dac_mmap_min_addr`, read live where /proc/kallsyms lists it, and the sysctl's value now.
    fn set_mmap_min_addr(&mut self) -> Result<(), String> {
        const SYSCTL: &str = "/proc/sys/vm/mmap_min_addr";
        let value: u64 = fs::read_to_string(SYSCTL)
            .map_err(|e| format!("{SYSCTL}: {e}"))?
            .trim()
            .parse()
            .map_err(|e| format!("{SYSCTL}: {e}"))?;
        let at = symbols::address(Path::new(symbols::KALLSYMS), "dac_mmap_min_addr").unwrap_or(0);
        let map = self.ebpf.map_mut("CW_MMAP_MIN_ADDR").ok_or("the eBPF object holds no CW_MMAP_MIN_ADDR")?;
        let mut array: Array<_, u64> = Array::try_from(map).map_err(|e| chain(&e))?;
        array.set(0, at, 0).and_then(|()| array.set(1, value, 0)).map_err(|e| chain(&e))
    }
}
