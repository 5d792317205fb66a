//! `capwatch verify <container>`: the advice proven by recreating the container with it, then
//! without each of its capabilities, while the daemon watches.

use std::time::Duration;

use crate::{cli::StateDir, containers::docker, error::Error, format, verification::Outcome, verify};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A container's name, full id or unique id prefix.
    pub container: String,
    /// For a service: a command run inside each copy (`sh -c`, as docker exec) that exits 0 once it works.
    #[arg(long)]
    pub check: Option<String>,
    /// How long each copy may take to exit, or its --check to pass.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Prove this set (comma-separated, as docker's --cap-add) instead of the advice.
    #[arg(long = "cap-add", value_delimiter = ',', conflicts_with = "minimize")]
    pub cap_add: Option<Vec<String>>,
    /// Start from the granted set and drop one capability at a time, instead of from the advice.
    #[arg(long)]
    pub minimize: bool,
    /// table (for people) or json (see docs/report-format.md).
    #[arg(long, value_enum, default_value_t = format::TableOrJson::Table)]
    pub format: format::TableOrJson,
    /// Docker's API socket, where the container is recreated.
    #[arg(long = "docker-socket", env = "CAPWATCH_DOCKER_SOCKET", default_value = docker::DEFAULT_SOCKET)]
    pub docker_socket: String,
    #[command(flatten)]
    pub state_dir: StateDir,
}

pub async fn run(args: Args) -> Result<(), Error> {
    let options = verify::Options {
        container: args.container,
        check: args.check,
        timeout: Duration::from_secs(args.timeout),
        cap_add: args.cap_add,
        minimize: args.minimize,
        docker_socket: args.docker_socket,
        state_dir: args.state_dir.path,
    };
    let verification = verify::verify(&options).await?;
    super::print(&format::verify::render(&verification, args.format));
    match verification.verdict {
        Outcome::ProvenMinimal => Ok(()),
        _ => Err(Error::NotProven(verification.summary)),
    }
}
