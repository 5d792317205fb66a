//! The questions the CLI asks of the daemon's store: which containers it saw, a container by the
//! name or id a user typed (as the docker CLI resolves them), its report and its explanations. The
//! store is opened read-only, so each answers with or without a daemon running.

use std::{collections::HashMap, path::Path};

use crate::{
    advice::{
        self,
        whatif::{self, WhatIf},
        Report, Verified,
    },
    containers::{self, Container},
    daemon::Status,
    error::Error,
    evidence::Evidence,
    explain::{self, Explanation},
    selftest::Sight,
    store::Store,
};

/// A container in `capwatch ps`.
pub struct Listed {
    pub container: Container,
    pub checks: u64,
    pub failures: u64,
}

/// Every container seen (running ones only unless `all`), with how many checks and failures.
pub fn containers(state_dir: &Path, all: bool) -> Result<Vec<Listed>, Error> {
    let store = Store::open_read_only(state_dir)?;
    let counts: HashMap<String, (u64, u64)> = store.counts()?;
    Ok(store
        .containers()?
        .into_iter()
        .filter(|c| all || c.running())
        .map(|container| {
            let (checks, failures) = counts.get(&container.id).copied().unwrap_or_default();
            Listed { container, checks, failures }
        })
        .collect())
}

/// What the container `query` names used, each capability's verdict, and its least privilege,
/// uncertain wherever the daemon's self-test found its kernel hides a kind of check.
pub fn report(state_dir: &Path, query: &str) -> Result<Report, Error> {
    let (store, container) = open(state_dir, query)?;
    let mut report = advice::report(container.clone(), &evidence(&store, &container)?);
    report.uncertain.extend(sight(state_dir).iter().flat_map(Sight::warnings));
    report.verified = store.latest_verification(&container.id)?.map(|v| Verified {
        verdict: v.summary,
        capabilities: v.capabilities,
        at: v.at,
    });
    Ok(report)
}

/// The least privilege of every container of `image` capwatch saw, merged (advice/image.rs).
pub fn image_report(state_dir: &Path, image: &str) -> Result<Report, Error> {
    let store = Store::open_read_only(state_dir)?;
    let same = |seen: &str| {
        let tagged = |name: &str| {
            if name.rsplit('/').next().is_some_and(|n| n.contains(':')) {
                name.to_string()
            } else {
                format!("{name}:latest")
            }
        };
        seen == image || tagged(seen) == tagged(image)
    };
    let mut parts = Vec::new();
    for container in store.containers()?.into_iter().filter(|c| c.image.as_deref().is_some_and(same)) {
        let evidence = evidence(&store, &container)?;
        parts.push((advice::report(container, &evidence), evidence));
    }
    if parts.is_empty() {
        return Err(Error::Usage(format!(
            "no container of image {image} was seen: `capwatch ps --all` lists the containers seen, with their images"
        )));
    }
    let mut report = advice::image::merge(image, &parts);
    report.uncertain.extend(sight(state_dir).iter().flat_map(Sight::warnings));
    Ok(report)
}

/// Which of the container's observed operations and execs would have failed under the set
/// `--cap-add add --cap-drop drop` gives (advice/whatif.rs).
pub fn whatif(state_dir: &Path, query: &str, add: &[String], drop: &[String]) -> Result<WhatIf, Error> {
    let (store, container) = open(state_dir, query)?;
    let set = whatif::set_of(&container, add, drop).map_err(Error::Usage)?;
    let evidence = evidence(&store, &container)?;
    Ok(whatif::whatif(&advice::report(container, &evidence), &evidence, set))
}

/// What the daemon of `state_dir` proved it can and cannot see (its `status.json`); None where no
/// daemon said.
pub fn sight(state_dir: &Path) -> Option<Sight> {
    Status::read(state_dir).ok()?.sight
}

/// Everything the store holds of a container, with what was lost while it was observed.
fn evidence(store: &Store, container: &Container) -> Result<Evidence, Error> {
    let checks = store.cap_checks(&container.id)?;
    let failures = store.failures(&container.id)?;
    let execs = store.execs(&container.id)?;
    let mut evidence = Evidence {
        checks,
        failures,
        execs,
        calls: store.calls(&container.id)?,
        losses: Vec::new(),
        kernel_checks: store.kernel_checks()?,
        host_bounding: store.host_bounding()?,
    };
    if let Some((from, to)) = evidence.observed() {
        // A loss is reported by the drain after it: the container may be affected up to then.
        evidence.losses = store.losses_between(from, to + crate::monitor::DRAIN_INTERVAL * 2)?;
    }
    Ok(evidence)
}

/// Why each of the container's syscalls failed.
pub fn explanations(state_dir: &Path, query: &str) -> Result<(Container, Vec<Explanation>), Error> {
    let (store, container) = open(state_dir, query)?;
    let explanations = explain::explain(
        &container,
        &store.failures(&container.id)?,
        &store.execs(&container.id)?,
        &store.kernel_checks()?,
    );
    Ok((container, explanations))
}

fn open(state_dir: &Path, query: &str) -> Result<(Store, Container), Error> {
    let store = Store::open_read_only(state_dir)?;
    let container = containers::resolve(query, &store.containers()?)?.clone();
    Ok((store, container))
}
