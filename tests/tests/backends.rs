//! Every capability backend (fexit, tracepoint, kprobe) against the real kernel: the same
//! scenarios, the same exact counts, the same syscall attribution; where `opts` is known, the
//! kernel's advisory checks are marked from it. These need root and BPF; in CI they must run.
//!
//! Which backends: `CAPWATCH_TEST_BACKEND` (comma-separated) names those that must attach;
//! `CAPWATCH_TEST_REFUSED` those that must be refused with a clear message. Without either, the
//! running kernel decides: what attaches is tested, what does not must say why. `cargo xtask
//! vm-test` sets both for each kernel it boots.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{mpsc, OnceLock},
    time::{Duration, Instant},
};

use capwatch::{
    probe::{self, Backend, Probe},
};
use capwatch_common::{CapKey, FailKey, Totals, CAP_FLAG_NOAUDIT, CAP_FLAG_OPTS_KNOWN, VERDICT_DENIED, VERDICT_GRANTED};
use capwatch_tests::{bin, in_ci, kernel_available, refused, Launch, ProtectedFile, TestCgroup};
use caps::Capability::{self, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_NET_RAW, CAP_SETUID, CAP_SYS_ADMIN};
use serde_json::Value;

const SYS_SOCKET: u32 = libc::SYS_socket as u32;
const SYS_SETUID: u32 = libc::SYS_setuid as u32;
const SYS_OPENAT: u32 = libc::SYS_openat as u32;
const SYS_MMAP: u32 = libc::SYS_mmap as u32;

/// Which backends this run tests.
#[derive(Debug)]
struct Plan {
    /// Must attach; every scenario runs on each.
    attach: Vec<Backend>,
    /// Must be refused, with a reason.
    refused: Vec<Backend>,
}

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| {
        let listed = |var: &str| std::env::var(var).ok().map(|v| parse_backends(var, &v));
        match (listed("CAPWATCH_TEST_BACKEND"), listed("CAPWATCH_TEST_REFUSED")) {
            (None, None) => offered_here(),
            (attach, refused) => Plan { attach: attach.unwrap_or_default(), refused: refused.unwrap_or_default() },
        }
    })
}

fn parse_backends(var: &str, value: &str) -> Vec<Backend> {
    value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            Backend::PREFERENCE
                .into_iter()
                .find(|b| b.name() == name)
                .unwrap_or_else(|| panic!("{var}: no backend named {name:?} (fexit, tracepoint, kprobe)"))
        })
        .collect()
}

/// What the running kernel lets attach. At least one must, or capwatch cannot run here.
fn offered_here() -> Plan {
    let cgroup = TestCgroup::new("offered");
    let (mut attach, mut refused) = (Vec::new(), Vec::new());
    for backend in Backend::PREFERENCE {
        match Probe::start(probe::Options { scope: cgroup.scope(), backend: Some(backend) }) {
            Ok(_) => attach.push(backend),
            Err(_) => refused.push(backend),
        }
    }
    assert!(!attach.is_empty(), "no capability backend attaches on this kernel");
    eprintln!("backends on this kernel: attach {attach:?}, refused {refused:?}");
    Plan { attach, refused }
}

/// Whether the backend sees `cap_capable`'s `opts`.
fn knows_opts(backend: Backend) -> bool {
    matches!(backend, Backend::Fexit | Backend::Kprobe)
}

/// The `CapKey::flags` an ordinary (audited, not in setid) check has on `backend`.
fn plain_flags(backend: Backend) -> u32 {
    if knows_opts(backend) { CAP_FLAG_OPTS_KNOWN } else { 0 }
}

/// The checks of `cap` in `cgroup` with `verdict` in `syscall`, by flags.
fn checks(caps: &BTreeMap<CapKey, Totals>, cgroup: &TestCgroup, cap: Capability, verdict_: u16_or_u32!(), syscall: u32) -> BTreeMap<u32, u64> {
    unreachable!()
}
