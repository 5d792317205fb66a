//! Names of capabilities and syscalls, from the crates that keep those tables.

use std::{borrow::Cow, sync::OnceLock};

/// `CAP_SETUID` for 7; `CAP_41` for a capability newer than the table.
pub fn capability(number: u32) -> Cow<'static, str> {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        let mut all: Vec<caps::Capability> = caps::all().into_iter().collect();
        all.sort_by_key(caps::Capability::index);
        let mut names = Vec::new();
        for cap in all {
            let index = cap.index() as usize;
            names.resize(index + 1, String::new());
            names[index] = cap.to_string();
        }
        names
    });
    match names.get(number as usize) {
        Some(name) if !name.is_empty() => Cow::Borrowed(name.as_str()),
        _ => Cow::Owned(format!("CAP_{number}")),
    }
}

/// A check's verdict, `granted` or `denied`; `kept` for a capability a narrowing capset kept,
/// which is no check (`CapKey::kept`).
pub fn verdict(key: &capwatch_common::CapKey) -> &'static str {
    if key.kept() {
        "kept"
    } else {
        key.verdict.name()
    }
}

/// The capability number for a name, with or without its `CAP_` prefix, in any case.
pub fn capability_number(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    full.parse::<caps::Capability>().ok().map(|c| u32::from(c.index()))
}

/// The capability numbers set in a mask such as /proc's `CapEff`.
pub fn mask_bits(mask: u64) -> impl Iterator<Item = u32> {
    (0..64).filter(move |bit| mask & (1 << bit) != 0)
}

/// Every capability this build knows (`--cap-add ALL`, `--privileged`).
pub fn all_capabilities() -> u64 {
    caps::all().iter().fold(0, |mask, cap| mask | cap.bitmask())
}

/// The syscall's name on this architecture: `setuid` for 105 on x86_64.
pub fn syscall(number: u32) -> Cow<'static, str> {
    if number == capwatch_common::NO_SYSCALL {
        return Cow::Borrowed("(no syscall)");
    }
    match syscalls::Sysno::new(number as usize) {
        Some(sysno) => Cow::Borrowed(sysno.name()),
        None => Cow::Owned(format!("syscall_{number}")),
    }
}

/// A kernel errno's symbolic name, for the two capwatch watches.
pub fn errno(errno: u16) -> Cow<'static, str> {
    match errno as i32 {
        libc::EPERM => Cow::Borrowed("EPERM"),
        libc::EACCES => Cow::Borrowed("EACCES"),
        other => Cow::Owned(format!("errno {other}")),
    }
}

/// Text that came from outside (an argument, a name) as an error line may show it: control
/// characters escaped, and cut short past 80 characters.
pub fn shown(text: &str) -> String {
    const LONGEST: usize = 80;
    let escaped: String = text.chars().flat_map(char::escape_default).collect();
    match escaped.char_indices().nth(LONGEST) {
        Some((cut, _)) => format!("{}… ({} characters)", &escaped[..cut], text.chars().count()),
        None => escaped,
    }
}

/// A task's command name from the kernel's NUL-padded buffer.
pub fn comm(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_by_number_and_name() {
        assert_eq!(capability(0), "CAP_CHOWN");
        assert_eq!(capability(7), "CAP_SETUID");
        assert_eq!(capability(21), "CAP_SYS_ADMIN");
        assert_eq!(capability(34), "CAP_SYSLOG");
        assert_eq!(capability(40), "CAP_CHECKPOINT_RESTORE");
        assert_eq!(capability(63), "CAP_63");
        assert_eq!(capability_number("net_raw"), Some(13));
        assert_eq!(capability_number("CAP_SYS_MODULE"), Some(16));
        assert_eq!(capability_number("NOPE"), None);
    }

    #[test]
    fn decodes_seed_001s_mask_including_the_bits_above_31() {
        let names: Vec<String> = mask_bits(0x0000001dbdbeffff).map(|n| capability(n).into_owned()).collect();
        for set in [
            "CAP_CHOWN",
            "CAP_SYS_ADMIN",
            "CAP_SETFCAP",
            "CAP_MAC_OVERRIDE",
            "CAP_SYSLOG",
            "CAP_WAKE_ALARM",
            "CAP_BLOCK_SUSPEND",
        ] {
            assert!(names.iter().any(|n| n == set), "{set} missing from {names:?}");
        }
        for clear in
            ["CAP_SYS_MODULE", "CAP_SYS_BOOT", "CAP_SYS_TIME", "CAP_AUDIT_CONTROL", "CAP_MAC_ADMIN", "CAP_AUDIT_READ"]
        {
            assert!(!names.iter().any(|n| n == clear), "{clear} wrongly in {names:?}");
        }
        assert_eq!(names.len(), 0x0000001dbdbeffffu64.count_ones() as usize);
    }

    #[test]
    fn every_capability_is_the_41_of_linux_6() {
        assert_eq!(all_capabilities(), (1 << 41) - 1);
    }

    #[test]
    fn syscalls_by_number() {
        assert_eq!(syscall(105), "setuid");
        assert_eq!(syscall(41), "socket");
        assert_eq!(syscall(257), "openat");
        assert_eq!(syscall(capwatch_common::NO_SYSCALL), "(no syscall)");
        assert_eq!(syscall(100_000), "syscall_100000");
    }

    #[test]
    fn outside_text_is_shown_on_one_short_line() {
        assert_eq!(shown("web"), "web");
        assert_eq!(shown("a\nb"), "a\\nb");
        let long = shown(&"x".repeat(10_000_000));
        assert!(long.len() < 120 && long.ends_with("(10000000 characters)"), "{long}");
    }

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm(b"cw-workload\0\0\0\0\0"), "cw-workload");
        assert_eq!(comm(b"exactly16bytes!!"), "exactly16bytes!!");
    }
}
