//! capwatch proves its own sight before it reports anything. In a throwaway cgroup below the
//! watched root, a short child (capwatch itself, re-executed as `capwatch selftest-child` and
//! placed in the cgroup before its exec) makes one of each kind of check and failure capwatch
//! relies on; the kernel's aggregates for that cgroup then say which kinds the attached probe saw.
//! Where the probe on `cap_capable` misses a check that one of its direct callers makes (the
//! kernel's compiler inlined `cap_capable` there), a program on that caller is attached and the
//! child runs again. What stays unseen is a blind spot, said wherever capwatch's advice is shown.
//! Then the cgroup is removed and forgotten: none of it reaches the store, the lines (but one
//! `selftest` line), the metrics or any container.

use std::{
    collections::BTreeSet,
    ffi::CString,
    fs,
    io::{self, Read},
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use capwatch_common::{Seccomp, Verdict};
use serde::{Deserialize, Serialize};

use crate::{
    capsets::CapSets,
    cgroup::Hierarchy,
    intake::Snapshot,
    monitor::Monitor,
    names,
    probe::{Caller, HookAttempt},
};

/// The hidden subcommand the child runs as.
pub const CHILD_COMMAND: &str = "selftest-child";

/// What the throwaway cgroup's name starts with; its pid follows.
const THROWAWAY_PREFIX: &str = "capwatch-selftest-";

/// Whether a cgroup path is a self-test's throwaway cgroup. Another capwatch watching the same
/// cgroups (a `trace` beside the daemon) sees a self-test's checks; they are nobody's.
pub fn is_throwaway(cgroup: &str) -> bool {
    cgroup.rsplit('/').next().is_some_and(|leaf| leaf.starts_with(THROWAWAY_PREFIX))
}

/// How long the child may take before it is killed; it needs milliseconds.
const CHILD_TIMEOUT: Duration = Duration::from_secs(5);

const CAP_SETUID: u32 = 7;
const CAP_SETPCAP: u32 = 8;
const CAP_SYS_RAWIO: u32 = 17;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;

/// The syscall the child's seccomp filter refuses: one nothing else in it makes.
const REFUSED_BY_SECCOMP: libc::c_long = libc::SYS_getppid;

/// A kind of check or failure capwatch relies on seeing, as the child makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A plain `capable()`: setuid(2)'s CAP_SETUID.
    Capable,
    /// A denied check: CAP_SETUID, out of the effective set.
    Denied,
    /// capset's CAP_SETPCAP, asked by `cap_capset` directly (`cap_inh_is_capped`).
    Capset,
    /// prctl(PR_SET_SECUREBITS)'s CAP_SETPCAP, asked by `cap_task_prctl` directly.
    Securebits,
    /// CAP_SYS_RAWIO for a mapping below vm.mmap_min_addr, asked by `cap_mmap_addr` directly.
    LowMmap,
    /// The advisory CAP_SYS_ADMIN of an accountable mapping, asked by `cap_vm_enough_memory`.
    VmAccounting,
    /// CAP_SYS_PTRACE of a ptrace access check (`cap_ptrace_access_check`, through `ns_capable`).
    Ptrace,
    /// A syscall failing with EPERM: ptrace(PTRACE_ATTACH) of itself.
    Failure,
    /// A seccomp refusal: the child's own filter, EPERM for one syscall.
    Seccomp,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Capable,
        Kind::Denied,
        Kind::Capset,
        Kind::Securebits,
        Kind::LowMmap,
        Kind::VmAccounting,
        Kind::Ptrace,
        Kind::Failure,
        Kind::Seccomp,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Capable => "capable",
            Kind::Denied => "denied",
            Kind::Capset => "capset",
            Kind::Securebits => "securebits",
            Kind::LowMmap => "low_mmap",
            Kind::VmAccounting => "vm_accounting",
            Kind::Ptrace => "ptrace",
            Kind::Failure => "failure",
            Kind::Seccomp => "seccomp",
        }
    }

    fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The capability checked, for the kinds that are checks.
    pub fn capability(self) -> Option<u32> {
        match self {
            Kind::Capable | Kind::Denied => Some(CAP_SETUID),
            Kind::Capset | Kind::Securebits => Some(CAP_SETPCAP),
            Kind::LowMmap => Some(CAP_SYS_RAWIO),
            Kind::VmAccounting => Some(CAP_SYS_ADMIN),
            Kind::Ptrace => Some(CAP_SYS_PTRACE),
            Kind::Failure | Kind::Seccomp => None,
        }
    }

    /// The syscall the child makes it in.
    pub fn syscall(self) -> u32 {
        let number = match self {
            Kind::Capable | Kind::Denied => libc::SYS_setuid,
            Kind::Capset => libc::SYS_capset,
            Kind::Securebits => libc::SYS_prctl,
            Kind::LowMmap | Kind::VmAccounting => libc::SYS_mmap,
            Kind::Ptrace => libc::SYS_openat,
            Kind::Failure => libc::SYS_ptrace,
            Kind::Seccomp => REFUSED_BY_SECCOMP,
        };
        number as u32
    }

    /// The direct caller of `cap_capable` whose program sees this kind where the probe on
    /// `cap_capable` does not.
    fn caller(self) -> Option<Caller> {
        match self {
            Kind::Capset => Some(Caller::Capset),
            Kind::LowMmap => Some(Caller::MmapAddr),
            Kind::VmAccounting => Some(Caller::VmEnoughMemory),
            _ => None,
        }
    }

    /// What a reader is told capwatch cannot see.
    fn hidden(self) -> String {
        let cap = |n: u32| names::capability(n).into_owned();
        let syscall = names::syscall(self.syscall());
        match self {
            Kind::Denied => format!("denied {} checks in {syscall}", cap(CAP_SETUID)),
            Kind::Securebits => format!("{} checks in prctl(PR_SET_SECUREBITS)", cap(CAP_SETPCAP)),
            Kind::VmAccounting => format!("the advisory {} checks in mmap", cap(CAP_SYS_ADMIN)),
            Kind::Ptrace => format!("{} checks of ptrace access", cap(CAP_SYS_PTRACE)),
            Kind::Failure => "syscalls failing with EPERM".into(),
            Kind::Seccomp => "seccomp refusals".into(),
            Kind::Capable | Kind::Capset | Kind::LowMmap => {
                format!("{} checks in {syscall}", cap(self.capability().unwrap_or_default()))
            }
        }
    }

    /// What it costs a reader.
    fn consequence(self) -> &'static str {
        match self {
            Kind::Denied => "a capability a container lacks may go unreported",
            Kind::VmAccounting => "the advice never needs them, but reports will not show them",
            Kind::Failure | Kind::Seccomp => "explanations may lack them",
            Kind::Capable | Kind::Capset | Kind::Securebits | Kind::LowMmap | Kind::Ptrace => "the advice may lack it",
        }
    }

    /// Whether the cgroup's aggregates hold this kind.
    fn seen_in(self, totals: &Snapshot) -> bool {
        let syscall = self.syscall();
        match (self, self.capability()) {
            (Kind::Failure, _) => {
                totals.failures.iter().any(|(k, _)| k.syscall == syscall && i32::from(k.errno) == libc::EPERM)
            }
            (Kind::Seccomp, _) => totals.failures.iter().any(|(k, _)| {
                k.syscall == syscall && i32::from(k.errno) == libc::EPERM && k.seccomp == Seccomp::MayRefuse
            }),
            (_, Some(cap)) => totals.caps.iter().any(|(k, _)| {
                k.cap == cap && k.syscall == syscall && (self != Kind::Denied || k.verdict == Verdict::Denied)
            }),
            (_, None) => false,
        }
    }
}

/// A kind of check capwatch cannot see on this kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlindSpot {
    pub kind: Kind,
    /// `CAP_SYS_RAWIO`; none for failing syscalls.
    pub capability: Option<String>,
    /// The syscall the self-test made it in.
    pub syscall: String,
    /// The sentence every reader prints.
    pub message: String,
}

impl BlindSpot {
    pub fn of(kind: Kind) -> Self {
        Self {
            kind,
            capability: kind.capability().map(|c| names::capability(c).into_owned()),
            syscall: names::syscall(kind.syscall()).into_owned(),
            message: format!("this kernel hides {} from capwatch: {}", kind.hidden(), kind.consequence()),
        }
    }
}

/// A kind the child could not make on this host, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Untested {
    pub kind: Kind,
    pub reason: String,
}

/// What the self-test proved of capwatch's sight on this kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sight {
    /// Why the self-test could not run, where it could not: then nothing is proven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unproven: Option<String>,
    /// The kinds it could not see, programs on `cap_capable`'s callers included.
    #[serde(default)]
    pub blind_spots: Vec<BlindSpot>,
    /// Kinds the child could not make here (vm.mmap_min_addr 0: no such check can happen).
    #[serde(default)]
    pub untested: Vec<Untested>,
    /// The programs tried on `cap_capable`'s direct callers, attached or refused.
    #[serde(default)]
    pub hooks: Vec<HookAttempt>,
    /// How long the self-test took.
    #[serde(default)]
    pub millis: u64,
}

impl Sight {
    /// One sentence per thing capwatch cannot vouch for: what every reader of its advice says.
    pub fn warnings(&self) -> Vec<String> {
        let unproven = self.unproven.iter().map(|why| {
            format!(
                "capwatch could not test what it sees on this kernel ({why}): the advice may lack checks it cannot see"
            )
        });
        unproven.chain(self.blind_spots.iter().map(|b| b.message.clone())).collect()
    }

    /// The callers being watched by a program of capwatch's own.
    pub fn hooked(&self) -> Vec<String> {
        self.hooks.iter().filter(|h| h.refused.is_none()).map(HookAttempt::describe).collect()
    }
}

/// The program the child is: this executable, as the daemon and `trace` run it.
pub fn this_program() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

/// Proves what `monitor`'s probe sees, in a throwaway cgroup below `watched` (a cgroup path in
/// `hierarchy`, inside the monitor's scope), with `program` as the child. Hooks the direct
/// callers of `cap_capable` whose checks it misses, and forgets the cgroup.
pub fn run(monitor: &mut Monitor, hierarchy: &Hierarchy, watched: &Path, program: &Path) -> Sight {
    let started = Instant::now();
    let mut sight = prove(monitor, hierarchy, watched, program)
        .unwrap_or_else(|why| Sight { unproven: Some(why), ..Sight::default() });
    sight.millis = started.elapsed().as_millis() as u64;
    sight
}

fn prove(monitor: &mut Monitor, hierarchy: &Hierarchy, watched: &Path, program: &Path) -> Result<Sight, String> {
    let cgroup = Throwaway::create(&hierarchy.dir(watched))?;
    let outcome = (|| {
        let untested = cgroup.run(program)?;
        let mut visible = seen(monitor, cgroup.id)?;
        let missing: Vec<Kind> =
            Kind::ALL.into_iter().filter(|k| !visible.contains(k) && !untested.iter().any(|u| u.kind == *k)).collect();
        let callers: Vec<Caller> = missing.iter().filter_map(|k| k.caller()).collect();
        let mut hooks = Vec::new();
        if !callers.is_empty() {
            hooks = monitor.probe_mut().hook_callers(&callers);
            if hooks.iter().any(|h| h.refused.is_none()) {
                cgroup.run(program)?;
                visible = seen(monitor, cgroup.id)?;
            }
        }
        let blind_spots = missing.into_iter().filter(|k| !visible.contains(k)).map(BlindSpot::of).collect();
        Ok(Sight { unproven: None, blind_spots, untested, hooks, millis: 0 })
    })();
    let id = cgroup.id;
    drop(cgroup);
    monitor.forget_cgroup(id).map_err(|e| format!("forgetting the self-test's cgroup: {e}"))?;
    outcome
}

/// The kinds the kernel's aggregates hold for the cgroup.
fn seen(monitor: &Monitor, cgroup_id: u64) -> Result<BTreeSet<Kind>, String> {
    let totals = monitor.kernel_totals(cgroup_id).map_err(|e| e.to_string())?;
    Ok(Kind::ALL.into_iter().filter(|k| k.seen_in(&totals)).collect())
}

/// The self-test's cgroup, removed when dropped.
struct Throwaway {
    dir: PathBuf,
    id: u64,
}

impl Throwaway {
    fn create(parent: &Path) -> Result<Self, String> {
        let dir = parent.join(format!("{THROWAWAY_PREFIX}{}", std::process::id()));
        // One left by a daemon of the same pid that died mid-test.
        let _ = fs::remove_dir(&dir);
        fs::create_dir(&dir).map_err(|e| format!("making the cgroup {}: {e}", dir.display()))?;
        let id = fs::metadata(&dir).map(|m| m.ino()).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self { dir, id })
    }

    /// Runs the child in the cgroup and waits for it: what it could not make, and why.
    fn run(&self, program: &Path) -> Result<Vec<Untested>, String> {
        let procs = CString::new(self.dir.join("cgroup.procs").into_os_string().into_encoded_bytes())
            .map_err(|_| "a cgroup path with a NUL byte".to_string())?;
        let mut command = Command::new(program);
        command.arg(CHILD_COMMAND).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        // SAFETY: between fork and exec the closure makes only raw syscalls on memory prepared
        // before the fork.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| format!("starting {} {CHILD_COMMAND}: {e}", program.display()))?;
        let deadline = Instant::now() + CHILD_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("the self-test's child did not finish within {CHILD_TIMEOUT:?}"));
                }
                Err(e) => return Err(format!("waiting for the self-test's child: {e}")),
            }
        };
        let mut said = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut said);
        }
        if !status.success() {
            return Err(format!("the self-test's child failed ({status}): {}", said.trim()));
        }
        Ok(said
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("untested ")?;
                let (kind, reason) = rest.split_once(' ')?;
                Some(Untested { kind: Kind::from_name(kind)?, reason: reason.to_string() })
            })
            .collect())
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        // The child has been reaped; the kernel may take a moment to empty the cgroup.
        for _ in 0..100 {
            match fs::remove_dir(&self.dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(Duration::from_millis(5)),
                _ => return,
            }
        }
    }
}

/// `capwatch selftest-child`: one of each kind, in this order, for the daemon to look for. It
/// changes nothing outside itself: its capability sets and securebits are set to what they are,
/// a low mapping is unmapped at once, and its last two acts (a seccomp filter, no_new_privs)
/// only bind it. Prints `untested KIND REASON` for a kind it could not make.
pub fn child() -> ExitCode {
    let untested = |kind: Kind, reason: &str| println!("untested {} {reason}", kind.name());
    // A plain capable(): setuid(0) as uid 0 asks for CAP_SETUID and changes nothing.
    unsafe { libc::setuid(0) };
    let Some(sets) = CapSets::get() else {
        println!("capget failed: {}", io::Error::last_os_error());
        return ExitCode::FAILURE;
    };
    // Every capset asks for CAP_SETPCAP, even one that keeps the sets as they are.
    sets.set();
    // PR_SET_SECUREBITS with the bits it has asks for CAP_SETPCAP too.
    let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS) };
    if bits >= 0 {
        unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong) };
    }
    low_mapping().unwrap_or_else(|why| untested(Kind::LowMmap, &why));
    // A private writable mapping is accounted: the advisory CAP_SYS_ADMIN.
    map_and_unmap(std::ptr::null_mut(), libc::PROT_READ | libc::PROT_WRITE, 0);
    ptrace_access(&sets).unwrap_or_else(|why| untested(Kind::Ptrace, &why));
    // Denied: CAP_SETUID set aside from the effective set, then setuid(0) again (it succeeds).
    sets.without_effective(CAP_SETUID).set();
    unsafe { libc::setuid(0) };
    // Failing: a process cannot attach to itself, and no capability is asked.
    unsafe { libc::ptrace(libc::PTRACE_ATTACH, libc::getpid(), 0, 0) };
    if refuse_by_seccomp(REFUSED_BY_SECCOMP) {
        unsafe { libc::syscall(REFUSED_BY_SECCOMP) };
    } else {
        untested(Kind::Seccomp, &format!("installing a seccomp filter failed: {}", io::Error::last_os_error()));
    }
    ExitCode::SUCCESS
}

/// A page at address 0, below any non-zero vm.mmap_min_addr, unmapped at once.
fn low_mapping() -> Result<(), String> {
    let min: u64 = fs::read_to_string("/proc/sys/vm/mmap_min_addr")
        .map_err(|e| format!("/proc/sys/vm/mmap_min_addr: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("/proc/sys/vm/mmap_min_addr: {e}"))?;
    if min == 0 {
        return Err("vm.mmap_min_addr is 0: the kernel makes no such check".into());
    }
    // Read-only: not accounted, so no advisory check mixes in. Refused without CAP_SYS_RAWIO.
    map_and_unmap(std::ptr::null_mut(), libc::PROT_READ, libc::MAP_FIXED_NOREPLACE);
    Ok(())
}

fn map_and_unmap(at: *mut libc::c_void, prot: libc::c_int, flags: libc::c_int) {
    let page = 4096;
    let p = unsafe { libc::mmap(at, page, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags, -1, 0) };
    if p != libc::MAP_FAILED {
        unsafe { libc::munmap(p, page) };
    }
}

/// A ptrace access check the capability LSM answers with CAP_SYS_PTRACE: opening a child's
/// /proc/PID/environ (PTRACE_MODE_READ_FSCREDS) with a capability it holds set aside from this
/// process's effective set, so that ours no longer covers the child's permitted set. Same uid,
/// dumpable, a read: nothing else asks for a capability on the way.
fn ptrace_access(sets: &CapSets) -> Result<(), String> {
    let permitted = sets.permitted();
    if permitted == 0 {
        return Err("this process holds no capability to set aside".into());
    }
    let aside = permitted.trailing_zeros();
    let mut pipe = [0; 2];
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", io::Error::last_os_error()));
    }
    let environ = |pid: libc::pid_t| CString::new(format!("/proc/{pid}/environ")).unwrap_or_default();
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // The child waits for the end of the pipe, then leaves.
        let mut byte = 0u8;
        unsafe {
            libc::close(pipe[1]);
            libc::read(pipe[0], (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    unsafe { libc::close(pipe[0]) };
    let result = if pid < 0 {
        Err(format!("fork: {}", io::Error::last_os_error()))
    } else {
        sets.without_effective(aside).set();
        let path = environ(pid);
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
        sets.set();
        Ok(())
    };
    unsafe { libc::close(pipe[1]) };
    if pid > 0 {
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    result
}

/// Installs a seccomp filter that refuses `syscall` with EPERM and allows everything else.
fn refuse_by_seccomp(syscall: libc::c_long) -> bool {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut program = [
        stmt(load, 4),
        jump(AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(load, 0),
        jump(syscall as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog as *const libc::sock_fprog) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blind_spot_says_what_is_hidden_and_what_it_costs() {
        assert_eq!(
            BlindSpot::of(Kind::LowMmap).message,
            "this kernel hides CAP_SYS_RAWIO checks in mmap from capwatch: the advice may lack it"
        );
        assert_eq!(
            BlindSpot::of(Kind::Capset).message,
            "this kernel hides CAP_SETPCAP checks in capset from capwatch: the advice may lack it"
        );
        assert_eq!(
            BlindSpot::of(Kind::VmAccounting).message,
            "this kernel hides the advisory CAP_SYS_ADMIN checks in mmap from capwatch: the advice never needs \
             them, but reports will not show them"
        );
        assert_eq!(
            BlindSpot::of(Kind::Seccomp).message,
            "this kernel hides seccomp refusals from capwatch: explanations may lack them"
        );
        let spot = BlindSpot::of(Kind::Ptrace);
        assert_eq!((spot.capability.as_deref(), spot.syscall.as_str()), (Some("CAP_SYS_PTRACE"), "openat"));
        assert_eq!(BlindSpot::of(Kind::Failure).capability, None);
    }

    #[test]
    fn warnings_name_an_unproven_sight_first() {
        let sight = Sight {
            unproven: Some("making the cgroup /sys/fs/cgroup/x: Read-only file system".into()),
            blind_spots: vec![BlindSpot::of(Kind::LowMmap)],
            ..Sight::default()
        };
        assert_eq!(
            sight.warnings(),
            [
                "capwatch could not test what it sees on this kernel (making the cgroup /sys/fs/cgroup/x: \
                 Read-only file system): the advice may lack checks it cannot see",
                "this kernel hides CAP_SYS_RAWIO checks in mmap from capwatch: the advice may lack it",
            ]
        );
        assert!(Sight::default().warnings().is_empty());
    }

    #[test]
    fn throwaway_cgroups_are_known_by_their_name() {
        assert!(is_throwaway("/docker/abc/capwatch-selftest-4242"));
        assert!(is_throwaway("/capwatch-selftest-1"));
        assert!(!is_throwaway("/capwatch-selftest-1/child-of-it-is-not-made"));
        assert!(!is_throwaway("/docker/capwatch-selftest"));
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
            let json = serde_json::to_string(&kind).expect("serializes");
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
    }
}
