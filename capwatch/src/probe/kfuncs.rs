//! The kfunc calls in capwatch's programs. aya 0.14 resolves none: each call is written out
//! whole in the object, with a placeholder id (`capwatch_common::KFUNC_RDONLY_CAST_CALL`), and
//! this gives it the running kernel's BTF id of the function before aya reads the object. Where
//! the kernel lacks the function, the call becomes `r0 = 0`, and the globals that guard it
//! (`CW_PT_REGS_BTF_ID`, `CW_TASK_STRUCT_BTF_ID`, left 0) keep the programs off that path: the
//! verifier never sees a call it cannot resolve.

use btf_rs::{Btf, Type};
use capwatch_common::KFUNC_RDONLY_CAST_CALL;

/// How the programs read the current task and its saved registers (capwatch-ebpf/src/task.rs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reads {
    /// Through `bpf_rdonly_cast` where the kernel has it, no call into the kernel; through the
    /// helpers elsewhere.
    #[default]
    Casts,
    /// Through the helpers `bpf_get_current_task_btf` and `bpf_task_pt_regs` on every kernel:
    /// where a kernel's verifier refuses the casts.
    Helpers,
}

/// `r0 = 0` (`BPF_ALU64 | BPF_MOV | BPF_K`, destination register 0, immediate 0).
const R0_ZERO: u64 = 0xb7;

/// An object with its kfunc calls resolved, and what its globals need to know of them.
pub struct Resolved {
    /// The object, 8-byte aligned as aya's ELF reader wants it.
    words: Vec<u64>,
    len: usize,
    /// The kernel's BTF ids of the types the programs cast to, `struct pt_regs` and `struct
    /// task_struct`, where `bpf_rdonly_cast` was resolved, else 0.
    pub pt_regs_btf_id: u32,
    pub task_struct_btf_id: u32,
}

impl Resolved {
    pub fn object(&self) -> &[u8] {
        // SAFETY: `len` bytes of the words' memory, which `resolve` filled.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast(), self.len) }
    }
}

/// `object` with its `bpf_rdonly_cast` calls given `btf`'s id of the function (kernel/bpf/
/// helpers.c, 6.2+), or turned into `r0 = 0` where `btf` has no such function or not both
/// types to cast to, or `reads` asks for the helpers.
pub fn resolve(object: &[u8], btf: &Btf, reads: Reads) -> Resolved {
    let struct_id = |name| id_of(btf, name, |t| matches!(t, Type::Struct(_)));
    let ids =
        (id_of(btf, "bpf_rdonly_cast", |t| matches!(t, Type::Func(_))), struct_id("pt_regs"), struct_id("task_struct"));
    let (call, pt_regs_btf_id, task_struct_btf_id) = match ids {
        (Some(cast), Some(pt_regs), Some(task_struct)) if reads == Reads::Casts => {
            ((KFUNC_RDONLY_CAST_CALL & 0xffff_ffff) | u64::from(cast) << 32, pt_regs, task_struct)
        }
        _ => (R0_ZERO, 0, 0),
    };
    let mut words = vec![0u64; object.len().div_ceil(8)];
    // SAFETY: the words' memory holds at least `object.len()` bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), object.len()) };
    bytes.copy_from_slice(object);
    let placeholder = KFUNC_RDONLY_CAST_CALL.to_le_bytes();
    // Instructions are 8-byte aligned in the file, as their sections are.
    for instruction in bytes.chunks_exact_mut(8) {
        if instruction == placeholder {
            instruction.copy_from_slice(&call.to_le_bytes());
        }
    }
    Resolved { words, len: object.len(), pt_regs_btf_id, task_struct_btf_id }
}

/// The id of the type named `name` of the kind `kind` accepts.
fn id_of(btf: &Btf, name: &str, kind: impl Fn(&Type) -> bool) -> Option<u32> {
    btf.resolve_ids_by_name(name).ok()?.into_iter().find(|&id| btf.resolve_type_by_id(id).is_ok_and(|t| kind(&t)))
}

#[cfg(test)]
mod tests {
    use capwatch_common::KFUNC_PLACEHOLDER_ID;

    use super::*;

    #[test]
    fn gives_the_call_this_kernels_id_or_makes_it_a_move() {
        let btf = crate::probe::offsets::kernel_btf().expect("the kernel's BTF");
        let mut object = vec![0u8; 32];
        object[8..16].copy_from_slice(&KFUNC_RDONLY_CAST_CALL.to_le_bytes());
        let resolved = resolve(&object, &btf, Reads::Casts);
        let call = u64::from_le_bytes(resolved.object()[8..16].try_into().unwrap());
        if resolved.pt_regs_btf_id != 0 {
            assert_ne!(resolved.task_struct_btf_id, 0);
            assert_eq!(call & 0xffff_ffff, 0x2085, "still a kfunc call");
            assert_ne!(call >> 32, u64::from(KFUNC_PLACEHOLDER_ID), "given an id");
        } else {
            assert_eq!(call, R0_ZERO);
        }
        assert_eq!(&resolved.object()[..8], &[0; 8]);
        let helpers = resolve(&object, &btf, Reads::Helpers);
        assert_eq!((helpers.pt_regs_btf_id, helpers.task_struct_btf_id), (0, 0));
        assert_eq!(u64::from_le_bytes(helpers.object()[8..16].try_into().unwrap()), R0_ZERO);
    }
}
