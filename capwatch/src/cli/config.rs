//! `capwatch config`: the default config file, and the settings a daemon would run with.

use crate::{
    config::{self, Flags, Settings},
    error::Error,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Print the full default config file, every setting documented.
    Default,
    /// Check the config file and print the settings `capwatch daemon` would run with (the file,
    /// then CAPWATCH_* variables, then these flags).
    Show(Box<Flags>),
}

pub fn run(args: Args) -> Result<(), Error> {
    match args.action {
        Action::Default => print!("{}", config::default_file()),
        Action::Show(flags) => {
            let settings = Settings::resolve(&flags)?;
            match &settings.source {
                Some(path) => println!("# read from {}", path.display()),
                None => println!("# no config file; defaults"),
            }
            let text = toml::to_string(&settings.given).map_err(|e| Error::Config {
                path: settings.source.clone().unwrap_or_default(),
                key: "(all)".into(),
                reason: e.to_string(),
            })?;
            print!("{text}");
        }
    }
    Ok(())
}
