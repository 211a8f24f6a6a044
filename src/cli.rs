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
    /// The model catalog (catalog/catalog.toml).
    Catalog {
        #[command(subcommand)]
        action: CatalogCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Validate a catalog file and load it into the database (running instances refresh).
    Load {
        /// The catalog file.
        #[arg(default_value = crate::catalog::CATALOG_PATH)]
        path: std::path::PathBuf,
    },
    /// Validate a catalog file without loading it.
    Check {
        /// The catalog file.
        #[arg(default_value = crate::catalog::CATALOG_PATH)]
        path: std::path::PathBuf,
    },
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
        Command::Catalog { action } => catalog_command(config, action).await,
    }
}

async fn catalog_command(config: Config, action: CatalogCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    let (CatalogCommand::Load { path } | CatalogCommand::Check { path }) = &action;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if let Err(err) = crate::catalog::file::parse(&text) {
        anyhow::bail!("{}: {err}", path.display());
    }
    if let CatalogCommand::Check { .. } = action {
        println!("{}: valid", path.display());
        return Ok(());
    }
    let (server, pool) = server::connect(&config).await?;
    let result = async {
        crate::db::migrate(&pool).await?;
        crate::catalog::db::load(&pool, &text, &path.display().to_string()).await
    }
    .await;
    pool.close().await;
    if let Some(cluster) = &server.cluster {
        cluster.stop();
    }
    match result? {
        crate::catalog::db::LoadOutcome::Loaded => println!("{}: loaded", path.display()),
        crate::catalog::db::LoadOutcome::Unchanged => println!("{}: already loaded, nothing changed", path.display()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
