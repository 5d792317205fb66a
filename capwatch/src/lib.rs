//! capwatch: watches the kernel's capability checks and the syscalls that fail with EPERM or
//! EACCES, per cgroup. Data flows one way: kernel (`probe`) → `intake` → `aggregate` →
//! output (`journal`, `cli`).

pub mod advice;
pub mod aggregate;
pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod containers;
pub mod error;
pub mod explain;
pub mod format;
pub mod intake;
pub mod journal;
pub mod monitor;
pub mod names;
pub mod paths;
pub mod probe;
pub mod service;
pub mod store;
pub mod symbols;

pub use error::Error;
