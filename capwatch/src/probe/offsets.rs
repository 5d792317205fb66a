//! Offsets of the few kernel struct fields the programs read, taken from the running kernel's
//! BTF at load time: aya-ebpf has no CO-RE, and these layouts differ between kernels.

use btf_rs::{Btf, Type};

use crate::error::Error;

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// `offsetof(struct task_struct, tgid)`.
pub fn task_tgid() -> Result<u32, Error> {
    let btf = Btf::from_file(VMLINUX).map_err(|_| Error::NoBtf)?;
    field_offset(&btf, "task_struct", "tgid").ok_or(Error::KernelLayout("task_struct.tgid"))
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
        let offset = super::task_tgid().expect("task_struct.tgid");
        // tgid follows pid, deep inside task_struct on every kernel capwatch supports.
        assert!(offset > 64 && offset % 4 == 0, "{offset}");
    }
}
