//! Project tasks that are more than one cargo command: `cargo xtask test`.

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build every binary, then run every test.
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.task {
        Task::Test { filter } => test(filter.as_deref()),
    }
}

fn test(filter: Option<&str>) -> Result<()> {
    // The tests run the `capwatch` and `cw-workload` binaries as users and containers do.
    // Default members only: the eBPF crate builds for the BPF target, through capwatch's build.rs.
    cargo(&["build", "--bins"])?;
    let mut args = vec!["test", "--no-fail-fast"];
    if let Some(filter) = filter {
        args.push(filter);
    }
    cargo(&args)
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo).args(args).status().with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
