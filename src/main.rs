//! The `lanyard` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use lanyard::config::{self, Config};
use lanyard::server::app;

#[derive(Parser)]
#[command(
    name = "lanyard",
    version,
    about = "An OpenID Connect identity provider for Kubernetes; a drop-in for Dex"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the issuer. Without --config, runs the embedded development default
    /// (http://127.0.0.1:5556, SQLite under ./lanyard-data).
    Serve {
        #[arg(long, short, env = "LANYARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, short, env = "LANYARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a config file: prints OK, or every error (exit status 1).
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// kubectl credential plugin: prints an ExecCredential with an ID token from the issuer
    /// (cached, refreshed, or from a new login) on stdout.
    Login(lanyard::login::LoginArgs),
}

fn load(config: &Option<PathBuf>) -> anyhow::Result<(Config, bool)> {
    match config {
        Some(path) => Config::load(path)
            .map(|c| (c, false))
            .map_err(|errs| anyhow::anyhow!("{}: invalid config:\n{errs}", path.display())),
        None => Config::embedded_default()
            .map(|c| (c, true))
            .map_err(|errs| anyhow::anyhow!("embedded default config is invalid:\n{errs}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::CheckConfig { config } = &cli.command {
        let (report, ok) = config::check_config_report(config);
        println!("{report}");
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("lanyard: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lanyard: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            let (config, embedded) = load(&config)?;
            app::init_logging(&config);
            let app = app::build(&config, app::BuildOptions::new(embedded))
                .await
                .context("cannot start")?;
            app.run(lanyard::server::shutdown_signal()).await?;
            Ok(())
        }
        Command::Migrate { config } => {
            let (config, _) = load(&config)?;
            app::init_logging(&config);
            let storage = lanyard::storage::open(&config.storage)
                .await
                .context("migration failed")?;
            tracing::info!(storage = storage.kind(), "migrations applied");
            Ok(())
        }
        Command::CheckConfig { .. } => Ok(()),
        Command::Login(args) => {
            use std::io::Write;
            let credential = lanyard::login::run(&args, &lanyard::clock::SystemClock).await?;
            // stdout carries the ExecCredential and nothing else.
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", credential.to_json())
                .and_then(|()| out.flush())
                .context("cannot write the credential to stdout")?;
            Ok(())
        }
    }
}
