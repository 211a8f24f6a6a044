//! The command line: `faceoff [serve]`, `faceoff worker`, `faceoff migrate`, and admin tasks.

use clap::{Parser, Subcommand};

use crate::{config::Config, server, telemetry};

#[derive(Debug, Parser)]
#[command(name = "faceoff", version, about = "Compare AI image models side by side")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the web app and run generation workers (the default).
    Serve,
    /// Run generation workers only (no web server), until SIGINT/SIGTERM.
    Worker,
    /// Apply the database migrations and exit.
    Migrate,
}

/// Parses the command line and runs it; returns the process exit code.
pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("faceoff: configuration error: {err}");
            std::process::exit(2);
        }
    };
    telemetry::init(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => server::serve(config).await,
        Command::Worker => server::worker(config).await,
        Command::Migrate => server::migrate(config).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
