//! `capwatch run [OPTIONS] -- CMD [ARGS…]`: run one command under capwatch's probes, with no
//! daemon, and print what it needs when it ends.

use std::{ffi::OsString, io::Write, path::PathBuf, process::ExitCode};

use crate::{
    error::Error,
    format::{self, Format},
    names, probe,
    run::{self, Launch, User},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run as this user (name or uid); by default the one who ran sudo, or root.
    #[arg(long)]
    pub user: Option<String>,
    /// Start with only these capabilities (NET_RAW,CHOWN): the bounding set, and for a
    /// non-root user its ambient set, so that it holds them.
    #[arg(long, value_delimiter = ',')]
    pub caps: Option<Vec<String>>,
    /// Start without these capabilities (SYS_ADMIN,NET_ADMIN).
    #[arg(long, value_delimiter = ',')]
    pub drop: Vec<String>,
    /// table (for people), docker, compose, k8s, systemd (a drop-in), seccomp, seccomp-k8s, or json.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Show each capability's syscalls and programs in the table.
    #[arg(short, long)]
    pub verbose: bool,
    /// Write the report here rather than to stderr.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Which capability probe to use: auto, fexit, tracepoint or kprobe.
    #[arg(long, default_value_t)]
    pub probe: probe::Choice,
    /// The command and its arguments, after `--`.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Runs the command; returns its exit status once the report is written.
pub async fn run(args: Args) -> Result<ExitCode, Error> {
    let user = match &args.user {
        Some(wanted) => Some(User::lookup(wanted)?),
        None => User::invoking().transpose()?,
    };
    let bounding = crate::containers::proc_caps(std::process::id()).1.unwrap_or_else(names::all_capabilities);
    let caps = match &args.caps {
        Some(list) => mask(list)?,
        None => bounding,
    } & !mask(&args.drop)?;
    let launch = Launch { command: args.command, user, caps, caps_asked: args.caps.is_some(), probe: args.probe };
    let outcome = run::run(launch).await?;
    let mut text = format::render(&outcome.report, args.format, args.verbose);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    if args.format == Format::Docker {
        text.extend(format::notes(&outcome.report).iter().map(|n| format!("# {n}\n")));
    }
    match &args.output {
        Some(path) => std::fs::write(path, text).map_err(|e| Error::io(path, e))?,
        None => {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }
    Ok(ExitCode::from(outcome.status.clamp(0, 255) as u8))
}

/// A mask of capability names, with or without CAP_, in any case.
fn mask(list: &[String]) -> Result<u64, Error> {
    list.iter().filter(|c| !c.trim().is_empty()).try_fold(0u64, |mask, name| {
        let wanted = name.trim().to_ascii_uppercase();
        let full = if wanted.starts_with("CAP_") { wanted } else { format!("CAP_{wanted}") };
        names::capability_number(&full).map(|n| mask | 1 << n).ok_or_else(|| {
            Error::Usage(format!(
                "\"{}\" is not a capability: name them as docker does (NET_RAW,CHOWN)",
                names::shown(name)
            ))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_named_as_docker_names_them() {
        assert_eq!(mask(&["NET_RAW".into(), "cap_chown".into()]).unwrap(), 1 << 13 | 1);
        assert!(mask(&["NET_RAWR".into()]).unwrap_err().to_string().contains("not a capability"));
    }
}
