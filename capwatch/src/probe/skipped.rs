//! The runs of capwatch's programs the kernel skipped. A tracing program does not run on a CPU
//! where it is already running (kernel/trace/bpf_trace.c `__bpf_trace_run` and kernel/bpf/
//! trampoline.c `__bpf_prog_enter_recur`: `prog->active`; kernel/trace/bpf_trace.c
//! `trace_call_bpf` for kprobes): a run that was preempted, or interrupted by what it watches,
//! makes the kernel skip the one that came meanwhile, and count it in the program's
//! `recursion_misses` (5.12+; kprobes 6.7+). The check, exit or exec it would have seen went
//! uncounted, in a cgroup nobody can tell, and whether it was a watched process's neither.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::Ebpf;
use aya_obj::generated::{bpf_cmd, bpf_prog_info};

/// `bpf_attr.info`, what `BPF_OBJ_GET_INFO_BY_FD` reads (include/uapi/linux/bpf.h).
#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The runs the kernel skipped of the programs `ebpf` loaded, all together, since they were
/// loaded. A kernel that does not count them, or a program whose information cannot be read,
/// adds 0.
pub fn total(ebpf: &Ebpf) -> u64 {
    ebpf.programs()
        .filter_map(|(_, program)| program.fd().ok())
        .filter_map(|fd| info(fd.as_fd()).ok())
        .map(|info| info.recursion_misses)
        .sum()
}

fn info(fd: BorrowedFd<'_>) -> std::io::Result<bpf_prog_info> {
    // SAFETY: bpf_prog_info is plain data, all zeros being "nothing asked" for every field that
    // points at a buffer.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let attr = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<bpf_prog_info>() as u32,
        info: &mut info as *mut bpf_prog_info as u64,
    };
    // SAFETY: `attr` is the command's attribute, of the size passed, and points at `info`, which
    // is valid for `info_len` bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &attr as *const InfoByFd,
            size_of::<InfoByFd>(),
        )
    };
    match rc {
        0 => Ok(info),
        _ => Err(std::io::Error::last_os_error()),
    }
}
