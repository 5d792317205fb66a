//! The corpus image: a minimal Debian bookworm holding the real programs that
//! `tests/tests/corpus.rs` runs, built with debootstrap and imported without a registry.
//!
//! The root filesystem is cached as a tarball under `target/corpus/<key>/`, where the key is a
//! hash of the recipe (the suite, the mirror, the package list, the build script, the image's
//! settings and a version for whatever else changes the result): it is rebuilt only when the
//! recipe changes. The tarball keeps the `security.capability` extended
//! attributes, and `docker import` applies them, so the image's `ping` carries its file
//! capabilities as Debian ships it; `ping-plain` is the same program without them.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{apt::apt, docker::Dockerd};

/// Raised when the image would change in a way the rest of the recipe does not show.
const RECIPE_VERSION: u32 = 1;

const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";

/// The programs of the corpus and what their checks use; minbase brings the rest (util-linux's
/// su, runuser, setpriv, mount, dmesg and chrt, coreutils' nice, bash).
const PACKAGES: &[&str] = &[
    "chrony",           // chronyd: drops to _chrony, keeping only the capabilities it uses
    "iproute2",         // ip: addresses and links (CAP_NET_ADMIN)
    "iputils-ping",     // ping, with cap_net_raw=ep as Debian installs it
    "libcap2-bin",      // setcap for the recipe, getcap for checking it
    "nginx-light",      // a web server binding :80 and switching its workers to www-data
    "openssh-server",   // sshd: a privilege-separating daemon (chroot + setuid preauth child)
    "procps",           // ps, for looking inside a container by hand
    "rsyslog",          // a syslog daemon reading the kernel log (imklog, /proc/kmsg)
    "systemd-sysv",     // systemd as PID 1: the unit tests boot the root filesystem with systemd-nspawn
    "tcpdump",          // packet capture, dropping to the tcpdump user
    "util-linux-extra", // hwclock: sets the kernel's timezone with settimeofday
];

/// The image's PATH, as Debian's own images set it.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the cached root filesystems live.
const CACHE_DIR: &str = "target/corpus";

/// The build, run by sh in a mount namespace of its own so that the chroot's /proc and anything
/// debootstrap mounts go away with it, however the build ends.
const BUILD: &str = r#"set -eu
debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR"
printf '#!/bin/sh\nexit 101\n' > "$ROOTFS/usr/sbin/policy-rc.d"
chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
printf 'path-exclude=/usr/share/doc/*\npath-exclude=/usr/share/man/*\npath-exclude=/usr/share/info/*\npath-exclude=/usr/share/locale/*\n' > "$ROOTFS/etc/dpkg/dpkg.cfg.d/01-corpus-nodoc"
mount -t proc proc "$ROOTFS/proc"
chroot "$ROOTFS" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS" apt-get install -y -qq --no-install-recommends $PACKAGES
chroot "$ROOTFS" sh -c "$FINISH"
umount "$ROOTFS/proc"
rm -rf "$ROOTFS/usr/share/doc" "$ROOTFS/usr/share/man" "$ROOTFS/usr/share/info" "$ROOTFS/usr/share/locale"
mv "$ROOTFS/tmp/packages.txt" "$DIR/packages.txt"
tar -C "$ROOTFS" --xattrs --xattrs-include=security.capability --numeric-owner --sort=name -cf "$TARBALL.partial" .
"#;

/// Run inside the chroot after the packages are installed.
const FINISH: &str = r#"set -eu
# ping exactly as Debian's postinst leaves it where setcap works, and a copy without the
# attribute (cp does not copy extended attributes).
setcap cap_net_raw=ep /usr/bin/ping
chmod u-s /usr/bin/ping
cp /usr/bin/ping /usr/local/bin/ping-plain
getcap /usr/bin/ping | grep -q 'cap_net_raw=ep'
test -z "$(getcap /usr/local/bin/ping-plain)"
# sshd's privilege-separation directory, which its service manager would create.
mkdir -p /run/sshd
chmod 755 /run/sshd
rm -f /usr/sbin/policy-rc.d
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/apt /var/log/*.log
dpkg-query -W -f '${Package} ${Version}\n' > /tmp/packages.txt
"#;

/// The corpus's root filesystem as a tarball, built unless the cache has it.
fn tarball(root: &Path) -> Result<(String, PathBuf)> {
    let key = recipe_key()?;
    let cache = root.join(CACHE_DIR);
    let dir = cache.join(&key);
    let tarball = dir.join("rootfs.tar");
    if !tarball.exists() {
        build(&cache, &dir, &tarball)?;
    }
    Ok((key, tarball))
}

/// The corpus's root filesystem unpacked (with its file capabilities), for systemd-nspawn to boot
/// read-only: `target/corpus/<key>/rootfs`.
pub fn rootfs(root: &Path) -> Result<PathBuf> {
    let (_, tarball) = tarball(root)?;
    let dir = tarball.with_file_name("rootfs");
    if !dir.exists() {
        let partial = tarball.with_file_name("rootfs.partial");
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial)?;
        let status = Command::new("tar")
            .args(["--xattrs", "--xattrs-include=security.capability", "--numeric-owner", "-xf"])
            .arg(&tarball)
            .arg("-C")
            .arg(&partial)
            .status()
            .context("unpacking the corpus root filesystem")?;
        if !status.success() {
            bail!("unpacking {} failed ({status})", tarball.display());
        }
        fs::rename(&partial, &dir)?;
    }
    Ok(dir)
}

/// Builds the corpus image unless the cache has it, imports it into `dockerd` unless the engine
/// has it, checks its file capabilities, and returns its tag.
pub fn image(root: &Path, dockerd: &Dockerd) -> Result<String> {
    let (key, tarball) = tarball(root)?;
    let tag = format!("capwatch-corpus:{}", &key[..16]);
    let present = dockerd.docker(&["image", "inspect", &tag]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !present.is_ok_and(|s| s.success()) {
        eprintln!("xtask: importing the corpus image {tag}");
        let status = dockerd
            .docker(&["import", "--change", &format!("ENV PATH={PATH}"), &tarball.display().to_string(), &tag])
            .stdout(Stdio::null())
            .status()
            .context("docker import")?;
        if !status.success() {
            bail!("docker import of the corpus image failed ({status})");
        }
        check_file_capabilities(dockerd, &tag)?;
        remove_older_images(dockerd, &tag);
    }
    Ok(tag)
}

/// Images of earlier recipes, which the engine would otherwise keep.
fn remove_older_images(dockerd: &Dockerd, current: &str) {
    let Ok(out) = dockerd.docker(&["images", "capwatch-corpus", "--format", "{{.Repository}}:{{.Tag}}"]).output()
    else {
        return;
    };
    for image in String::from_utf8_lossy(&out.stdout).lines().filter(|i| *i != current) {
        let _ = dockerd.docker(&["rmi", image]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// The file capabilities must survive into containers: the ping entries test exactly that case.
fn check_file_capabilities(dockerd: &Dockerd, tag: &str) -> Result<()> {
    let out = dockerd
        .docker(&["run", "--rm", "--network", "none", tag, "getcap", "/usr/bin/ping", "/usr/local/bin/ping-plain"])
        .output()
        .context("docker run getcap")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.trim() != "/usr/bin/ping cap_net_raw=ep" {
        bail!(
            "the corpus image lost ping's file capabilities: getcap says {text:?} ({})",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A hash of everything that decides the image's content and settings.
fn recipe_key() -> Result<String> {
    let mut hasher =
        Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().context("sha256sum")?;
    {
        use std::io::Write;
        let mut stdin = hasher.stdin.take().context("sha256sum stdin")?;
        let recipe =
            [&RECIPE_VERSION.to_string(), SUITE, MIRROR, &PACKAGES.join(" "), BUILD, FINISH, PATH].join("\n\0");
        stdin.write_all(recipe.as_bytes())?;
    }
    let out = hasher.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let key = text.split_whitespace().next().unwrap_or_default();
    if !out.status.success() || key.len() != 64 {
        bail!("sha256sum failed ({})", out.status);
    }
    Ok(key.to_string())
}

fn build(cache: &Path, dir: &Path, tarball: &Path) -> Result<()> {
    ensure_debootstrap()?;
    // Older recipes' root filesystems are of no further use.
    if let Ok(entries) = fs::read_dir(cache) {
        for entry in entries.flatten() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("xtask: building the corpus image: debootstrap {SUITE} with {}", PACKAGES.join(" "));
    let log = dir.join("build.log");
    let log_file = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", BUILD])
        .env("SUITE", SUITE)
        .env("MIRROR", MIRROR)
        .env("PACKAGES", PACKAGES.join(" "))
        .env("ROOTFS", &rootfs)
        .env("DIR", dir)
        .env("TARBALL", tarball)
        .env("FINISH", FINISH)
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .context("running debootstrap")?;
    let _ = fs::remove_dir_all(&rootfs);
    if !status.success() {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("building the corpus image failed ({status}); {}:\n{}", log.display(), tail.join("\n"));
    }
    fs::rename(partial(tarball), tarball).context("keeping the corpus tarball")?;
    Ok(())
}

fn partial(tarball: &Path) -> PathBuf {
    let mut name = tarball.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn ensure_debootstrap() -> Result<()> {
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", "debootstrap"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"));
    if !installed {
        eprintln!("xtask: installing debootstrap");
        apt(&["update", "-qq"])?;
        apt(&["install", "-y", "-qq", "--no-install-recommends", "debootstrap"])?;
    }
    Ok(())
}
