//! Project tasks that are more than one cargo command: `cargo xtask test`, `cargo xtask vm-test`,
//! `cargo xtask bench`.

mod apt;
mod bench;
mod corpus;
mod docker;
mod statics;
mod vm;

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
    /// Build every binary, then run every test; without arguments, the VM tests too.
    Test {
        /// Passed on to `cargo test` (a test name filter, `--test docker`, …).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Boot Debian's 5.10, 6.1, 6.12 and newest kernels under qemu and run the real-kernel suite
    /// in each, once per backend.
    VmTest,
    /// Build the corpus's Debian image (cached under target/corpus) and import it into the
    /// tests' Docker engine, which is stopped again; `test` does this by itself.
    CorpusImage,
    /// Measure capwatch's overhead beside the floor and bpftrace; writes docs/performance.md.
    Bench {
        /// Passed on to cw-bench (`--rounds N` for a fixed count, else `--min-rounds N`,
        /// `--max-rounds N`, `--budget-seconds S`; `--calls N`, `--sustain-seconds S`).
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
        Task::VmTest => vm::run(&workspace_root()),
        Task::CorpusImage => {
            let dockerd = docker::Dockerd::start()?;
            let tag = corpus::image(&workspace_root(), &dockerd)?;
            println!("{tag}");
            Ok(())
        }
        Task::Bench { args } => bench::run(&workspace_root(), &args),
    }
}

fn test(extra: &[String]) -> Result<()> {
    let root = workspace_root();
    tidy(&root)?;
    // The tests run the `capwatch` and `cw-workload` binaries as users and containers do.
    // Default members only: the eBPF crate builds for the BPF target, through capwatch's build.rs.
    cargo(&["build", "--bins"], &[])?;
    // Containers get a static cw-workload: the test image has no C library.
    let workload = statics::binary(&root, "capwatch-tests", "cw-workload")?;
    let dockerd = docker::Dockerd::start()?;
    dockerd.import_test_image(&[workload])?;
    // The corpus's Debian image: built once per recipe (debootstrap), then cached.
    let corpus_image = corpus::image(&root, &dockerd)?;
    // The same root filesystem, which holds systemd, for the unit tests to boot.
    let systemd_rootfs = corpus::rootfs(&root)?.display().to_string();
    let socket = dockerd.socket().display().to_string();
    let env = [
        ("CAPWATCH_TEST_DOCKER_SOCKET", socket.as_str()),
        ("CAPWATCH_TEST_IMAGE", docker::TEST_IMAGE),
        ("CAPWATCH_CORPUS_IMAGE", corpus_image.as_str()),
        ("CAPWATCH_SYSTEMD_ROOTFS", systemd_rootfs.as_str()),
    ];
    let mut args = vec!["test", "--no-fail-fast"];
    args.extend(extra.iter().map(String::as_str));
    let host = cargo(&args, &env);
    drop(dockerd);
    if !extra.is_empty() {
        return host;
    }
    // Then the kernels users run, whatever this one found.
    match (host, vm::run(&root)) {
        (Err(host), Err(vm)) => bail!("{host:#}; and {vm:#}"),
        (host, vm) => host.and(vm),
    }
}

/// The code is formatted as rustfmt.toml says and clean of lints, the eBPF programs included.
fn tidy(root: &Path) -> Result<()> {
    let nightly = format!("+{}", EBPF_TOOLCHAIN.trim_ascii());
    // rustfmt.toml's import grouping is a nightly option: the eBPF toolchain's rustfmt applies it.
    check(
        Command::new("cargo").args([nightly.as_str(), "fmt", "--all", "--check"]).current_dir(root),
        "cargo fmt --check",
    )?;
    cargo(&["clippy", "--all-targets", "--", "-D", "warnings"], &[])?;
    // The eBPF crate only builds for the BPF target, so it is linted there, apart.
    let ebpf_target = root.join("target/ebpf-clippy");
    check(
        Command::new("cargo")
            .args([
                nightly.as_str(),
                "clippy",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--release",
                "--bins",
            ])
            .arg("--target-dir")
            .arg(&ebpf_target)
            .args(["--", "-D", "warnings"])
            .current_dir(root.join("capwatch-ebpf")),
        "clippy on the eBPF programs",
    )
}

/// The toolchain that builds the eBPF programs, as capwatch/build.rs and the `x` script read it.
const EBPF_TOOLCHAIN: &str = include_str!("../../capwatch-ebpf/TOOLCHAIN");

fn check(command: &mut Command, what: &str) -> Result<()> {
    let status = command.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
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
