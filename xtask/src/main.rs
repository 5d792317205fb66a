//! Project tasks that are more than one cargo command: `cargo xtask test`.

mod docker;
mod statics;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

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
        /// Passed on to `cargo test` (a test name filter, `--test docker`, …).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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
        Task::Test { args } => test(&args),
    }
}

fn test(extra: &[String]) -> Result<()> {
    let root = workspace_root();
    // The tests run the `capwatch` and `cw-workload` binaries as users and containers do.
    // Default members only: the eBPF crate builds for the BPF target, through capwatch's build.rs.
    cargo(&["build", "--bins"], &[])?;
    // Containers get a static cw-workload: the test image has no C library.
    let workload = statics::binary(&root, "capwatch-tests", "cw-workload")?;
    let dockerd = docker::Dockerd::start()?;
    dockerd.import_test_image(&[workload])?;
    let socket = dockerd.socket().display().to_string();
    let env = [("CAPWATCH_TEST_DOCKER_SOCKET", socket.as_str()), ("CAPWATCH_TEST_IMAGE", docker::TEST_IMAGE)];
    let mut args = vec!["test", "--no-fail-fast"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args, &env)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
