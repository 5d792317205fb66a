//! Programs exec'd in watched cgroups, once per (cgroup, origin, path): a program file that
//! carries capabilities (`security.capability`, with the effective bit) makes execve fail with
//! EPERM, without any capability check, when the bounding set lacks them
//! (security/commoncap.c bprm_caps_from_vfs_caps). Userspace reads each file's capabilities.

use core::ptr::read_volatile;

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes};
use capwatch_common::{ExecKey, Loss, EXEC_PATH_LEN};

use crate::{aggregate, maps::CW_EXECS, origin};

/// Offset of `interp` in `struct linux_binprm`, read by userspace from the kernel's BTF.
#[unsafe(no_mangle)]
static CW_BPRM_INTERP_OFFSET: u32 = 0;

#[inline(always)]
pub fn on_exec(cgroup_id: u64, bprm: *const u8) {
    let offset = unsafe { read_volatile(&CW_BPRM_INTERP_OFFSET) };
    if offset == 0 {
        return;
    }
    let Ok(interp) = (unsafe { bpf_probe_read_kernel(bprm.wrapping_add(offset as usize) as *const *const u8) }) else {
        return;
    };
    let mut key = ExecKey { cgroup_id, origin: origin::current(), _pad: [0; 6], path: [0; EXEC_PATH_LEN] };
    if unsafe { bpf_probe_read_kernel_str_bytes(interp, &mut key.path) }.is_err() {
        return;
    }
    aggregate::record(&CW_EXECS, &key, || (-1, 0), Loss::ExecMapFull);
}
