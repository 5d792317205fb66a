//! Kernel addresses to function names, from /proc/kallsyms: the call site of a capability
//! check tells an advisory probe from a real need.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::Path,
};

use capwatch_common::Site;

/// Where the kernel lists its symbols.
pub const KALLSYMS: &str = "/proc/kallsyms";

/// Kernel functions whose capability checks the verdicts treat apart, found in a check's stack
/// (docs/advice-rules.md):
/// - the overcommit accounting asks for CAP_SYS_ADMIN (with CAP_OPT_NOAUDIT) on every private
///   writable mmap, brk, mprotect, mremap and execve only to size its reserve (security/commoncap.c
///   cap_vm_enough_memory, mm/util.c __vm_enough_memory);
/// - fs/namei.c generic_permission tries CAP_DAC_READ_SEARCH before CAP_DAC_OVERRIDE;
/// - net/netlink/af_netlink.c netlink_rcv_skb runs a request's handler in the sender's call and
///   returns its error in the reply;
/// - fs/proc/base.c __set_oom_adj refuses to lower an OOM score without CAP_SYS_RESOURCE.
pub const CALL_SITE_FUNCTIONS: [(&str, Site); 6] = [
    ("security_vm_enough_memory_mm", Site::Advisory),
    ("cap_vm_enough_memory", Site::Advisory),
    ("__vm_enough_memory", Site::Advisory),
    ("generic_permission", Site::DacFallback),
    ("netlink_rcv_skb", Site::NetlinkRequest),
    ("__set_oom_adj", Site::OomAdjust),
];

/// The advisory functions' names: where a check's recorded call site starts with one of them,
/// the check is advisory.
pub fn advisory_functions() -> impl Iterator<Item = &'static str> {
    CALL_SITE_FUNCTIONS.iter().filter(|(_, site)| *site == Site::Advisory).map(|(name, _)| *name)
}

/// The address ranges [start, end) of the named kernel functions that kallsyms shows, read in one
/// pass without keeping the table: a function ends where the next text symbol begins.
pub fn ranges<'a>(functions: &[&'a str]) -> Vec<(&'a str, u64, u64)> {
    let Ok(file) = fs::File::open(KALLSYMS) else { return Vec::new() };
    ranges_in(BufReader::new(file).lines().map_while(Result::ok), functions)
}

fn ranges_in<'a, L: AsRef<str>>(lines: impl Iterator<Item = L>, functions: &[&'a str]) -> Vec<(&'a str, u64, u64)> {
    let mut starts = Vec::new();
    let mut text = Vec::new();
    for line in lines {
        let mut fields = line.as_ref().split_whitespace();
        let (Some(address), Some(kind), Some(name)) = (fields.next(), fields.next(), fields.next()) else { continue };
        let Ok(address) = u64::from_str_radix(address, 16) else { continue };
        if address == 0 || !matches!(kind, "t" | "T" | "w" | "W") {
            continue;
        }
        text.push(address);
        if let Some(&function) = functions.iter().find(|f| **f == name) {
            starts.push((function, address));
        }
    }
    text.sort_unstable();
    starts
        .into_iter()
        .filter_map(|(function, start)| {
            let next = text.partition_point(|&a| a <= start);
            text.get(next).map(|&end| (function, start, end))
        })
        .collect()
}

pub struct Kallsyms {
    /// (address, where its name is in `names`), sorted by address. Kept compact: the daemon
    /// holds the table for as long as it runs.
    symbols: Vec<(u64, u32, u32)>,
    names: String,
}

impl Kallsyms {
    /// Reads /proc/kallsyms a line at a time; None where addresses are hidden (kptr_restrict)
    /// or it is unreadable.
    pub fn load() -> Option<Self> {
        let file = fs::File::open(KALLSYMS).ok()?;
        Self::from_lines(BufReader::new(file).lines().map_while(Result::ok))
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::from_lines(text.lines())
    }

    fn from_lines<L: AsRef<str>>(lines: impl Iterator<Item = L>) -> Option<Self> {
        let mut names = String::new();
        let mut symbols: Vec<(u64, u32, u32)> = Vec::new();
        for line in lines {
            let line = line.as_ref();
            let mut fields = line.split_whitespace();
            let (Some(address), Some(kind), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            let Ok(address) = u64::from_str_radix(address, 16) else { continue };
            if address != 0 && matches!(kind, "t" | "T" | "w" | "W") {
                symbols.push((address, names.len() as u32, name.len() as u32));
                names.push_str(name);
            }
        }
        if symbols.is_empty() {
            return None;
        }
        symbols.sort_unstable_by_key(|&(address, ..)| address);
        symbols.shrink_to_fit();
        names.shrink_to_fit();
        Some(Self { symbols, names })
    }

    /// The function holding `address`.
    pub fn name(&self, address: u64) -> Option<&str> {
        let index = self.symbols.partition_point(|(start, ..)| *start <= address).checked_sub(1)?;
        let (_, at, len) = self.symbols[index];
        self.names.get(at as usize..(at + len) as usize)
    }

    /// A stack (innermost first) as "f ← g ← h", without the capability plumbing at its top.
    pub fn call_site(&self, stack: &[u64], depth: usize) -> Option<String> {
        let names: Vec<&str> = stack.iter().filter_map(|&ip| self.name(ip)).collect();
        let first_caller = names.iter().position(|n| !is_plumbing(n)).unwrap_or(names.len());
        let chain: Vec<&str> = names[first_caller..].iter().take(depth).copied().collect();
        (!chain.is_empty()).then(|| chain.join(" ← "))
    }
}

/// The address of the kernel symbol `name`, functions and data alike, from a kallsyms listing
/// read a line at a time. None where it is not listed (data symbols need CONFIG_KALLSYMS_ALL) or
/// addresses are hidden.
pub fn address(kallsyms: &Path, name: &str) -> Option<u64> {
    let file = fs::File::open(kallsyms).ok()?;
    BufReader::new(file).lines().map_while(Result::ok).find_map(|line| {
        let mut fields = line.split_whitespace();
        let (address, _kind, symbol) = (fields.next()?, fields.next()?, fields.next()?);
        let address = u64::from_str_radix(address, 16).ok().filter(|&a| a != 0)?;
        (symbol == name && fields.next().is_none()).then_some(address)
    })
}

/// The functions every capability check passes through on its way to `cap_capable`; the call
/// site is the first frame below them. `*_noaudit` variants are kept: they say what the caller
/// asked for.
fn is_plumbing(name: &str) -> bool {
    matches!(
        name,
        "cap_capable"
            | "security_capable"
            | "ns_capable"
            | "ns_capable_common"
            | "capable"
            | "has_ns_capability"
            | "has_capability"
            | "ns_capable_setid"
            | "capable_wrt_inode_uidgid"
            | "file_ns_capable"
            | "bpf_trace_run5"
            | "__bpf_trace_cap_capable"
            | "__traceiter_cap_capable"
    ) || name.starts_with("bpf_prog_")
        // A fexit program runs from the trampoline that replaced the probed function's entry.
        || name.starts_with("bpf_trampoline_")
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
    fn a_function_ends_where_the_next_text_symbol_begins() {
        let ranges = ranges_in(TEXT.lines(), &["security_vm_enough_memory_mm", "inet_create", "absent"]);
        assert_eq!(
            ranges,
            [("security_vm_enough_memory_mm", 0xffffffff81100500, 0xffffffff81100900)],
            "the last text symbol has no known end"
        );
    }

    #[test]
    fn hidden_addresses_give_nothing() {
        assert!(Kallsyms::parse("0000000000000000 T cap_capable\n").is_none());
    }
}
