//! `capwatch report <container>`: what the container used, and the least privilege it needs.

use crate::{
    cli::StateDir,
    error::Error,
    format::{self, Format},
    query,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A container's name, full id or unique id prefix.
    #[arg(required_unless_present = "image", conflicts_with = "image")]
    pub container: Option<String>,
    /// Every container of this image seen, merged: the union of what they needed.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// table (for people), docker, compose, k8s, systemd (a drop-in), seccomp (a profile for
    /// --security-opt seccomp=FILE), seccomp-k8s (a Security Profiles Operator SeccompProfile), or
    /// json (everything; see docs/report-format.md).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Show each capability's syscalls and programs in the table.
    #[arg(short, long)]
    pub verbose: bool,
    #[command(flatten)]
    pub state_dir: StateDir,
}

pub fn run(args: Args) -> Result<(), Error> {
    let report = match (&args.container, &args.image) {
        (_, Some(image)) => query::image_report(&args.state_dir.path, image)?,
        (Some(container), None) => query::report(&args.state_dir.path, container)?,
        (None, None) => return Err(Error::Usage("name a container, or an image with --image".into())),
    };
    if args.format.needs_syscalls() && report.syscalls.is_none() {
        return Err(Error::Usage(format!(
            "capwatch recorded no syscalls of {}: its daemon ran with syscall_sets = false, or it ran before capwatch recorded them; run it again under a daemon that records them",
            report.container.name
        )));
    }
    super::print(&format::render(&report, args.format, args.verbose));
    if args.format == Format::Docker {
        for note in format::notes(&report) {
            eprintln!("# {note}");
        }
    }
    Ok(())
}
