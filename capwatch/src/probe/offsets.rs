//! Offsets of the few kernel struct fields the programs read, taken from the running kernel's
//! BTF at load time: aya-ebpf has no CO-RE, and these layouts differ between kernels.

use btf_rs::{Backend, Btf, Type};

use crate::error::Error;

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// The offsets the programs need, in their globals' order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offsets {
    /// `offsetof(struct task_struct, tgid)`.
    pub task_tgid: u32,
    /// `offsetof(struct task_struct, real_cred)`.
    pub task_real_cred: u32,
    /// `offsetof(struct task_struct, cred)`: the subjective credentials, `current_cred()`.
    pub task_cred: u32,
    /// `offsetof(struct cred, user_ns)`.
    pub cred_user_ns: u32,
    /// `offsetof(struct cred, cap_effective)`.
    pub cred_cap_effective: u32,
    /// `offsetof(struct user_namespace, level)`.
    pub user_ns_level: u32,
    /// `task_struct.seccomp.mode` and `task_struct.seccomp.filter`.
    pub task_seccomp_mode: u32,
    pub task_seccomp_filter: u32,
    /// `seccomp_filter.cache.allow_native`, and its size in bits; 0 on kernels without the
    /// cache of always-allowed syscalls (before 5.11), where seccomp is judged less precisely.
    pub filter_allow_native: u32,
    pub seccomp_native_bits: u32,
    /// `struct cred`'s uid, suid, gid, sgid, cap_inheritable and cap_permitted, for the checks
    /// whose answer the credentials make moot; 0 where absent (those checks stay consequential).
    pub cred_uid: u32,
    pub cred_suid: u32,
    pub cred_gid: u32,
    pub cred_sgid: u32,
    pub cred_cap_inheritable: u32,
    pub cred_cap_permitted: u32,
    /// `linux_binprm.interp`: the path of the program an exec opened.
    pub bprm_interp: u32,
    /// `linux_binprm.file`, `file.f_inode`, `inode.__i_nlink`: whether an exec'd file has a name.
    pub bprm_file: u32,
    pub file_inode: u32,
    pub inode_nlink: u32,
    /// `file.f_path.dentry` and `dentry.d_name.name`: a memfd's name.
    pub file_dentry: u32,
    pub dentry_name: u32,
    /// `task_struct.mm` and `mm_struct.exe_file`: the program a process runs.
    pub task_mm: u32,
    pub mm_exe_file: u32,
    /// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.kn`, `kernfs_node.id`: a task's
    /// cgroup2 id, read without a helper call; 0 where absent (the helper is called then).
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// `cgroup.level` and `cgroup.ancestors`: a cgroup's ancestor at a depth, read without a
    /// helper call; 0 where absent.
    pub cgroup_level: u32,
    pub cgroup_ancestors: u32,
    /// `task_struct.stack`: the bottom of a task's kernel stack, from which its saved registers
    /// lie at a fixed distance; 0 where absent (the helper finds them then).
    pub task_stack: u32,
    /// `task_struct.se.cfs_rq` and `cfs_rq.rq` (with group scheduling): the run queue of the
    /// CPU a task runs on, a per-CPU variable (`runqueues`).
    pub task_se_cfs_rq: u32,
    pub cfs_rq_rq: u32,
    /// From a CPU's `runqueues` to its copy of the per-CPU variable that holds the current task
    /// (`current_task`, or `pcpu_hot`, which leads with it on 6.2–6.14), two's complement; 0
    /// where either is unknown.
    pub current_task_from_runqueues: u64,
}

/// The running kernel's BTF, mapped and read lazily where the kernel allows it: a full parse
/// costs tens of MiB.
pub fn kernel_btf() -> Result<Btf, Error> {
    Btf::from_file_with_backend(VMLINUX, Backend::Mmap).or_else(|_| Btf::from_file(VMLINUX)).map_err(|_| Error::NoBtf)
}

pub fn read(btf: &Btf) -> Result<Offsets, Error> {
    let required = |name: &'static str| field(btf, name).map(|(offset, _)| offset).ok_or(Error::KernelLayout(name));
    let optional = |name: &str| field(btf, name).map_or(0, |(offset, _)| offset);
    let (filter_allow_native, seccomp_native_bits) = field(btf, "seccomp_filter.cache.allow_native")
        .and_then(|(offset, t)| match t {
            Type::Array(a) => Some((offset, (a.len() * 64) as u32)),
            _ => None,
        })
        .unwrap_or_default();
    Ok(Offsets {
        task_tgid: required("task_struct.tgid")?,
        task_real_cred: required("task_struct.real_cred")?,
        task_cred: required("task_struct.cred")?,
        cred_user_ns: required("cred.user_ns")?,
        cred_cap_effective: required("cred.cap_effective")?,
        user_ns_level: required("user_namespace.level")?,
        task_seccomp_mode: optional("task_struct.seccomp.mode"),
        task_seccomp_filter: optional("task_struct.seccomp.filter"),
        filter_allow_native,
        seccomp_native_bits,
        cred_uid: optional("cred.uid"),
        cred_suid: optional("cred.suid"),
        cred_gid: optional("cred.gid"),
        cred_sgid: optional("cred.sgid"),
        cred_cap_inheritable: optional("cred.cap_inheritable"),
        cred_cap_permitted: optional("cred.cap_permitted"),
        bprm_interp: optional("linux_binprm.interp"),
        bprm_file: optional("linux_binprm.file"),
        file_inode: optional("file.f_inode"),
        inode_nlink: optional("inode.__i_nlink"),
        file_dentry: optional("file.f_path.dentry"),
        dentry_name: optional("dentry.d_name.name"),
        task_mm: optional("task_struct.mm"),
        mm_exe_file: optional("mm_struct.exe_file"),
        task_cgroups: optional("task_struct.cgroups"),
        css_set_dfl_cgrp: optional("css_set.dfl_cgrp"),
        cgroup_kn: optional("cgroup.kn"),
        kernfs_node_id: optional("kernfs_node.id"),
        cgroup_level: optional("cgroup.level"),
        cgroup_ancestors: optional("cgroup.ancestors"),
        task_stack: optional("task_struct.stack"),
        task_se_cfs_rq: optional("task_struct.se.cfs_rq"),
        cfs_rq_rq: optional("cfs_rq.rq"),
        current_task_from_runqueues: current_task_from_runqueues(btf).unwrap_or(0),
    })
}

/// The distance between two per-CPU variables is the same on every CPU: each CPU's copies lie
/// at one offset from the section the kernel links them in (include/linux/percpu-defs.h
/// `per_cpu_ptr`), whose layout the BTF's `.data..percpu` section gives.
fn current_task_from_runqueues(btf: &Btf) -> Option<u64> {
    let Type::Datasec(percpu) = btf.resolve_types_by_name(".data..percpu").ok()?.into_iter().next()? else {
        return None;
    };
    let offset_of = |name: &str| {
        percpu.variables.iter().find_map(|v| match btf.resolve_chained_type(v) {
            Ok(Type::Var(var)) if btf.resolve_name(&var).is_ok_and(|n| n == name) => Some(v.offset()),
            _ => None,
        })
    };
    let runqueues = offset_of("runqueues")?;
    let holder = match offset_of("current_task") {
        Some(at) => at,
        None => offset_of("pcpu_hot").filter(|_| field(btf, "pcpu_hot.current_task").is_some_and(|(at, _)| at == 0))?,
    };
    Some(u64::from(holder).wrapping_sub(u64::from(runqueues)))
}

/// Byte offset and type of a field given as `struct.member.member…`, looking through
/// anonymous members and typedefs.
fn field(btf: &Btf, path: &str) -> Option<(u32, Type)> {
    let mut parts = path.split('.');
    let structure = parts.next()?;
    let mut current = btf.resolve_types_by_name(structure).ok()?.into_iter().find(|t| matches!(t, Type::Struct(_)))?;
    let mut offset = 0;
    for name in parts {
        let members = match &current {
            Type::Struct(s) | Type::Union(s) => &s.members,
            _ => return None,
        };
        let (at, member_type) = member(btf, members, name)?;
        offset += at;
        current = member_type;
    }
    Some((offset, current))
}

/// A member's byte offset and its type with typedefs and qualifiers peeled off.
fn member(btf: &Btf, members: &[btf_rs::Member], name: &str) -> Option<(u32, Type)> {
    for m in members {
        let member_name = btf.resolve_name(m).unwrap_or_default();
        let mut t = btf.resolve_chained_type(m).ok()?;
        while let Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) = t {
            t = btf.resolve_chained_type(t.as_btf_type()?).ok()?;
        }
        if member_name == name {
            return Some((m.bit_offset() / 8, t));
        }
        if member_name.is_empty() {
            if let Type::Struct(s) | Type::Union(s) = &t {
                if let Some((at, found)) = member(btf, &s.members, name) {
                    return Some((m.bit_offset() / 8 + at, found));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_tgid_in_this_kernels_task_struct() {
        if !std::path::Path::new(super::VMLINUX).exists() {
            eprintln!("SKIPPED: this kernel exposes no BTF");
            return;
        }
        let offsets = super::read(&super::kernel_btf().expect("BTF")).expect("task_struct offsets");
        // Both sit deep inside task_struct, tgid after pid, the credentials after both.
        assert!(offsets.task_tgid > 64 && offsets.task_tgid.is_multiple_of(4), "{offsets:?}");
        assert!(offsets.task_real_cred > offsets.task_tgid && offsets.task_real_cred.is_multiple_of(8), "{offsets:?}");
        // The subjective credentials follow the objective ones.
        assert_eq!(offsets.task_cred, offsets.task_real_cred + 8, "{offsets:?}");
        // cred: usage, the ids, securebits, then the capability sets (inheritable, permitted, effective).
        assert!(offsets.cred_cap_effective > 32 && offsets.cred_cap_effective.is_multiple_of(4), "{offsets:?}");
        // seccomp.mode is its struct's first member, the filter pointer follows it.
        assert!(
            offsets.task_seccomp_mode > 0 && offsets.task_seccomp_filter > offsets.task_seccomp_mode,
            "{offsets:?}"
        );
        // uid leads struct cred's ids, after its usage count; the capability sets follow them.
        assert!(offsets.cred_uid > 0 && offsets.cred_suid > offsets.cred_uid, "{offsets:?}");
        assert!(offsets.cred_cap_permitted > offsets.cred_sgid && offsets.cred_cap_inheritable > 0, "{offsets:?}");
        assert!(offsets.bprm_interp > 0 && offsets.bprm_file > 0, "{offsets:?}");
        assert!(offsets.file_inode > 0 && offsets.inode_nlink > 0, "{offsets:?}");
        assert!(offsets.file_dentry > 0 && offsets.dentry_name > 0, "{offsets:?}");
        assert!(offsets.task_mm > 0 && offsets.mm_exe_file > 0, "{offsets:?}");
        // None of the cgroup path's fields leads its struct.
        assert!(offsets.task_cgroups > 0 && offsets.css_set_dfl_cgrp > 0, "{offsets:?}");
        assert!(offsets.cgroup_kn > 0 && offsets.kernfs_node_id > 0, "{offsets:?}");
        assert!(offsets.cgroup_level > 0 && offsets.cgroup_ancestors > offsets.cgroup_level, "{offsets:?}");
        // Both per-CPU variables lie in one section, less than a MiB apart.
        let apart = offsets.current_task_from_runqueues as i64;
        assert!(apart != 0 && apart.unsigned_abs() < 1 << 20, "{offsets:?}");
        // One bit per native syscall: several hundred, in whole words.
        assert!(offsets.seccomp_native_bits >= 448 && offsets.seccomp_native_bits.is_multiple_of(64), "{offsets:?}");
    }
}
