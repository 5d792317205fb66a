//! The kprobe backend: kprobe + kretprobe on `cap_capable(cred, ns, cap, opts)`, for kernels
//! without the capability tracepoint. It sees `opts`, so advisory (NOAUDIT) checks are facts.

use std::path::Path;

use aya::{programs::KProbe, Ebpf};

use super::{chain, program};

const ENTRY: &str = "cap_capable_entry";
const RETURN: &str = "cap_capable_return";
const TARGET: &str = "cap_capable";

pub(super) fn load(ebpf: &mut Ebpf) -> Result<(), String> {
    for name in [ENTRY, RETURN] {
        let program: &mut KProbe = program(ebpf, name).map_err(|e| e.to_string())?;
        program.load().map_err(|e| chain(&e))?;
    }
    Ok(())
}

pub(super) fn attach(ebpf: &mut Ebpf) -> Result<(), String> {
    available()?;
    for name in [ENTRY, RETURN] {
        let program: &mut KProbe = program(ebpf, name).map_err(|e| e.to_string())?;
        program.attach(TARGET, 0).map_err(|e| format!("attaching {name} to {TARGET}: {}", chain(&e)))?;
    }
    Ok(())
}

/// Without the kprobe PMU, perf_event_open cannot make a kprobe: say why rather than ENOENT.
pub(super) fn available() -> Result<(), String> {
    if Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        return Ok(());
    }
    Err("this kernel has no kprobes (CONFIG_KPROBES is off: /sys/bus/event_source/devices/kprobe is missing)".into())
}
