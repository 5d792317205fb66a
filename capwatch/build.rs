//! Builds capwatch's eBPF programs with the pinned nightly.
use std::{fs, os::unix::fs::symlink, path::Path};

use anyhow::Context;
use aya_build::{build_ebpf, Package, Toolchain};

/// The nightly that builds the eBPF crate. bpf-linker loads this toolchain's LLVM at run time,
/// so the two are pinned together (see the README and the `x` script).
const EBPF_TOOLCHAIN: &str = include_str!("../capwatch-ebpf/TOOLCHAIN");

/// Where the eBPF crate is built, whatever the host build's profile or target directory.
const SHARED_TARGET_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bpf");

fn main() -> anyhow::Result<()> {
    share_ebpf_target_dir()?;
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../capwatch-ebpf");
    build_ebpf(
        [Package { name: "capwatch-ebpf", root_dir, ..Default::default() }],
        Toolchain::Custom(EBPF_TOOLCHAIN.trim_ascii()),
    )
}

/// aya-build gives each host build its own cargo target directory for the eBPF crate (below
/// OUT_DIR), so a check, a debug build, a release build and a static build of capwatch each
/// compiled `core` and the programs anew, the same bytes every time. That directory is made a link
/// to one shared directory: the first build compiles, the others find it up to date. cargo's lock
/// on the target directory serialises builds that run at once.
fn share_ebpf_target_dir() -> anyhow::Result<()> {
    let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR not set")?;
    // aya-build's choice: OUT_DIR/aya-build/target/<package>.
    let private = Path::new(&out_dir).join("aya-build/target/capwatch-ebpf");
    if fs::symlink_metadata(&private).is_ok_and(|m| m.file_type().is_symlink()) {
        return Ok(());
    }
    if private.exists() {
        fs::remove_dir_all(&private).with_context(|| format!("removing {}", private.display()))?;
    }
    fs::create_dir_all(SHARED_TARGET_DIR).with_context(|| format!("creating {SHARED_TARGET_DIR}"))?;
    fs::create_dir_all(private.parent().expect("a parent"))?;
    symlink(SHARED_TARGET_DIR, &private).with_context(|| format!("linking {}", private.display()))
}
