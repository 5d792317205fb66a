//! What every backend needs of the kernel beyond BTF: the BPF helpers capwatch's programs call
//! that older kernels lack. Checked before loading, so that such a kernel is refused in one line
//! naming what it lacks rather than with the verifier's log of the first program it rejects.

use btf_rs::{Btf, Type};

use crate::error::Error;

/// The helpers, by their `enum bpf_func_id` names, with the Linux release that brought each, oldest
/// first. The newest sets capwatch's floor: without `bpf_task_pt_regs` a check cannot be tied to its
/// syscall. (5.10's tracing programs cannot call `bpf_get_current_ancestor_cgroup_id` either,
/// which the enum cannot tell: it lists the helpers, not which program types may call them.)
const HELPERS: [(&str, &str, &str); 2] = [
    ("BPF_FUNC_get_current_task_btf", "bpf_get_current_task_btf", "5.11"),
    ("BPF_FUNC_task_pt_regs", "bpf_task_pt_regs", "5.15"),
];

/// Refuses a kernel whose BTF lists BPF helpers without those capwatch calls. A BTF that does not
/// list them says nothing either way; the verifier then decides.
pub fn check(btf: &Btf) -> Result<(), Error> {
    let Some(known) = helpers(btf) else { return Ok(()) };
    let missing: Vec<String> = HELPERS
        .iter()
        .filter(|(id, ..)| !known.iter().any(|k| k == id))
        .map(|(_, name, since)| format!("{name}, Linux {since}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Err(Error::KernelTooOld {
        release: release.trim().to_string(),
        missing: missing.join("; "),
        floor: HELPERS[HELPERS.len() - 1].2,
    })
}

/// The names in the kernel's `enum bpf_func_id`.
fn helpers(btf: &Btf) -> Option<Vec<String>> {
    btf.resolve_types_by_name("bpf_func_id").ok()?.into_iter().find_map(|t| match t {
        Type::Enum(e) => Some(e.members.iter().filter_map(|m| btf.resolve_name(m).ok()).collect()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_kernel_has_every_helper_capwatch_calls() {
        let Ok(btf) = crate::probe::offsets::kernel_btf() else {
            eprintln!("SKIPPED: this kernel exposes no BTF");
            return;
        };
        let known = super::helpers(&btf).expect("enum bpf_func_id");
        assert!(known.iter().any(|k| k == "BPF_FUNC_map_lookup_elem"), "{known:?}");
        super::check(&btf).expect("this kernel runs capwatch");
    }
}
