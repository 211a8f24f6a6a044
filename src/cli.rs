//! The command line: `faceoff [serve]`, `faceoff worker`, `faceoff migrate`, `faceoff health`,
//! and admin tasks.

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
    /// Ask a running server whether it is ready (`GET /readyz`): exit 0 when it answers 200, 1
    /// otherwise (no answer, another status, a bad setting). For container health checks: the
    /// image has no curl.
    Health {
        /// The URL to ask [default: http://{FACEOFF_ADDR}/readyz, or with --metrics
        /// http://{FACEOFF_METRICS_ADDR}/readyz; an unspecified address is asked on loopback].
        #[arg(long, conflicts_with = "metrics")]
        url: Option<String>,
        /// Ask the metrics listener instead of the public one: for `faceoff worker`, which
        /// serves no pages.
        #[arg(long)]
        metrics: bool,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 2)]
        timeout: u64,
    },
    /// Administration tasks.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The model catalog (catalog/catalog.toml).
    Catalog {
        #[command(subcommand)]
        action: CatalogCommand,
    },
    /// The image providers (BFL, OpenAI, Google, fal, Replicate).
    Providers {
        #[command(subcommand)]
        action: ProvidersCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// For each configured provider, one cheap authenticated call (an account, credit or
    /// model-list endpoint) that says whether its key works, without generating. Exits 1 when
    /// a configured provider fails.
    Check,
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
    /// Check the ledger's invariants (after restoring a backup, or any time): exits 1 and lists
    /// the violations when one does not hold. Reads only; migrates and creates nothing.
    CheckLedger,
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
            // A health check answers 0 or 1: Docker reserves 2.
            let code = if matches!(cli.command, Some(Command::Health { .. })) { 1 } else { 2 };
            std::process::exit(code);
        }
    };
    telemetry::init(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => server::serve(config).await,
        Command::Worker => server::worker(config).await,
        Command::Migrate => server::migrate(config).await,
        Command::Health { url, metrics, timeout } => {
            health(&config, url.as_deref(), metrics, std::time::Duration::from_secs(timeout)).await
        }
        Command::Admin(command) => admin(config, command).await,
        Command::Catalog { action } => catalog_command(config, action).await,
        Command::Providers { action: ProvidersCommand::Check } => {
            let results = crate::providers::check::check_all(&config).await;
            println!("{}", crate::providers::check::report(&results));
            if results.iter().any(|r| r.status == crate::providers::check::CheckStatus::Failed) {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// `faceoff health`: prints what the server answered; exits 1 unless it is ready.
async fn health(config: &Config, url: Option<&str>, metrics: bool, timeout: std::time::Duration) -> anyhow::Result<()> {
    let url = match url {
        Some(url) => url.to_string(),
        None => match server::readiness_url(config, metrics) {
            Some(url) => url,
            None => {
                println!("FACEOFF_METRICS_ADDR=off: no metrics listener to ask");
                std::process::exit(1);
            }
        },
    };
    match server::probe(&url, timeout).await {
        Ok(answer) => {
            println!("{url}: {answer}");
            Ok(())
        }
        Err(reason) => {
            println!("{url}: {reason}");
            std::process::exit(1);
        }
    }
}

async fn admin(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::CheckLedger => check_ledger(&config).await,
        AdminCommand::Grant { email, credits, reason } => {
            server::with_database(&config, |pool| async move {
                crate::db::migrate(&pool).await?;
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
                Ok(())
            })
            .await
        }
        AdminCommand::Promote { email } => {
            server::with_database(&config, |pool| async move {
                crate::db::migrate(&pool).await?;
                accounts::admin::promote(&pool, &email).await?;
                println!("{} is now an administrator", email.trim());
                Ok(())
            })
            .await
        }
    }
}

/// `faceoff admin check-ledger`: the invariants of the database as it is (no migration, and a
/// missing database is an error, not created).
async fn check_ledger(config: &Config) -> anyhow::Result<()> {
    use anyhow::Context;
    use sqlx::Connection;
    let server = crate::db::locate(config).await?;
    let name = server.options.get_database().unwrap_or("faceoff").to_string();
    let checked = async {
        let mut conn = sqlx::PgConnection::connect_with(&server.options)
            .await
            .with_context(|| format!("connecting to database {name}"))?;
        let report = crate::ledger::check_invariants(&mut conn)
            .await
            .with_context(|| format!("checking the ledger of database {name} (is it a Faceoff database?)"))?;
        let totals = crate::ledger::totals(&mut conn).await?;
        conn.close().await.ok();
        anyhow::Ok((report, totals))
    }
    .await;
    if let Some(cluster) = &server.cluster {
        cluster.stop();
    }
    let (report, totals) = checked?;
    println!(
        "database {name}: {} accounts, {} transfers, {} holds ({} pending), {} credits in user wallets",
        totals.accounts, totals.transfers, totals.holds, totals.pending_holds, totals.user_credits
    );
    if !report.is_ok() {
        for violation in &report.violations {
            println!("violated: {violation}");
        }
        anyhow::bail!("{} ledger invariant(s) violated in database {name}", report.violations.len());
    }
    println!("ledger invariants hold");
    Ok(())
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
