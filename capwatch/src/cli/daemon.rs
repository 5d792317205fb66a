//! `capwatch daemon`: watches the host, names containers, logs NDJSON and keeps the store.

/// The daemon's flags: its settings (config.rs), each also in the config file.
pub use crate::config::Flags as Args;
use crate::{error::Error, service::Service};

pub async fn run(args: Args) -> Result<(), Error> {
    crate::daemon::run(Service::configure(args)?).await
}
