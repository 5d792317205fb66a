//! Offsets of the few kernel struct fields the programs read, taken from the running kernel's
//! BTF at load time: aya-ebpf has no CO-RE, and these layouts differ between kernels.

use btf_rs::{Btf, Type};

use crate::error::Error;

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// The offsets the programs need, in their globals' order.
#[derive(Debug, Clone, Copy)]
pub struct Offsets {
    /// `offsetof(struct task_struct, tgid)`.
    pub task_tgid: u32,
    /// `offsetof(struct task_struct, real_cred)`.
    pub task_real_cred: u32,
    /// `offsetof(struct cred, user_ns)`.
    pub cred_user_ns: u32,
    /// `offsetof(struct user_namespace, level)`.
    pub user_ns_level: u32,
}

pub fn read() -> Result<Offsets, Error> {
    let btf = Btf::from_file(VMLINUX).map_err(|_| Error::NoBtf)?;
    let field = |name: &'static str| {
        let (structure, member) = name.split_once('.').expect("struct.field");
        field_offset(&btf, structure, member).ok_or(Error::KernelLayout(name))
    };
    Ok(Offsets {
        task_tgid: field("task_struct.tgid")?,
        task_real_cred: field("task_struct.real_cred")?,
        cred_user_ns: field("cred.user_ns")?,
        user_ns_level: field("user_namespace.level")?,
    })
}

/// Byte offset of `field` in `structure`, looking through anonymous members.
fn field_offset(btf: &Btf, structure: &str, field: &str) -> Option<u32> {
    btf.resolve_types_by_name(structure).ok()?.into_iter().find_map(|t| match t {
        Type::Struct(s) => member_offset(btf, &s.members, field),
        _ => None,
    })
}

fn member_offset(btf: &Btf, members: &[btf_rs::Member], field: &str) -> Option<u32> {
    for member in members {
        let name = btf.resolve_name(member).unwrap_or_default();
        if name == field {
            return Some(member.bit_offset() / 8);
        }
        if name.is_empty() {
            let nested = match btf.resolve_chained_type(member).ok()? {
                Type::Struct(s) | Type::Union(s) => member_offset(btf, &s.members, field),
                _ => None,
            };
            if let Some(offset) = nested {
                return Some(member.bit_offset() / 8 + offset);
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
        let offsets = super::read().expect("task_struct offsets");
        // Both sit deep inside task_struct, tgid after pid, the credentials after both.
        assert!(offsets.task_tgid > 64 && offsets.task_tgid % 4 == 0, "{offsets:?}");
        assert!(offsets.task_real_cred > offsets.task_tgid && offsets.task_real_cred % 8 == 0, "{offsets:?}");
    }
}
