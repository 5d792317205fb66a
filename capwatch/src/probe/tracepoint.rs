//! The capability tracepoint backend: `tp_btf/cap_capable` (Linux 6.14+). It reports the
//! verdict but not `opts`.

use aya::{programs::BtfTracePoint, Btf, Ebpf};

use super::{chain, program};

const PROGRAM: &str = "cap_capable_tp";

pub(super) fn load(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
    if btf.id_by_type_name_kind("btf_trace_cap_capable", aya_obj::btf::BtfKind::Typedef).is_err() {
        return Err("this kernel has no capability:cap_capable tracepoint (it came in Linux 6.14)".into());
    }
    let program: &mut BtfTracePoint = program(ebpf, PROGRAM).map_err(|e| e.to_string())?;
    program.load("cap_capable", btf).map_err(|e| chain(&e))
}

pub(super) fn attach(ebpf: &mut Ebpf) -> Result<(), String> {
    let program: &mut BtfTracePoint = program(ebpf, PROGRAM).map_err(|e| e.to_string())?;
    program.attach().map(drop).map_err(|e| chain(&e))
}
