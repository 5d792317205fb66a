//! Kernel addresses to function names, from /proc/kallsyms: the call site of a capability
//! check tells an advisory probe from a real need.

use std::fs;

pub struct Kallsyms {
    /// (address, name), sorted by address.
    symbols: Vec<(u64, String)>,
}

impl Kallsyms {
    /// Reads /proc/kallsyms; None where addresses are hidden (kptr_restrict) or it is unreadable.
    pub fn load() -> Option<Self> {
        Self::parse(&fs::read_to_string("/proc/kallsyms").ok()?)
    }

    pub fn parse(text: &str) -> Option<Self> {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let address = u64::from_str_radix(fields.next()?, 16).ok()?;
                let kind = fields.next()?;
                let name = fields.next()?;
                (address != 0 && matches!(kind, "t" | "T" | "w" | "W")).then(|| (address, name.to_string()))
            })
            .collect();
        if symbols.is_empty() {
            return None;
        }
        symbols.sort_unstable();
        Some(Self { symbols })
    }

    /// The function holding `address`.
    pub fn name(&self, address: u64) -> Option<&str> {
        let index = self.symbols.partition_point(|(start, _)| *start <= address).checked_sub(1)?;
        Some(self.symbols[index].1.as_str())
    }

    /// A stack (innermost first) as "f ← g ← h", without the capability plumbing at its top.
    pub fn call_site(&self, stack: &[u64], depth: usize) -> Option<String> {
        let names: Vec<&str> = stack.iter().filter_map(|&ip| self.name(ip)).collect();
        let first_caller = names.iter().position(|n| !is_plumbing(n)).unwrap_or(names.len());
        let chain: Vec<&str> = names[first_caller..].iter().take(depth).copied().collect();
        (!chain.is_empty()).then(|| chain.join(" ← "))
    }
}

/// The functions every capability check passes through on its way to `cap_capable`; the call
/// site is the first frame below them. `*_noaudit` variants are kept: they say what the caller
/// asked for.
fn is_plumbing(name: &str) -> bool {
    matches!(
        name,
        "cap_capable" | "security_capable" | "ns_capable" | "ns_capable_common" | "capable" | "has_ns_capability"
            | "has_capability" | "ns_capable_setid" | "capable_wrt_inode_uidgid" | "file_ns_capable"
            | "bpf_trace_run5" | "__bpf_trace_cap_capable" | "__traceiter_cap_capable"
    ) || name.starts_with("bpf_prog_")
        || name.starts_with("__bpf_trace_")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
ffffffff81000000 T _stext
ffffffff81100000 T cap_capable
ffffffff81100200 T security_capable
ffffffff81100400 t ns_capable_common
ffffffff81100500 T security_vm_enough_memory_mm
ffffffff81100900 T __mmap_region
ffffffff81101000 D some_data
ffffffff81200000 T inet_create
";

    #[test]
    fn names_addresses_and_skips_the_plumbing() {
        let k = Kallsyms::parse(TEXT).unwrap();
        assert_eq!(k.name(0xffffffff81100210), Some("security_capable"));
        assert_eq!(k.name(0xffffffff81000000 - 1), None);
        let stack = [0xffffffff81100010, 0xffffffff81100220, 0xffffffff81100510, 0xffffffff81100950];
        assert_eq!(k.call_site(&stack, 4).as_deref(), Some("security_vm_enough_memory_mm ← __mmap_region"));
        assert_eq!(k.call_site(&stack, 1).as_deref(), Some("security_vm_enough_memory_mm"));
    }

    #[test]
    fn hidden_addresses_give_nothing() {
        assert!(Kallsyms::parse("0000000000000000 T cap_capable\n").is_none());
    }
}
