//! Debian packages the tasks need, installed where missing.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Runs `apt-get ARGS` without questions or chatter.
pub fn apt(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed ({status})", args.join(" "));
    }
    Ok(())
}
