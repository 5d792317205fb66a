//! Builds capwatch's eBPF programs with the pinned nightly.
use aya_build::{build_ebpf, Package, Toolchain};

/// The nightly that builds the eBPF crate. bpf-linker loads this toolchain's LLVM at run time,
/// so the two are pinned together (see the README and the `x` script).
const EBPF_TOOLCHAIN: &str = include_str!("../capwatch-ebpf/TOOLCHAIN");

fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../capwatch-ebpf");
    build_ebpf(
        [Package { name: "capwatch-ebpf", root_dir, ..Default::default() }],
        Toolchain::Custom(EBPF_TOOLCHAIN.trim_ascii()),
    )
}
