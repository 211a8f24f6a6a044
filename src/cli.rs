//! The command line: `faceoff [serve]`, `faceoff worker`, `faceoff migrate`, and admin tasks.

use clap::{Parser, Subcommand};

use crate::{accounts, config::Config, server, telemetry};

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
    /// Administration tasks.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The model catalog (catalog/catalog.toml).
    Catalog {
        #[command(subcommand)]
        action: CatalogCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Add (or, with a negative number, remove) credits of a user; recorded in the ledger as an
    /// adjustment with the reason as its memo.
    Grant {
        /// The user's email address.
        #[arg(long)]
        email: String,
        /// Credits to add; negative removes (never below zero).
        #[arg(long, allow_negative_numbers = true)]
        credits: i64,
        /// Why (shown in the user's credit history).
        #[arg(long)]
        reason: String,
    },
    /// Make a user an administrator (access to /admin).
    Promote {
        /// The user's email address.
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Validate a catalog file and load it into the database (running instances refresh).
    Load {
        /// The catalog file [default: FACEOFF_CATALOG_FILE, else catalog/catalog.toml].
        path: Option<std::path::PathBuf>,
    },
    /// Validate a catalog file without loading it.
    Check {
        /// The catalog file [default: FACEOFF_CATALOG_FILE, else catalog/catalog.toml].
        path: Option<std::path::PathBuf>,
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
        Command::Admin(command) => admin(config, command).await,
        Command::Catalog { action } => catalog_command(config, action).await,
    }
}

async fn admin(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    server::with_database(&config, |pool| async move {
        crate::db::migrate(&pool).await?;
        match command {
            AdminCommand::Grant { email, credits, reason } => {
                // A fresh key per invocation: running the command twice grants twice, on purpose.
                let key = format!("cli:{}", uuid::Uuid::now_v7());
                let done = accounts::admin::adjust_credits(&pool, &email, credits, &reason, &key).await?;
                println!(
                    "{} {} credits {} {}; available balance now {} (held {})",
                    if done.amount > 0 { "added" } else { "removed" },
                    done.amount.abs(),
                    if done.amount > 0 { "to" } else { "from" },
                    done.email,
                    done.balance.available,
                    done.balance.held
                );
            }
            AdminCommand::Promote { email } => {
                accounts::admin::promote(&pool, &email).await?;
                println!("{} is now an administrator", email.trim());
            }
        }
        Ok(())
    })
    .await
}

async fn catalog_command(config: Config, action: CatalogCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    let (CatalogCommand::Load { path } | CatalogCommand::Check { path }) = &action;
    let configured = server::catalog_path(&config);
    let path = path.as_ref().unwrap_or(&configured);
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if let Err(err) = crate::catalog::file::parse(&text) {
        anyhow::bail!("{}: {err}", path.display());
    }
    if let CatalogCommand::Check { .. } = action {
        println!("{}: valid", path.display());
        return Ok(());
    }
    let source = path.display().to_string();
    let outcome = server::with_database(&config, |pool| async move {
        crate::db::migrate(&pool).await?;
        crate::catalog::db::load(&pool, &text, &source).await
    })
    .await?;
    match outcome {
        crate::catalog::db::LoadOutcome::Loaded => println!("{}: loaded", path.display()),
        crate::catalog::db::LoadOutcome::Unchanged => println!("{}: already loaded, nothing changed", path.display()),
    }
    if *path != configured {
        println!(
            "note: every start loads {} again; set FACEOFF_CATALOG_FILE={} to keep this catalog",
            configured.display(),
            path.display()
        );
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

    #[test]
    fn admin_grant_accepts_negative_credits() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from([
            "faceoff",
            "admin",
            "grant",
            "--email",
            "a@example.com",
            "--credits",
            "-5",
            "--reason",
            "refund",
        ])
        .expect("parses");
        assert!(matches!(cli.command, Some(super::Command::Admin(super::AdminCommand::Grant { credits: -5, .. }))));
    }
}
