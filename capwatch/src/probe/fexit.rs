//! The fexit backend: a BPF trampoline on `cap_capable(cred, ns, cap, opts)`'s return. One
//! program sees the arguments and the verdict together, `opts` included, so advisory (NOAUDIT)
//! checks are facts and nothing is carried between entry and return.

use aya::{
    programs::{FExit, ProgramError},
    Btf, Ebpf,
};

use super::{chain, program};

const PROGRAM: &str = "cap_capable_fexit";
const TARGET: &str = "cap_capable";

pub(super) fn load(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
    let program: &mut FExit = program(ebpf, PROGRAM).map_err(|e| e.to_string())?;
    program.load(TARGET, btf).map_err(|e| refusal(TARGET, &e))
}

pub(super) fn attach(ebpf: &mut Ebpf) -> Result<(), String> {
    let program: &mut FExit = program(ebpf, PROGRAM).map_err(|e| e.to_string())?;
    program.attach().map(drop).map_err(|e| format!("attaching the trampoline to {TARGET}: {}", chain(&e)))
}

/// Why the kernel would not load a program for `target`, in one sentence.
pub(super) fn refusal(target: &str, err: &ProgramError) -> String {
    match err {
        ProgramError::Btf(_) => format!("{target} is not in this kernel's BTF, so no trampoline can be built for it"),
        // Lockdown or a kernel built without trampolines (CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS)
        // refuses fentry/fexit at load time with EPERM and an empty verifier log, even for root.
        ProgramError::LoadError { io_error, .. } if io_error.raw_os_error() == Some(libc::EPERM) => {
            "this kernel refuses BPF trampolines (fentry/fexit): loading failed with EPERM".to_string()
        }
        _ => chain(err),
    }
}
