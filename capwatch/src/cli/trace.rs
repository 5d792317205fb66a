//! `capwatch trace --cgroup PATH`: one cgroup, in the foreground, for people.

use std::{io::Write, path::PathBuf, time::Instant};

use crate::{
    attribution::Attribution, cgroup::Hierarchy, containers::catalog::Catalog, error::Error, format, monitor::Monitor,
    probe, selftest, signals,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cgroup to watch, with everything below it: a path in the cgroup2 hierarchy
    /// (/docker/<id>) or its directory.
    #[arg(long)]
    pub cgroup: PathBuf,
    /// Which capability probe to use: auto, fexit, tracepoint or kprobe.
    #[arg(long, default_value_t)]
    pub probe: probe::Choice,
}

pub async fn run(args: Args) -> Result<(), Error> {
    let hierarchy = Hierarchy::find()?;
    let scope = hierarchy.scope(&args.cgroup, true)?;
    let mut attribution = Attribution::new(hierarchy.clone(), Catalog::default(), Default::default());
    let mut monitor = Monitor::start(
        probe::Options {
            scope,
            backend: args.probe.backend(),
            maps: Default::default(),
            syscall_sets: false,
            reads: probe::Reads::Casts,
        },
        hierarchy.clone(),
    )?;
    let sight = selftest::run(&mut monitor, &hierarchy, &args.cgroup, &selftest::this_program());
    let shutdown = signals::shutdown();
    let blind: String = sight.warnings().iter().map(|w| format!("; {w}")).collect();
    eprintln!(
        "capwatch: tracing {} with the {} probe; Ctrl-C prints the totals{blind}",
        args.cgroup.display(),
        monitor.probe().backend()
    );
    let started = Instant::now();
    let print = |text: String| {
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            step = monitor.next() => print(format::trace::lines(&attribution.attribute(&monitor, step?.changes()), started.elapsed().as_secs_f64())),
            _ = &mut shutdown => break,
        }
    }
    let changes = monitor.drain()?;
    print(format::trace::lines(&attribution.attribute(&monitor, &changes), started.elapsed().as_secs_f64()));
    print(format::trace::totals(&attribution.totals(&monitor), monitor.aggregates().losses()));
    Ok(())
}
