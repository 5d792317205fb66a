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
    pub container: String,
    /// table (for people), docker, compose, k8s, systemd (a drop-in), or json (everything; see
    /// docs/report-format.md).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Show each capability's syscalls and programs in the table.
    #[arg(short, long)]
    pub verbose: bool,
    #[command(flatten)]
    pub state_dir: StateDir,
}

pub fn run(args: Args) -> Result<(), Error> {
    let report = query::report(&args.state_dir.path, &args.container)?;
    super::print(&format::render(&report, args.format, args.verbose));
    if args.format == Format::Docker {
        for note in format::notes(&report) {
            eprintln!("# {note}");
        }
    }
    Ok(())
}
