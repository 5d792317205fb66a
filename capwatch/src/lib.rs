//! capwatch: watches the kernel's capability checks and the syscalls that fail with EPERM or
//! EACCES, per cgroup, and tells which capabilities each container needs.
//!
//! Data flows one way, each stage in the modules named for it:
//!
//! ```text
//! kernel      probe/        the eBPF programs (capwatch-ebpf), loaded and attached
//!   → intake                the ring buffer of first occurrences and the in-kernel aggregates
//!   → aggregate             userspace totals: what is new, what grew, what was lost
//!     (monitor              drives the three above for the daemon and `trace`;
//!      selftest             proves at start what the attached probe sees, and says what not)
//!   → attribution           cgroup path, container, call site, cause and sentence, once
//!                           (cgroup, containers/, symbols, cause, seccomp_profile, filecaps)
//!   → store/ · journal · service/ (metrics, summaries)   the observations' readers
//!   → query → advice · explain   from the store's evidence (evidence)
//!   → format/                    tables, docker, compose, k8s, JSON
//! ```
//!
//! `daemon` runs the whole flow; `cli/` is one thin file per subcommand.

pub mod advice;
pub mod aggregate;
pub mod attribution;
pub mod capsets;
pub mod cause;
pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod containers;
pub mod daemon;
pub mod error;
pub mod evidence;
pub mod explain;
pub mod filecaps;
pub mod format;
pub mod intake;
pub mod journal;
pub mod monitor;
pub mod names;
pub mod paths;
pub mod probe;
pub mod query;
pub mod run;
pub mod seccomp_profile;
pub mod selftest;
pub mod service;
pub mod signals;
pub mod store;
pub mod symbols;
pub mod verification;
pub mod verify;

pub use error::Error;
