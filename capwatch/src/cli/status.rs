//! `capwatch status`: which capability probe the daemon attached and why the others were
//! refused, and what its self-test proved it can and cannot see, from the `status.json` it wrote
//! in its state directory.

use crate::{cli::StateDir, daemon::Status, error::Error, selftest::Sight};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub state_dir: StateDir,
}

pub fn run(args: Args) -> Result<(), Error> {
    let status = Status::read(&args.state_dir.path)?;
    let state = if status.running() { "running" } else { "not running; this is what it attached last" };
    println!("daemon: pid {} ({state}), started {}, watching {}", status.pid, status.started, status.cgroup_root);
    println!("capability probe: {}", status.backend);
    for attempt in &status.attempts {
        if let Some(reason) = &attempt.refused {
            println!("refused: {}: {reason}", attempt.backend);
        }
    }
    if let Some(reason) = &status.casts_refused {
        println!("current task: read through the helpers, the kernel refused the casts: {reason}");
    }
    if let Some(sight) = &status.sight {
        print!("{}", describe(sight));
    }
    Ok(())
}

/// The self-test's findings, a line each.
fn describe(sight: &Sight) -> String {
    let mut text = match &sight.unproven {
        Some(why) => format!("self-test: could not run ({why})\n"),
        None if sight.blind_spots.is_empty() => {
            format!("self-test: {} ms, every kind of check it relies on was seen\n", sight.millis)
        }
        None => format!("self-test: {} ms, {} kind(s) of check not seen\n", sight.millis, sight.blind_spots.len()),
    };
    for hook in &sight.hooks {
        let line = match &hook.refused {
            None => format!("watching {}: the probe on cap_capable misses its check\n", hook.describe()),
            Some(reason) => format!("refused: {}: {reason}\n", hook.describe()),
        };
        text.push_str(&line);
    }
    for untested in &sight.untested {
        text.push_str(&format!("untested: {}\n", untested.reason));
    }
    for warning in sight.warnings().iter().skip(usize::from(sight.unproven.is_some())) {
        text.push_str(&format!("blind spot: {warning}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        probe::{Caller, HookAttempt, Mechanism},
        selftest::{BlindSpot, Kind},
    };

    #[test]
    fn the_self_test_is_a_line_per_finding() {
        let sight = Sight {
            blind_spots: vec![BlindSpot::of(Kind::LowMmap)],
            hooks: vec![
                HookAttempt { caller: Caller::Capset, mechanism: Mechanism::Fexit, refused: None },
                HookAttempt {
                    caller: Caller::MmapAddr,
                    mechanism: Mechanism::Fexit,
                    refused: Some("this kernel refuses BPF trampolines".into()),
                },
            ],
            millis: 42,
            ..Sight::default()
        };
        assert_eq!(
            describe(&sight),
            "self-test: 42 ms, 1 kind(s) of check not seen\n\
             watching cap_capset (fexit): the probe on cap_capable misses its check\n\
             refused: cap_mmap_addr (fexit): this kernel refuses BPF trampolines\n\
             blind spot: this kernel hides CAP_SYS_RAWIO checks in mmap from capwatch: the advice may lack it\n"
        );
    }
}
