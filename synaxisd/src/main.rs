//! `synaxisd`: parses flags, loads the config, and runs a command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use synaxisd::config::Config;
use synaxisd::{app, telemetry};

/// Exit status for an invalid config (`EX_CONFIG` of sysexits.h).
const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(name = "synaxisd", version, about = "Synaxis inference gateway daemon")]
struct Cli {
    /// Path of the TOML config file.
    #[arg(
        long,
        short,
        env = "SYNAXIS_CONFIG",
        default_value = "config/synaxisd.toml",
        global = true
    )]
    config: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the inference and control APIs.
    Serve {
        /// Address to listen on, overriding `server.listen` (port 0 picks a free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the config and exit.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();

    let mut config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("synaxisd: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::Serve {
        listen: Some(listen),
    } = &cli.command
    {
        config.server.listen = *listen;
    }
    telemetry::init(&config.log);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("synaxisd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { .. } => app::serve(config).await,
            Command::Migrate => app::migrate(&config).await,
            Command::CheckConfig => {
                println!("config is valid");
                Ok(())
            }
        }
    });

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "synaxisd failed");
            eprintln!("synaxisd: {error:#}");
            ExitCode::FAILURE
        }
    }
}
