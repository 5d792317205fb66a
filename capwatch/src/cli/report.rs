//! `capwatch report <container>`: what the container used, and the least privilege it needs.

use std::path::PathBuf;

use crate::{
    advice,
    error::Error,
    format::{self, Format},
    paths,
    store::Store,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A container's name, full id or unique id prefix.
    pub container: String,
    /// table (for people), docker, compose, k8s, or json (everything; see docs/report-format.md).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// The daemon's state directory.
    #[arg(long, env = "CAPWATCH_STATE_DIR", default_value = paths::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

/// The store, read-only, and the container `query` names in it (as the docker CLI resolves names).
pub fn open_container(state_dir: &std::path::Path, query: &str) -> Result<(Store, crate::containers::Container), Error> {
    let store = Store::open_read_only(state_dir)?;
    let container = crate::containers::resolve(query, &store.containers()?)?.clone();
    Ok((store, container))
}

pub fn run(args: Args) -> Result<(), Error> {
    let report = load(&args.state_dir, &args.container)?;
    print!("{}", with_newline(format::render(&report, args.format)));
    Ok(())
}

/// The report of the container `query` names, from the store.
pub fn load(state_dir: &std::path::Path, query: &str) -> Result<advice::Report, Error> {
    let (store, container) = open_container(state_dir, query)?;
    let caps = store.cap_checks(&container.id)?;
    let failures = store.failures(&container.id)?;
    Ok(advice::report(container, &caps, &failures))
}

fn with_newline(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}
