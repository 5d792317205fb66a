//! `capwatch ps`: the containers capwatch has seen, from the store.

use crate::{cli::StateDir, error::Error, format, query};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show exited containers too.
    #[arg(short, long)]
    pub all: bool,
    #[command(flatten)]
    pub state_dir: StateDir,
}

pub fn run(args: Args) -> Result<(), Error> {
    super::print(&format::ps::table(&query::containers(&args.state_dir.path, args.all)?));
    Ok(())
}
