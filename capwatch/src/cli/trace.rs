//! `capwatch trace --cgroup PATH`: one cgroup, in the foreground, for people.

use std::{io::Write, path::PathBuf, time::Instant};

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};

use crate::{
    aggregate::{loss_name, Change},
    cgroup::Hierarchy,
    cli::{shutdown_signal, ProbeChoice},
    error::Error,
    journal::{noaudit, verdict},
    monitor::Monitor,
    names, probe,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cgroup to watch, with everything below it: a path in the cgroup2 hierarchy
    /// (/docker/<id>) or its directory.
    #[arg(long)]
    pub cgroup: PathBuf,
    /// Which capability probe to use.
    #[arg(long, value_enum, default_value_t = ProbeChoice::Auto)]
    pub probe: ProbeChoice,
}

pub async fn run(args: Args) -> Result<(), Error> {
    let hierarchy = Hierarchy::find()?;
    let scope = hierarchy.scope(&args.cgroup, true)?;
    let mut monitor = Monitor::start(probe::Options { scope, backend: args.probe.backend() }, hierarchy)?;
    let shutdown = shutdown_signal();
    eprintln!(
        "capwatch: tracing {} with the {} probe; Ctrl-C prints the totals",
        args.cgroup.display(),
        monitor.probe().backend()
    );
    let started = Instant::now();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            step = monitor.next() => print_changes(&mut monitor, step?.changes(), started),
            _ = &mut shutdown => break,
        }
    }
    let changes = monitor.drain()?;
    print_changes(&mut monitor, &changes, started);
    print_totals(&mut monitor);
    Ok(())
}

fn print_changes(monitor: &mut Monitor, changes: &[Change], started: Instant) {
    let mut out = std::io::stdout().lock();
    let at = started.elapsed().as_secs_f64();
    for change in changes {
        let line = match *change {
            Change::NewCap(key, t) => format!(
                "{at:8.3}s  {}  {} {} in {}  by {} (pid {}, uid {}, {})",
                monitor.cgroup_name(key.cgroup_id),
                names::capability(key.cap),
                verdict(key.verdict),
                names::syscall(key.syscall),
                names::comm(&t.sample.comm),
                t.sample.pid,
                t.sample.uid,
                names::origin(key.origin),
            ),
            Change::NewFailure(key, t) => format!(
                "{at:8.3}s  {}  {} failed with {}  by {} (pid {}, uid {}, {})",
                monitor.cgroup_name(key.cgroup_id),
                names::syscall(key.syscall),
                names::errno(key.errno),
                names::comm(&t.sample.comm),
                t.sample.pid,
                t.sample.uid,
                names::origin(key.origin),
            ),
            Change::Lost { kind, total, added } => {
                format!("{at:8.3}s  lost: {added} more {} ({total} in all)", loss_name(kind))
            }
        };
        let _ = writeln!(out, "{line}");
    }
}

fn print_totals(monitor: &mut Monitor) {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header(["cgroup", "observed", "in syscall", "by", "noaudit", "count"]);
    let caps: Vec<_> = monitor.aggregates().caps().iter().map(|(k, t)| (*k, *t)).collect();
    for (key, t) in caps {
        table.add_row([
            monitor.cgroup_name(key.cgroup_id),
            format!("{} {}", names::capability(key.cap), verdict(key.verdict)),
            names::syscall(key.syscall).into_owned(),
            names::origin(key.origin).to_string(),
            noaudit(key.flags).to_string(),
            t.count.to_string(),
        ]);
    }
    let failures: Vec<_> = monitor.aggregates().failures().iter().map(|(k, t)| (*k, *t)).collect();
    for (key, t) in failures {
        table.add_row([
            monitor.cgroup_name(key.cgroup_id),
            format!("failed with {}", names::errno(key.errno)),
            names::syscall(key.syscall).into_owned(),
            names::origin(key.origin).to_string(),
            String::new(),
            t.count.to_string(),
        ]);
    }
    println!("{table}");
    let lost: Vec<String> = monitor
        .aggregates()
        .losses()
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(kind, n)| format!("{} {n}", loss_name(kind as u32)))
        .collect();
    println!("lost: {}", if lost.is_empty() { "nothing".to_string() } else { lost.join(", ") });
}
