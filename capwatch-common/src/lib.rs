//! What crosses the kernel boundary between capwatch's eBPF programs and its userspace.
//!
//! Every struct here is defined once, `#[repr(C)]`, with explicit padding, so both sides agree on
//! the layout byte for byte. Every kind of value that crosses it is a `#[repr]` enum whose name
//! sits beside its number: numbers are never reused, and userspace decodes a number it does not
//! know as `None` rather than guessing.
#![no_std]

/// Defines a `#[repr]` enum whose variants carry their wire number and their name, with
/// `from_raw` (the number back to the variant) and `name`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ty {
            $($(#[$vmeta:meta])* $variant:ident = $number:literal => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $number,)+
        }

        impl $name {
            /// Every variant, in number order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The variant with this wire number.
            pub const fn from_raw(raw: $repr) -> Option<Self> {
                match raw {
                    $($number => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Its name in logs, metrics and reports.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub const fn raw(self) -> $repr {
                self as $repr
            }
        }
    };
}

wire_enum! {
    /// What the kernel answered to a capability check.
    pub enum Verdict: u16 {
        Granted = 0 => "granted",
        Denied = 1 => "denied",
    }
}

wire_enum! {
    /// Who in a container's cgroup made a check or a failing call.
    pub enum Origin: u16 {
        /// The container's own command and its descendants (the default).
        App = 0 => "app",
        /// The OCI runtime (runc init and the like) setting the container up before it execs the
        /// container's command, or before it execs a `docker exec` command.
        Runtime = 1 => "runtime",
        /// A command started in the container after its own (`docker exec`), and its descendants.
        Exec = 2 => "exec",
    }
}

wire_enum! {
    /// What the failing thread's seccomp filter says of the failed syscall.
    pub enum Seccomp: u32 {
        /// No filter: seccomp did not refuse it.
        None = 0 => "none",
        /// A filter that does not always allow this syscall: it may have refused it.
        MayRefuse = 1 => "may_refuse",
        /// A filter that allows this syscall whatever its arguments: seccomp did not refuse it.
        Allows = 2 => "allows",
        /// The kernel's seccomp state could not be read.
        Unknown = 3 => "unknown",
    }
}

wire_enum! {
    /// What the kernel side could not deliver, by its slot in `CW_LOSSES`: counted there so that
    /// nothing is lost silently.
    pub enum Loss: u32 {
        /// A first-occurrence event found the ring buffer full (its counts are still aggregated).
        RingbufFull = 0 => "ringbuf_full",
        /// A capability check found `CW_CAPS` full: the check was not counted.
        CapMapFull = 1 => "cap_map_full",
        /// A failing syscall found `CW_FAILURES` full: the failure was not counted.
        FailureMapFull = 2 => "failure_map_full",
        /// kprobe backend: a `cap_capable` return had no matching entry (the kprobe was missed or
        /// its stash was full); the check was not counted.
        KretprobeUnmatched = 3 => "kretprobe_unmatched",
        /// kprobe backend: an entry was overwritten before its return was seen, or left behind by
        /// an exiting thread (a missed kretprobe); that check was not counted.
        KprobeStashOverwritten = 4 => "kprobe_stash_overwritten",
        /// kprobe backend: the per-thread stash was full; the check was not counted.
        KprobeStashFull = 5 => "kprobe_stash_full",
        /// A denied check, or what a capset keeps, could not be remembered for its syscall's exit
        /// (`CW_DENIED` full): a failure of that syscall may be explained without it, or a
        /// capability that capset kept go unrecorded.
        DeniedStashFull = 6 => "denied_stash_full",
        /// An exec found `CW_EXECS` full: the program's file capabilities were not looked at.
        ExecMapFull = 7 => "exec_map_full",
        /// A program on one of `cap_capable`'s direct callers could not read the credentials it
        /// judges the check from; that check was not counted.
        CallerUnjudged = 8 => "caller_unjudged",
        /// A syscall set found `CW_CALLS` full: that cgroup's syscalls of one origin go
        /// unrecorded, and a profile written from them would lack them.
        CallsMapFull = 9 => "calls_map_full",
    }
}

impl Loss {
    /// Slots in `CW_LOSSES`: room for kinds added later without a layout change.
    pub const SLOTS: u32 = 16;
}

wire_enum! {
    /// What a ring-buffer record announces.
    pub enum EventKind: u32 {
        /// A `CapKey` was seen for the first time.
        NewCap = 1 => "new_cap",
        /// A `FailKey` was seen for the first time.
        NewFailure = 2 => "new_failure",
        /// An `ExecKey` was seen for the first time.
        NewExec = 3 => "new_exec",
    }
}

/// `CapKey::flags`: the probe saw `cap_capable`'s `opts` argument, so the NOAUDIT and INSETID
/// bits below are facts rather than unknowns.
pub const CAP_FLAG_OPTS_KNOWN: u32 = 1 << 0;
/// `CapKey::flags`: the check was made with `CAP_OPT_NOAUDIT` (an advisory probe by the kernel).
pub const CAP_FLAG_NOAUDIT: u32 = 1 << 1;
/// `CapKey::flags`: the check was made with `CAP_OPT_INSETID`.
pub const CAP_FLAG_INSETID: u32 = 1 << 2;
/// `CapKey::flags`: the check was on credentials other than the task's own (`cred` is not the
/// task's `real_cred`): the kernel acting with substituted credentials, as overlayfs does with
/// its mounter's. The task's own capabilities do not decide it.
pub const CAP_FLAG_FOREIGN_CRED: u32 = 1 << 3;
/// `CapKey::flags`: the check was against a user namespace above the credentials' own (a
/// container in its own user namespace asking for something only the host's can grant). No
/// capability added to the container can satisfy it.
pub const CAP_FLAG_OUTER_USERNS: u32 = 1 << 4;
/// `CapKey::flags`: not a check but a capability a successful capset kept while it narrowed the
/// permitted set (security/commoncap.c cap_capset: the new permitted set must lie within the
/// old one, and no capability is checked for it). The program named it; whether it then uses
/// it, a check tells, and whether it would start without it, nothing the kernel asks does.
/// The key's `syscall` is capset, its verdict granted, its count the capsets that kept it.
pub const CAP_FLAG_KEPT: u32 = 1 << 5;

/// `CapKey::flags` bits 8..16: a `Moot` rule, when the check's answer could not matter for the
/// syscall's arguments and the task's credentials (see `CapKey::moot`).
pub const CAP_FLAG_MOOT_SHIFT: u32 = 8;
pub const CAP_FLAG_MOOT_MASK: u32 = 0xff << CAP_FLAG_MOOT_SHIFT;
/// `CapKey::flags` bits 16..32: the port a CAP_NET_BIND_SERVICE check in bind was for (the
/// lowest one bound tells which `net.ipv4.ip_unprivileged_port_start` would do instead).
pub const CAP_FLAG_PORT_SHIFT: u32 = 16;

wire_enum! {
    /// Why a check's answer could not matter for the call it was made in, judged in the kernel
    /// from the syscall's arguments and the checked credentials (docs/advice-rules.md).
    pub enum Moot: u32 {
        /// The answer may matter.
        No = 0 => "no",
        /// capset kept the inheritable set within the old inheritable and permitted sets: the
        /// CAP_SETPCAP check of `cap_inh_is_capped` decides nothing (security/commoncap.c).
        CapsetWithinPermitted = 1 => "capset_within_permitted",
        /// chmod without S_ISGID in the new mode: the CAP_FSETID check of `in_group_or_capable`
        /// only decides whether S_ISGID survives (fs/attr.c setattr_prepare).
        ChmodWithoutSetgid = 2 => "chmod_without_setgid",
        /// setuid to the uid that is already the real and saved one (kernel/sys.c __sys_setuid).
        SetuidUnchanged = 3 => "setuid_unchanged",
        /// setgid to the gid that is already the real and saved one (kernel/sys.c __sys_setgid).
        SetgidUnchanged = 4 => "setgid_unchanged",
    }
}

wire_enum! {
    /// Kernel call sites whose checks the verdicts treat apart, recognised in the first
    /// occurrence's stack (docs/advice-rules.md). The number is the site's bit in
    /// `Totals::judged`.
    pub enum Site: u32 {
        /// The overcommit accounting's CAP_SYS_ADMIN probe: its answer changes nothing.
        Advisory = 1 => "advisory",
        /// fs/namei.c generic_permission: CAP_DAC_READ_SEARCH, then CAP_DAC_OVERRIDE.
        DacFallback = 2 => "dac_fallback",
        /// A netlink request handled in the sender's call (netlink_rcv_skb): a refusal comes
        /// back in the reply, not as the call's error.
        NetlinkRequest = 3 => "netlink_request",
        /// A process lowering its OOM score (fs/proc/base.c __set_oom_adj).
        OomAdjust = 4 => "oom_adjust",
    }
}

impl Site {
    /// The site's bit in `Totals::judged`.
    pub const fn bit(self) -> u32 {
        1 << self.raw()
    }
}

/// `Totals::judged`: the kernel stack of the first occurrence was read, and the `Site` bits say
/// which known call sites it passed through.
pub const JUDGED_STACK_READ: u32 = 1 << 0;
/// `Totals::judged` bit of `Site::Advisory`.
pub const JUDGED_ADVISORY_SITE: u32 = Site::Advisory.bit();

/// How many call sites (functions' address ranges) the programs take from userspace.
pub const CALL_SITES: usize = 8;

/// `cap_capable`'s `opts` bits (include/linux/security.h).
pub const CAP_OPT_NOAUDIT: u32 = 1 << 1;
pub const CAP_OPT_INSETID: u32 = 1 << 2;

/// The `CapKey::flags` of a check whose `opts` the probe saw (fexit, kprobe):
/// `CAP_FLAG_OPTS_KNOWN`, and the NOAUDIT and INSETID bits as they were.
#[inline(always)]
pub const fn flags_from_opts(opts: u32) -> u32 {
    let mut flags = CAP_FLAG_OPTS_KNOWN;
    if opts & CAP_OPT_NOAUDIT != 0 {
        flags |= CAP_FLAG_NOAUDIT;
    }
    if opts & CAP_OPT_INSETID != 0 {
        flags |= CAP_FLAG_INSETID;
    }
    flags
}

/// The syscall number recorded when the thread was not in a syscall (pt_regs `orig_ax` of -1).
pub const NO_SYSCALL: u32 = u32::MAX;

/// The placeholder BTF id the programs' `bpf_rdonly_cast` kfunc call carries until the loader
/// gives it the running kernel's: aya resolves no kfunc calls.
pub const KFUNC_PLACEHOLDER_ID: u32 = 0x6377_0001;
/// That call as the one eBPF instruction it is (little-endian: opcode `BPF_JMP | BPF_CALL`, source
/// register `BPF_PSEUDO_KFUNC_CALL`, no offset: the function is vmlinux's), as the loader finds
/// it in the object.
pub const KFUNC_RDONLY_CAST_CALL: u64 = (KFUNC_PLACEHOLDER_ID as u64) << 32 | 0x2085;

/// Capacity of a task's command name, as the kernel's `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;

/// One aggregate of capability checks: everything that is the same about them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CapKey {
    /// cgroup2 id (the inode of the cgroup's directory).
    pub cgroup_id: u64,
    /// Capability number (linux/capability.h).
    pub cap: u32,
    /// The syscall the thread was in, or `NO_SYSCALL`.
    pub syscall: u32,
    pub verdict: Verdict,
    pub origin: Origin,
    /// `CAP_FLAG_*` bits.
    pub flags: u32,
}

impl CapKey {
    /// The rule that found this check's answer could not matter, if one did.
    pub fn moot(&self) -> Option<Moot> {
        match Moot::from_raw((self.flags & CAP_FLAG_MOOT_MASK) >> CAP_FLAG_MOOT_SHIFT)? {
            Moot::No => None,
            moot => Some(moot),
        }
    }

    /// Whether this is a capability a narrowing capset kept rather than a check (`CAP_FLAG_KEPT`).
    pub fn kept(&self) -> bool {
        self.flags & CAP_FLAG_KEPT != 0
    }

    /// The port a bind asked for, where the check was about one.
    pub fn port(&self) -> Option<u16> {
        match (self.flags >> CAP_FLAG_PORT_SHIFT) as u16 {
            0 => None,
            port => Some(port),
        }
    }
}

/// log2 of the number of slots (`CW_CAP_SLOTS`, `CW_CAP_COUNTS`) that count capability keys
/// without a hash-map lookup.
pub const CAP_SLOT_BITS: u32 = 14;
pub const CAP_SLOTS: u32 = 1 << CAP_SLOT_BITS;

/// Who owns a counting slot: the key, and `check`, derived from the key's hash, written in the
/// same update. The kernel counts a check in the slot only when both match its own key, so a
/// slot being written or emptied (its `check` 0) never counts a check for another key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapSlot {
    pub key: CapKey,
    pub check: u64,
}

/// The slot a key may own, and the `check` its `CapSlot` carries (never 0): a multiplicative
/// hash of the key's three words, cheap enough for every check. Keys whose slot another key owns
/// are counted in `CW_CAPS` alone.
#[inline(always)]
pub fn cap_slot(key: &CapKey) -> (u32, u64) {
    let words = [
        key.cgroup_id,
        key.cap as u64 | (key.syscall as u64) << 32,
        key.verdict as u64 | (key.origin as u64) << 16 | (key.flags as u64) << 32,
    ];
    let hash = (words[0] ^ words[1].rotate_left(21) ^ words[2].rotate_left(42)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((hash >> (64 - CAP_SLOT_BITS)) as u32, hash | 1)
}

/// One aggregate of failing syscalls: with the evidence of its cause, as the failing thread
/// left it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FailKey {
    pub cgroup_id: u64,
    pub syscall: u32,
    /// Positive errno: `EPERM` (1) or `EACCES` (13).
    pub errno: u16,
    pub origin: Origin,
    /// The failing thread's uid.
    pub uid: u32,
    pub seccomp: Seccomp,
    /// Capabilities denied to the same thread in the same syscall, bit per capability.
    pub denied: u64,
}

/// Capacity of an exec'd program's path in `ExecKey` (longer ones are cut, and say so).
pub const EXEC_PATH_LEN: usize = 128;

/// The programs a cgroup exec'd, by path as the exec named it (`linux_binprm.interp`: the file
/// the kernel opened, the interpreter's for a script): userspace reads each one's file
/// capabilities once.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecKey {
    pub cgroup_id: u64,
    pub origin: Origin,
    pub _pad: [u8; 6],
    /// NUL-padded.
    pub path: [u8; EXEC_PATH_LEN],
}

/// Syscall numbers a syscall set holds: every native x86-64 syscall (the table ends below 512;
/// x32 numbers, with bit 30 set, are not recorded).
pub const CALL_SET_BITS: u32 = 512;

/// Whose syscalls a set holds: a cgroup's processes of one origin. The runtime's are split by
/// whether a seccomp filter was in force: what it calls after installing the container's filter
/// (`filtered`), the filter must allow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallsKey {
    pub cgroup_id: u64,
    pub origin: Origin,
    /// 1 where the calling thread ran under a seccomp filter (recorded for the runtime only).
    pub filtered: u16,
    pub _pad: u32,
}

/// The syscalls made, a bit per syscall number (`CALL_SET_BITS`). A syscall a seccomp filter may
/// have refused (it returned the errno a profile answers with) is not in it: it is a failure.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallSet {
    pub bits: [u64; (CALL_SET_BITS / 64) as usize],
}

impl CallSet {
    pub const EMPTY: CallSet = CallSet { bits: [0; (CALL_SET_BITS / 64) as usize] };

    pub fn contains(&self, syscall: u32) -> bool {
        syscall < CALL_SET_BITS && self.bits[(syscall / 64) as usize] & (1 << (syscall % 64)) != 0
    }

    pub fn insert(&mut self, syscall: u32) {
        if syscall < CALL_SET_BITS {
            self.bits[(syscall / 64) as usize] |= 1 << (syscall % 64);
        }
    }

    /// The syscalls in `self` that `other` lacks.
    pub fn minus(&self, other: &CallSet) -> CallSet {
        let mut bits = self.bits;
        for (word, theirs) in bits.iter_mut().zip(other.bits) {
            *word &= !theirs;
        }
        CallSet { bits }
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    /// The syscall numbers held, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..CALL_SET_BITS).filter(|&n| self.contains(n))
    }
}

/// The thread that made a key's first occurrence.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: [u8; COMM_LEN],
}

/// The value of every aggregate map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totals {
    pub count: u64,
    /// CLOCK_MONOTONIC of the first occurrence (`bpf_ktime_get_ns`), and of the latest as far as
    /// userspace knows: the kernel leaves `last_ns` at the first; a drain that finds the count
    /// grown stamps the drain's time.
    pub first_ns: u64,
    pub last_ns: u64,
    /// Kernel stack of the first occurrence in `CW_STACKS`, or negative when none was kept.
    pub stack_id: i32,
    /// `JUDGED_*` bits: what the kernel judged of the first occurrence.
    pub judged: u32,
    pub sample: Sample,
}

/// A ring-buffer record: a key's first occurrence. Repeats only bump the aggregate's counters.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Announcement<K> {
    pub kind: EventKind,
    pub _pad: u32,
    pub key: K,
    pub totals: Totals,
}

/// The keys the kernel announces, each with its record's kind and where its enum fields lie.
pub trait AnnouncedKey: Copy {
    const KIND: EventKind;

    /// Whether the key's bytes hold a declared variant in every enum field.
    fn valid(bytes: &[u8]) -> bool;
}

impl AnnouncedKey for CapKey {
    const KIND: EventKind = EventKind::NewCap;

    fn valid(bytes: &[u8]) -> bool {
        known(bytes, core::mem::offset_of!(CapKey, verdict), |raw: u16| Verdict::from_raw(raw).is_some())
            && known(bytes, core::mem::offset_of!(CapKey, origin), |raw: u16| Origin::from_raw(raw).is_some())
    }
}

impl AnnouncedKey for FailKey {
    const KIND: EventKind = EventKind::NewFailure;

    fn valid(bytes: &[u8]) -> bool {
        known(bytes, core::mem::offset_of!(FailKey, origin), |raw: u16| Origin::from_raw(raw).is_some())
            && known(bytes, core::mem::offset_of!(FailKey, seccomp), |raw: u32| Seccomp::from_raw(raw).is_some())
    }
}

impl AnnouncedKey for ExecKey {
    const KIND: EventKind = EventKind::NewExec;

    fn valid(bytes: &[u8]) -> bool {
        known(bytes, core::mem::offset_of!(ExecKey, origin), |raw: u16| Origin::from_raw(raw).is_some())
    }
}

/// Whether the integer at `at` in `bytes` passes `check`.
fn known<const N: usize, T: FromNeBytes<N>>(bytes: &[u8], at: usize, check: impl Fn(T) -> bool) -> bool {
    match bytes.get(at..at + N) {
        Some(raw) => check(T::from_ne(raw.try_into().expect("N bytes"))),
        None => false,
    }
}

trait FromNeBytes<const N: usize> {
    fn from_ne(bytes: [u8; N]) -> Self;
}

impl FromNeBytes<2> for u16 {
    fn from_ne(bytes: [u8; 2]) -> Self {
        u16::from_ne_bytes(bytes)
    }
}

impl FromNeBytes<4> for u32 {
    fn from_ne(bytes: [u8; 4]) -> Self {
        u32::from_ne_bytes(bytes)
    }
}

impl<K: AnnouncedKey> Announcement<K> {
    pub fn new(key: K, totals: Totals) -> Self {
        Self { kind: K::KIND, _pad: 0, key, totals }
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: `#[repr(C)]` plain data without implicit padding. The enum fields are written only
    // by capwatch's own programs, always with a declared variant.
    unsafe impl aya::Pod for CapKey {}
    unsafe impl aya::Pod for CapSlot {}
    unsafe impl aya::Pod for FailKey {}
    unsafe impl aya::Pod for ExecKey {}
    unsafe impl aya::Pod for Totals {}
    unsafe impl aya::Pod for CallsKey {}
    unsafe impl aya::Pod for CallSet {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<CapKey>(), 8 + 3 * 4 + 2 * 2);
        assert_eq!(size_of::<FailKey>(), 32);
        assert_eq!(size_of::<ExecKey>(), 16 + EXEC_PATH_LEN);
        assert_eq!(size_of::<CallsKey>(), 16);
        assert_eq!(size_of::<CallSet>(), CALL_SET_BITS as usize / 8);
        assert_eq!(size_of::<Sample>(), 4 * 4 + COMM_LEN);
        assert_eq!(size_of::<Totals>(), 3 * 8 + 2 * 4 + size_of::<Sample>());
        assert_eq!(size_of::<Announcement<CapKey>>(), 8 + size_of::<CapKey>() + size_of::<Totals>());
        assert_eq!(size_of::<Announcement<FailKey>>(), 8 + size_of::<FailKey>() + size_of::<Totals>());
    }

    #[test]
    fn numbers_and_names_round_trip() {
        for &loss in Loss::ALL {
            assert_eq!(Loss::from_raw(loss.raw()), Some(loss));
            assert!(loss.raw() < Loss::SLOTS);
        }
        assert_eq!(Origin::from_raw(2), Some(Origin::Exec));
        assert_eq!(Origin::from_raw(3), None);
        assert_eq!(Verdict::Denied.name(), "denied");
        assert_eq!(Seccomp::MayRefuse.raw(), 1);
        let key = CapKey {
            cgroup_id: 1,
            cap: 8,
            syscall: 126,
            verdict: Verdict::Granted,
            origin: Origin::App,
            flags: CAP_FLAG_OPTS_KNOWN | Moot::CapsetWithinPermitted.raw() << CAP_FLAG_MOOT_SHIFT,
        };
        assert_eq!(key.moot(), Some(Moot::CapsetWithinPermitted));
        assert_eq!(CapKey { flags: CAP_FLAG_OPTS_KNOWN, ..key }.moot(), None);
    }

    /// Every field of a key moves it to another slot most of the time, and no key's check is
    /// the 0 of an empty slot.
    #[test]
    fn keys_spread_over_the_slots() {
        assert_eq!(size_of::<CapSlot>(), size_of::<CapKey>() + 8);
        let key = |cgroup_id, cap, syscall, verdict, origin, flags| CapKey {
            cgroup_id,
            cap,
            syscall,
            verdict,
            origin,
            flags,
        };
        let mut taken = [false; CAP_SLOTS as usize];
        let mut keys = 0;
        for cgroup_id in [1, 2, 4000, 4001, 1 << 40] {
            for cap in [0, 7, 21, 40] {
                for syscall in [0, 105, 161, NO_SYSCALL] {
                    for verdict in [Verdict::Granted, Verdict::Denied] {
                        for origin in [Origin::App, Origin::Runtime, Origin::Exec] {
                            for flags in [0, CAP_FLAG_OPTS_KNOWN, 80 << CAP_FLAG_PORT_SHIFT] {
                                let (slot, check) = cap_slot(&key(cgroup_id, cap, syscall, verdict, origin, flags));
                                assert!(slot < CAP_SLOTS && check != 0);
                                taken[slot as usize] = true;
                                keys += 1;
                            }
                        }
                    }
                }
            }
        }
        // 4320 keys in 16384 slots: a uniform hash gives about 88% of them a slot of their own.
        let slots = taken.iter().filter(|&&t| t).count();
        assert!(slots * 100 >= keys * 80, "{slots} slots for {keys} keys");
    }
}
