use std::process::ExitCode;

use capwatch::cli::{self, Cli, Command};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.command);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&e),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Daemon(args) => cli::daemon::run(args).await,
            Command::Trace(args) => cli::trace::run(args).await,
            Command::Status(args) => cli::status::run(args),
            Command::Ps(args) => cli::ps::run(args),
            Command::Report(args) => cli::report::run(args),
            Command::Caps(args) => cli::caps::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("capwatch: {err}");
    ExitCode::FAILURE
}

/// The daemon writes JSON lines to stdout (journald, log shippers); people get plain text on
/// stderr. `RUST_LOG` filters either.
fn init_logging(command: &Command) {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match command {
        Command::Daemon(_) => fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stdout)
            .init(),
        Command::Trace(_) | Command::Status(_) | Command::Ps(_) | Command::Report(_) | Command::Caps(_) => fmt().with_env_filter(filter).with_writer(std::io::stderr).init(),
    }
}
