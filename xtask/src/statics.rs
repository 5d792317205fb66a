//! Statically linked builds of the workspace's programs, for places without this machine's
//! libraries: container images made from scratch and the initramfs of a test VM.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// Kept apart from the normal build so that neither invalidates the other.
pub const TARGET_DIR: &str = "target/static";
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds `bin` of `package` with glibc linked in and returns its path.
pub fn binary(root: &Path, package: &str, bin: &str) -> Result<PathBuf> {
    let status = static_cargo(root)
        .args(["build", "--release", "--package", package, "--bin", bin])
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("building a static {bin} failed ({status})");
    }
    Ok(root.join(TARGET_DIR).join(TARGET).join("release").join(bin))
}

/// A cargo command that builds static executables for this machine's architecture.
pub fn static_cargo(root: &Path) -> Command {
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // Its own target directory, whatever the caller's environment says.
        .env_remove("CARGO_TARGET_DIR")
        .args(["--quiet"])
        .args(["--config", &format!("build.target-dir={TARGET_DIR:?}")])
        .args(["--config", &format!("build.target={TARGET:?}")]);
    cargo
}
