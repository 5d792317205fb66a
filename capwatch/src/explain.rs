//! `capwatch explain`'s answer: each of a container's failing syscalls with its cause, as the
//! daemon judged it when it saw the failure (the same sentence its JSON line carried).

use std::collections::BTreeSet;

use serde::Serialize;

use crate::{
    cause::{self, Cause},
    containers::Container,
    evidence::FailureEvidence,
    names,
};

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub syscall: String,
    pub errno: String,
    pub uid: u32,
    pub origin: &'static str,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub program: String,
    pub cause: Cause,
    /// The cause in a sentence.
    pub text: String,
}

/// Explains each of a container's failing syscalls. A failure no daemon judged (a store from an
/// older capwatch) is judged now, with `kernel_checks`: (capability, syscall) pairs the kernel
/// was seen checking anywhere.
pub fn explain(
    container: &Container,
    failures: &[FailureEvidence],
    kernel_checks: &BTreeSet<(u32, u32)>,
) -> Vec<Explanation> {
    failures
        .iter()
        .map(|f| {
            let explained =
                f.explained.clone().unwrap_or_else(|| cause::explain(&f.key, Some(container), kernel_checks));
            Explanation {
                syscall: names::syscall(f.key.syscall).into_owned(),
                errno: names::errno(f.key.errno).into_owned(),
                uid: f.key.uid,
                origin: f.key.origin.name(),
                count: f.count,
                first_seen: crate::clock::rfc3339(f.first_seen),
                last_seen: crate::clock::rfc3339(f.last_seen),
                program: names::comm(&f.sample.comm),
                cause: explained.cause,
                text: explained.text,
            }
        })
        .collect()
}
