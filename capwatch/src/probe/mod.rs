//! Loading and attaching capwatch's eBPF programs. The capability probe has several backends,
//! one file each; the failing-syscall hook is the same on all of them.

mod callers;
mod fexit;
mod floor;
mod kfuncs;
mod kprobe;
mod offsets;
mod requirements;
mod skipped;
mod slots;
mod sparse;
mod steps;
mod tracepoint;

use std::{fmt, path::Path, str::FromStr};

use aya::{
    maps::{Array, HashMap, MapData, RingBuf, StackTraceMap},
    programs::BtfTracePoint,
    Btf, Ebpf, EbpfLoader,
};
use capwatch_common::{CallSet, CallsKey, CapKey, ExecKey, FailKey, Totals, CALL_SITES};
use serde::{Deserialize, Serialize};

pub use self::{
    callers::{Caller, HookAttempt, Mechanism},
    floor::{attach_floor, Floor},
    kfuncs::Reads,
    slots::CapSlots,
    steps::{Step, Steps},
};
use crate::{cgroup::Scope, error::Error, symbols};

/// The eBPF object built from `capwatch-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capwatch"));

/// Where the capability probe attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// fexit (a BPF trampoline) on `cap_capable`: arguments, `opts` and verdict in one program.
    Fexit,
    /// `tp_btf/cap_capable`, the capability tracepoint (Linux 6.14+).
    Tracepoint,
    /// kprobe + kretprobe on `cap_capable`; sees `opts`, so advisory checks are known.
    Kprobe,
}

impl Backend {
    /// In the order `auto` tries them: the most truth first. fexit sees `opts` and needs no
    /// state between entry and return; the tracepoint is exact but has no `opts`; the kprobe pair
    /// sees `opts` but joins entry and return through a per-thread stash, which can lose checks
    /// (counted) when a return is missed.
    pub const PREFERENCE: [Backend; 3] = [Backend::Fexit, Backend::Tracepoint, Backend::Kprobe];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Fexit => "fexit",
            Backend::Tracepoint => "tracepoint",
            Backend::Kprobe => "kprobe",
        }
    }

    fn load(self, ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
        match self {
            Backend::Fexit => fexit::load(ebpf, btf),
            Backend::Tracepoint => tracepoint::load(ebpf, btf),
            Backend::Kprobe => kprobe::load(ebpf),
        }
    }

    fn attach(self, ebpf: &mut Ebpf) -> Result<(), String> {
        match self {
            Backend::Fexit => fexit::attach(ebpf),
            Backend::Tracepoint => tracepoint::attach(ebpf),
            Backend::Kprobe => kprobe::attach(ebpf),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `--probe`: one backend, or `auto` (None): the first of `Backend::PREFERENCE` that attaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Choice(pub Option<Backend>);

impl Choice {
    pub fn backend(self) -> Option<Backend> {
        self.0
    }
}

impl FromStr for Choice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Choice(None));
        }
        Backend::PREFERENCE
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(text))
            .map(|b| Choice(Some(b)))
            .ok_or_else(|| {
                let names: Vec<&str> = std::iter::once("auto").chain(Backend::PREFERENCE.map(Backend::name)).collect();
                format!("{text:?} is not one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.map_or("auto", Backend::name))
    }
}

impl Serialize for Choice {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Choice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// What start-up tried for the capability probe, and why a backend was refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub backend: Backend,
    /// None when it attached.
    pub refused: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub scope: Scope,
    /// None: the first backend of `Backend::PREFERENCE` that attaches.
    pub backend: Option<Backend>,
    pub maps: MapSizes,
    /// Whether the syscalls each watched cgroup makes are recorded (`CW_CALLS`).
    pub syscall_sets: bool,
    /// How the programs read the current task; `Reads::Casts` falls back to the helpers where
    /// the kernel's verifier refuses the casts.
    pub reads: Reads,
}

/// The sizes of the kernel side's maps and ring buffer. What does not fit is counted as lost,
/// never miscounted; hosts (and tests) that want smaller or larger ones set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    /// Capability-check aggregates (`CW_CAPS`): distinct keys across live cgroups.
    pub caps: u32,
    /// Failing-syscall aggregates (`CW_FAILURES`).
    pub failures: u32,
    /// Programs exec'd (`CW_EXECS`).
    pub execs: u32,
    /// Kernel stacks of first occurrences (`CW_STACKS`): their call sites' names only.
    pub stacks: u32,
    /// Threads between a denied check or a narrowing capset and their syscall's exit
    /// (`CW_DENIED`).
    pub denied: u32,
    /// kprobe backend: threads between `cap_capable`'s entry and return (`CW_KPROBE_STASH`).
    pub kprobe_stash: u32,
    /// The ring buffer of first occurrences, in bytes: a power of two, at least a page.
    pub ringbuf_bytes: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            caps: 16384,
            failures: 16384,
            execs: 8192,
            stacks: 1024,
            denied: 16384,
            kprobe_stash: 8192,
            ringbuf_bytes: 256 * 1024,
        }
    }
}

/// The programs, loaded and attached; dropping it detaches them.
pub struct Probe {
    ebpf: Ebpf,
    backend: Backend,
    attempts: Vec<Attempt>,
    /// Why the programs read the current task through the helpers though the kernel has the
    /// casts: its verifier refused them.
    casts_refused: Option<String>,
}

/// `load(reads)`, or, where the verifier refused the programs reading the task by casts, the
/// same through the helpers, with what was refused.
fn casts_or_helpers<T>(reads: Reads, load: impl Fn(Reads) -> Result<T, Error>) -> Result<(T, Option<String>), Error> {
    match load(reads) {
        Err(refused @ (Error::Program { .. } | Error::NoBackend { .. })) if reads == Reads::Casts => {
            Ok((load(Reads::Helpers)?, Some(refused.to_string())))
        }
        loaded => loaded.map(|loaded| (loaded, None)),
    }
}

/// The maps through which the kernel side reports.
pub struct KernelMaps {
    pub events: RingBuf<MapData>,
    pub caps: HashMap<MapData, CapKey, Totals>,
    pub failures: HashMap<MapData, FailKey, Totals>,
    pub execs: HashMap<MapData, ExecKey, Totals>,
    pub losses: Array<MapData, u64>,
    pub stacks: StackTraceMap<MapData>,
    pub started: HashMap<MapData, u64, u64>,
    pub calls: HashMap<MapData, CallsKey, CallSet>,
    pub slots: CapSlots,
}

impl Probe {
    /// Loads the programs for `options.scope` and attaches the failing-syscall hook and the
    /// first capability backend that the kernel accepts. Where the verifier refuses the programs
    /// that read the task by casts (a kernel the casts were not tried on), the same programs
    /// reading it through the helpers are loaded instead, and `casts_refused` says why.
    pub fn start(options: Options) -> Result<Self, Error> {
        let (mut probe, refused) =
            casts_or_helpers(options.reads, |reads| Self::start_reading(Options { reads, ..options }))?;
        probe.casts_refused = refused;
        Ok(probe)
    }

    fn start_reading(options: Options) -> Result<Self, Error> {
        let (mut ebpf, btf) = open(options.scope, options.maps, options.syscall_sets, options.reads)?;
        attach_common(&mut ebpf, &btf)?;
        let candidates: &[Backend] = match &options.backend {
            Some(forced) => std::slice::from_ref(forced),
            None => &Backend::PREFERENCE,
        };
        let mut attempts = Vec::new();
        for &backend in candidates {
            let outcome = backend.load(&mut ebpf, &btf).and_then(|()| backend.attach(&mut ebpf));
            attempts.push(Attempt { backend, refused: outcome.clone().err() });
            if outcome.is_ok() {
                return Ok(Self { ebpf, backend, attempts, casts_refused: None });
            }
        }
        Err(Error::NoBackend { attempts: describe(&attempts) })
    }

    /// Loads a backend's programs through the verifier without attaching them: proof that they
    /// would run on this kernel's verifier even where the attach point is missing.
    pub fn verify(backend: Backend) -> Result<(), Error> {
        let scope = Scope { root_id: crate::cgroup::ROOT_ID, level: 0, include_root: false };
        let verify = |reads| {
            let (mut ebpf, btf) = open(scope, MapSizes::default(), true, reads)?;
            backend.load(&mut ebpf, &btf).map_err(|reason| Error::Program { program: backend.name(), reason })
        };
        casts_or_helpers(Reads::Casts, verify).map(|_| ())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The runs of capwatch's programs the kernel skipped since they were loaded (skipped.rs):
    /// what happened there was not counted.
    pub fn skipped_runs(&self) -> u64 {
        skipped::total(&self.ebpf)
    }

    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// Why the programs read the current task through the helpers, where the kernel refused
    /// the casts.
    pub fn casts_refused(&self) -> Option<&str> {
        self.casts_refused.as_deref()
    }

    /// Hands the report maps to their reader; the programs stay attached as long as `self` lives.
    pub fn take_maps(&mut self) -> Result<KernelMaps, Error> {
        let mut take = |name: &'static str| self.ebpf.take_map(name).ok_or(Error::Missing(name));
        Ok(KernelMaps {
            events: RingBuf::try_from(take("CW_EVENTS")?)?,
            caps: HashMap::try_from(take("CW_CAPS")?)?,
            failures: HashMap::try_from(take("CW_FAILURES")?)?,
            execs: HashMap::try_from(take("CW_EXECS")?)?,
            losses: Array::try_from(take("CW_LOSSES")?)?,
            stacks: StackTraceMap::try_from(take("CW_STACKS")?)?,
            started: HashMap::try_from(take("CW_STARTED")?)?,
            calls: HashMap::try_from(take("CW_CALLS")?)?,
            slots: CapSlots::new(Array::try_from(take("CW_CAP_SLOTS")?)?, Array::try_from(take("CW_CAP_COUNTS")?)?),
        })
    }
}

/// "tracepoint: …; kprobe: …"
fn describe(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("{}: {}", a.backend, a.refused.as_deref().unwrap_or("attached")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The kernel's BTF as aya needs it to load and attach capwatch's programs (sparse.rs).
fn loader_btf() -> Result<Btf, Error> {
    sparse::btf(&offsets::kernel_btf()?)
}

/// Checks what every backend needs, then loads the object with the scope in its globals.
fn open(scope: Scope, maps: MapSizes, syscall_sets: bool, reads: Reads) -> Result<(Ebpf, Btf), Error> {
    open_object(OBJECT, true, scope, maps, syscall_sets, reads)
}

/// `open` for `object`, capwatch's or one built from its code (steps.rs); `all_globals`: whether
/// every global capwatch sets must be in it.
fn open_object(
    object: &[u8],
    all_globals: bool,
    scope: Scope,
    maps: MapSizes,
    syscall_sets: bool,
    reads: Reads,
) -> Result<(Ebpf, Btf), Error> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(Error::NoBtf);
    }
    // The kernel's BTF, mapped and read lazily: the offsets, and the few types aya's loader
    // looks up (a full parse would hold tens of MiB at start-up).
    let (offsets, btf, resolved) = {
        let kernel = offsets::kernel_btf()?;
        requirements::check(&kernel)?;
        (offsets::read(&kernel)?, sparse::btf(&kernel)?, kfuncs::resolve(object, &kernel, reads))
    };
    let include_root = u32::from(scope.include_root);
    let syscall_sets = u32::from(syscall_sets);
    let ebpf = sparse::without_full_parse(|| {
        EbpfLoader::new()
            .btf(Some(&btf))
            .map_max_entries("CW_CAPS", maps.caps)
            .map_max_entries("CW_FAILURES", maps.failures)
            .map_max_entries("CW_EXECS", maps.execs)
            .map_max_entries("CW_STACKS", maps.stacks)
            .map_max_entries("CW_DENIED", maps.denied)
            .map_max_entries("CW_KPROBE_STASH", maps.kprobe_stash)
            .map_max_entries("CW_EVENTS", maps.ringbuf_bytes)
            .override_global("CW_WATCH_ROOT_ID", &scope.root_id, all_globals)
            .override_global("CW_WATCH_ROOT_LEVEL", &scope.level, all_globals)
            .override_global("CW_WATCH_ROOT_INCLUDED", &include_root, all_globals)
            .override_global("CW_CALLS_ENABLED", &syscall_sets, all_globals)
            .override_global("CW_TASK_TGID_OFFSET", &offsets.task_tgid, all_globals)
            .override_global("CW_TASK_REAL_CRED_OFFSET", &offsets.task_real_cred, all_globals)
            .override_global("CW_CRED_USER_NS_OFFSET", &offsets.cred_user_ns, all_globals)
            .override_global("CW_TASK_CRED_OFFSET", &offsets.task_cred, all_globals)
            .override_global("CW_CRED_CAP_EFFECTIVE_OFFSET", &offsets.cred_cap_effective, all_globals)
            .override_global("CW_USER_NS_LEVEL_OFFSET", &offsets.user_ns_level, all_globals)
            .override_global("CW_TASK_SECCOMP_MODE_OFFSET", &offsets.task_seccomp_mode, all_globals)
            .override_global("CW_TASK_SECCOMP_FILTER_OFFSET", &offsets.task_seccomp_filter, all_globals)
            .override_global("CW_FILTER_ALLOW_NATIVE_OFFSET", &offsets.filter_allow_native, all_globals)
            .override_global("CW_SECCOMP_NATIVE_BITS", &offsets.seccomp_native_bits, all_globals)
            .override_global("CW_CRED_UID_OFFSET", &offsets.cred_uid, all_globals)
            .override_global("CW_CRED_SUID_OFFSET", &offsets.cred_suid, all_globals)
            .override_global("CW_CRED_GID_OFFSET", &offsets.cred_gid, all_globals)
            .override_global("CW_CRED_SGID_OFFSET", &offsets.cred_sgid, all_globals)
            .override_global("CW_CRED_CAP_INHERITABLE_OFFSET", &offsets.cred_cap_inheritable, all_globals)
            .override_global("CW_CRED_CAP_PERMITTED_OFFSET", &offsets.cred_cap_permitted, all_globals)
            .override_global("CW_CALL_SITES", &call_sites(), all_globals)
            .override_global("CW_BPRM_INTERP_OFFSET", &offsets.bprm_interp, all_globals)
            .override_global("CW_BPRM_FILE_OFFSET", &offsets.bprm_file, all_globals)
            .override_global("CW_FILE_INODE_OFFSET", &offsets.file_inode, all_globals)
            .override_global("CW_INODE_NLINK_OFFSET", &offsets.inode_nlink, all_globals)
            .override_global("CW_FILE_DENTRY_OFFSET", &offsets.file_dentry, all_globals)
            .override_global("CW_DENTRY_NAME_OFFSET", &offsets.dentry_name, all_globals)
            .override_global("CW_TASK_MM_OFFSET", &offsets.task_mm, all_globals)
            .override_global("CW_MM_EXE_FILE_OFFSET", &offsets.mm_exe_file, all_globals)
            .override_global("CW_TASK_CGROUPS_OFFSET", &offsets.task_cgroups, all_globals)
            .override_global("CW_CSS_SET_DFL_CGRP_OFFSET", &offsets.css_set_dfl_cgrp, all_globals)
            .override_global("CW_CGROUP_KN_OFFSET", &offsets.cgroup_kn, all_globals)
            .override_global("CW_KERNFS_NODE_ID_OFFSET", &offsets.kernfs_node_id, all_globals)
            .override_global("CW_CGROUP_LEVEL_OFFSET", &offsets.cgroup_level, all_globals)
            .override_global("CW_CGROUP_ANCESTORS_OFFSET", &offsets.cgroup_ancestors, all_globals)
            .override_global("CW_TASK_STACK_OFFSET", &offsets.task_stack, all_globals)
            .override_global("CW_PT_REGS_BTF_ID", &resolved.pt_regs_btf_id, all_globals)
            .override_global("CW_TASK_STRUCT_BTF_ID", &resolved.task_struct_btf_id, all_globals)
            .override_global("CW_TASK_SE_CFS_RQ_OFFSET", &offsets.task_se_cfs_rq, all_globals)
            .override_global("CW_CFS_RQ_RQ_OFFSET", &offsets.cfs_rq_rq, all_globals)
            .override_global("CW_CURRENT_TASK_FROM_RUNQUEUES", &offsets.current_task_from_runqueues, all_globals)
            .load(resolved.object())
    })
    .map_err(|e| match permission_denied(&e) {
        true => Error::NotRoot,
        false => Error::Program { program: "object", reason: chain(&e) },
    })?;
    Ok((ebpf, btf))
}

/// The address ranges of the kernel's known call sites (`symbols::CALL_SITE_FUNCTIONS`), with
/// each one's bit, for the programs to recognise them in a first occurrence's stack; zeros where
/// kallsyms hides addresses (then the call site's name recorded with each check, or `opts`,
/// decides).
fn call_sites() -> [u64; 3 * CALL_SITES] {
    let mut sites = [0; 3 * CALL_SITES];
    let names: Vec<&str> = symbols::CALL_SITE_FUNCTIONS.iter().map(|(name, _)| *name).collect();
    for (slot, (name, start, end)) in symbols::ranges(&names).into_iter().take(CALL_SITES).enumerate() {
        let site = symbols::CALL_SITE_FUNCTIONS.iter().find(|(n, _)| *n == name).map(|(_, site)| *site);
        if let Some(site) = site {
            sites[3 * slot..3 * slot + 3].copy_from_slice(&[start, end, u64::from(site.bit())]);
        }
    }
    sites
}

/// The programs every backend shares: failing syscalls, and the process lifecycle that tells
/// a container's own processes from its runtime's and from exec sessions.
const COMMON_PROGRAMS: [(&str, &str); 5] = [
    ("sys_exit", "sys_exit"),
    ("process_fork", "sched_process_fork"),
    ("process_exec", "sched_process_exec"),
    ("cgroup_attach", "cgroup_attach_task"),
    ("process_exit", "sched_process_exit"),
];

fn attach_common(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), Error> {
    for (name, tracepoint) in COMMON_PROGRAMS {
        let fail = |e: &(dyn std::error::Error + 'static)| match permission_denied(e) {
            true => Error::NotRoot,
            false => Error::Program { program: name, reason: chain(e) },
        };
        let program: &mut BtfTracePoint = program(ebpf, name)?;
        program.load(tracepoint, btf).map_err(|e| fail(&e))?;
        program.attach().map_err(|e| fail(&e))?;
    }
    Ok(())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(name).and_then(|p| p.try_into().ok()).ok_or(Error::Missing(name))
}

/// An error and its causes on one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

fn permission_denied<'a>(err: &'a (dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(libc::EPERM) && !running_as_root() {
                return true;
            }
        }
        source = e.source();
    }
    false
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
