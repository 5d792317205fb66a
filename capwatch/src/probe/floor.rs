//! The floor programs (`capwatch-ebpf/src/floor.rs`): empty programs on the hooks capwatch
//! attaches with the tracepoint backend, so that its overhead can be told from the cost of being
//! attached at all.

use aya::{programs::BtfTracePoint, Ebpf, EbpfLoader};

use super::{chain, program};
use crate::error::Error;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capwatch-floor"));

/// Program and tracepoint, one per hook of `COMMON_PROGRAMS` plus the capability tracepoint.
const PROGRAMS: [(&str, &str); 6] = [
    ("floor_cap_capable", "cap_capable"),
    ("floor_sys_exit", "sys_exit"),
    ("floor_process_fork", "sched_process_fork"),
    ("floor_process_exec", "sched_process_exec"),
    ("floor_cgroup_attach", "cgroup_attach_task"),
    ("floor_process_exit", "sched_process_exit"),
];

/// The floor programs, attached until dropped.
pub struct Floor {
    _ebpf: Ebpf,
}

pub fn attach_floor() -> Result<Floor, Error> {
    let btf = super::loader_btf()?;
    let mut ebpf = super::sparse::without_full_parse(|| EbpfLoader::new().btf(Some(&btf)).load(OBJECT))
        .map_err(|e| Error::Program { program: "floor object", reason: chain(&e) })?;
    for (name, tracepoint) in PROGRAMS {
        let program: &mut BtfTracePoint = program(&mut ebpf, name)?;
        program.load(tracepoint, &btf).map_err(|e| Error::Program { program: name, reason: chain(&e) })?;
        program.attach().map_err(|e| Error::Program { program: name, reason: chain(&e) })?;
    }
    Ok(Floor { _ebpf: ebpf })
}
