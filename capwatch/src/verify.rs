//! `capwatch verify`: the advice proven with the container's own runtime. The container is
//! recreated (`containers::recreate`) holding exactly the advised set while the running daemon
//! watches it, then once without each advised capability in turn; each copy's evidence is read
//! back from the daemon's store. The set is proven minimal when the copy holding it works as the
//! original did and every copy without one of its capabilities does not (or shows the refused
//! operation). Every copy is removed afterwards, on an error and on Ctrl-C too: all carry
//! the run's label, and the run removes whatever carries it.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant, SystemTime},
};

use capwatch_common::Origin;

use crate::{
    advice::{self, whatif, Report, Verdict},
    cause::Cause,
    clock,
    containers::recreate::{Engine, Original},
    daemon::Status,
    error::Error,
    names, query, signals,
    store::Store,
    verification::{Outcome, Trial, Verification},
};

/// How long a copy's exit may take to reach the store: the daemon writes at each drain.
const STORE_PATIENCE: Duration = Duration::from_secs(30);

pub struct Options {
    pub container: String,
    /// A command run inside a service's copy (`sh -c`): it works once this exits 0.
    pub check: Option<String>,
    pub timeout: Duration,
    /// The set to prove instead of the advice's, as `--cap-add` names them.
    pub cap_add: Option<Vec<String>>,
    /// Start from the granted set and drop one capability at a time, instead of from the advice.
    pub minimize: bool,
    pub docker_socket: String,
    pub state_dir: PathBuf,
}

/// Verifies the advice (or, with `minimize`, finds a set from the granted one) of the container
/// `options.container` names. Needs the daemon of `options.state_dir` running, to watch the copies.
pub async fn verify(options: &Options) -> Result<Verification, Error> {
    match Status::read(&options.state_dir) {
        Ok(status) if status.running() => {}
        _ => return Err(Error::NoDaemon { state_dir: options.state_dir.clone() }),
    }
    let report = query::report(&options.state_dir, &options.container)?;
    let engine = Engine::connect(&options.docker_socket).await?;
    let original = engine.original(&report.container.id, &report.container.name).await?;
    let (_, explanations) = query::explanations(&options.state_dir, &report.container.id)?;
    let failed_before = explanations.into_iter().map(|e| (e.syscall, e.errno)).collect();
    let run = Run {
        options,
        report: &report,
        engine: &engine,
        original: &original,
        run: format!("{}-{}", std::process::id(), clock::rfc3339(SystemTime::now())),
        serial: AtomicUsize::new(0),
        failed_before,
    };
    let interrupted = signals::shutdown();
    let result = tokio::select! {
        result = run.all() => result,
        _ = interrupted => Err(Error::Interrupted),
    };
    engine.remove_run(&run.run).await;
    let verification = result?;
    Store::record_verification(&options.state_dir, &verification)?;
    Ok(verification)
}

/// A mask's capabilities as `cap_add` names them.
fn names_of(mask: u64) -> Vec<String> {
    names::mask_bits(mask).map(|c| names::capability(c).trim_start_matches("CAP_").to_string()).collect()
}

struct Run<'a> {
    options: &'a Options,
    report: &'a Report,
    engine: &'a Engine,
    original: &'a Original,
    /// This run's label on its copies (`RUN_LABEL`), by which they are all removed at its end.
    run: String,
    /// Numbers the copies' names.
    serial: AtomicUsize,
    /// The (syscall, errno) of each of the original's failing syscalls.
    failed_before: BTreeSet<(String, String)>,
}

impl Run<'_> {
    async fn all(&self) -> Result<Verification, Error> {
        let set = match (&self.options.cap_add, self.options.minimize) {
            (_, true) => self.minimize().await?,
            (Some(add), false) => {
                let mask = whatif::set_of(&self.report.container, add, &[]).map_err(Error::Usage)?;
                names_of(mask)
            }
            (None, false) => self.report.cap_add.clone(),
        };
        let whole = self.trial(&set, None).await?;
        let mut trials = vec![whole];
        if trials[0].worked {
            for cap in &set {
                let without: Vec<String> = set.iter().filter(|c| *c != cap).cloned().collect();
                trials.push(self.trial(&without, Some(cap)).await?);
            }
        }
        let can_go: Vec<String> =
            trials.iter().skip(1).filter(|t| t.worked).filter_map(|t| t.without.clone()).collect();
        let (verdict, summary) = if !trials[0].worked {
            (Outcome::NotSufficient, format!("not sufficient (this failed: {})", trials[0].evidence))
        } else if can_go.is_empty() {
            (Outcome::ProvenMinimal, "proven minimal".to_string())
        } else {
            (Outcome::SufficientNotMinimal, format!("sufficient, not minimal ({} can go)", can_go.join(", ")))
        };
        Ok(Verification {
            container_id: self.original.id.clone(),
            container_name: self.original.name.clone(),
            at: clock::rfc3339(SystemTime::now()),
            capabilities: set,
            verdict,
            summary,
            can_go,
            trials,
        })
    }

    /// Greedy elimination from the granted set: each capability in turn is left out for good
    /// when the copy works without it.
    async fn minimize(&self) -> Result<Vec<String>, Error> {
        let granted = advice::granted_mask(&self.report.container).unwrap_or(advice::DOCKER_DEFAULT_CAPS);
        let mut set = names_of(granted);
        for cap in set.clone() {
            let without: Vec<String> = set.iter().filter(|c| **c != cap).cloned().collect();
            if self.trial(&without, Some(&cap)).await?.worked {
                set = without;
            }
        }
        Ok(set)
    }

    /// Runs one copy holding `caps`, and judges it from how it ran and what the store recorded.
    async fn trial(&self, caps: &[String], without: Option<&String>) -> Result<Trial, Error> {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "capwatch-verify-{}-{}-{}-{serial}",
            self.original.name,
            std::process::id(),
            without.map_or("all".to_string(), |c| c.to_ascii_lowercase())
        );
        let id = self.engine.start_copy(self.original, &self.run, &name, caps).await?;
        let ran = match self.original.running {
            true => self.serve(&id).await?,
            false => self.complete(&id).await?,
        };
        self.engine.kill(&id).await;
        let copy = self.stored(&id, &name).await?;
        self.engine.remove(&id).await;

        // An operation refused for want of a capability the original was not refused.
        let refused_before =
            |number: u32| self.report.capabilities.iter().any(|c| c.number == number && c.verdict == Verdict::Missing);
        let refused: Vec<String> = copy
            .capabilities
            .iter()
            .filter(|c| c.verdict == Verdict::Missing && !refused_before(c.number))
            .map(|c| format!("{} refused: {}", c.capability.trim_start_matches("CAP_"), c.reason))
            .collect();
        // A syscall of the application failing where the original's never did, for another
        // reason than a capability denied in it (those are refused operations, above).
        let (_, explanations) = query::explanations(&self.options.state_dir, &id)?;
        let failing: Vec<String> = explanations
            .iter()
            .filter(|e| e.origin == Origin::App.name() && !matches!(e.cause, Cause::Capability { .. }))
            .filter(|e| !self.failed_before.contains(&(e.syscall.clone(), e.errno.clone())))
            .map(|e| format!("{} failed with {} in {}: {}", e.syscall, e.errno, e.program, e.text))
            .collect();
        let worked = ran.is_ok() && refused.is_empty() && failing.is_empty();
        let evidence =
            std::iter::once(ran.unwrap_or_else(|e| e)).chain(refused).chain(failing).collect::<Vec<_>>().join("; ");
        Ok(Trial { without: without.cloned(), capabilities: caps.to_vec(), worked, evidence })
    }

    /// A copy of a container that ran to completion works when it exits as the original did.
    async fn complete(&self, id: &str) -> Result<Result<String, String>, Error> {
        let expected = self.original.exit_code.unwrap_or(0);
        Ok(match self.engine.wait(id, self.options.timeout).await? {
            None => Err(format!("still running after {}s", self.options.timeout.as_secs())),
            Some(code) if code == expected => Ok(format!("exited {code}, as the original did")),
            Some(code) => Err(format!("exited {code}, the original {expected}")),
        })
    }

    /// A copy of a service works when its --check passes within the timeout (without one: when
    /// it still runs at the timeout).
    async fn serve(&self, id: &str) -> Result<Result<String, String>, Error> {
        let started = Instant::now();
        let timeout = self.options.timeout;
        let Some(check) = &self.options.check else {
            return Ok(match self.engine.wait(id, timeout).await? {
                None => Ok(format!("still running after {}s", timeout.as_secs())),
                Some(code) => Err(format!("exited {code} while the original runs")),
            });
        };
        let mut last = String::new();
        while started.elapsed() < timeout {
            if !self.engine.running(id).await {
                let code = self.engine.wait(id, Duration::from_secs(1)).await?.unwrap_or(-1);
                return Ok(Err(format!("exited {code} before --check passed")));
            }
            let (code, output) = match self.engine.exec(id, check).await {
                Ok(result) => result,
                // Exited meanwhile: said above, on the next turn.
                Err(_) if !self.engine.running(id).await => continue,
                Err(e) => return Err(e),
            };
            if code == 0 {
                return Ok(Ok(format!("--check passed after {}s", started.elapsed().as_secs())));
            }
            last = match output.lines().next() {
                Some(line) => format!("--check exited {code}: {}", line.chars().take(200).collect::<String>()),
                None => format!("--check exited {code}"),
            };
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(Err(format!("--check did not pass within {}s ({last})", timeout.as_secs())))
    }

    /// The copy's report, once the store has recorded its exit (and with it all it did).
    async fn stored(&self, id: &str, name: &str) -> Result<Report, Error> {
        let deadline = Instant::now() + STORE_PATIENCE;
        loop {
            if let Ok(report) = query::report(&self.options.state_dir, id) {
                if report.container.exited_at.is_some() {
                    return Ok(report);
                }
            }
            if Instant::now() > deadline {
                return Err(Error::NotRecorded { name: name.to_string(), state_dir: self.options.state_dir.clone() });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
