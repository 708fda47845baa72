//! `synaxisd`: parses flags, loads the config, and runs a command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use synaxisd::config::Config;
use synaxisd::{app, telemetry};

/// Exit status for an invalid config or missing secrets (`EX_CONFIG` of sysexits.h).
const EXIT_CONFIG: u8 = 78;

/// mimalloc serves the many small, short-lived allocations of request handling with less
/// time per call than glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_CONFIG_PATH: &str = "config/synaxisd.toml";

/// The embedded default config, used when no config file is given or found.
const BUILTIN_CONFIG: &str = include_str!("../../config/synaxisd.toml");

#[derive(Debug, Parser)]
#[command(name = "synaxisd", version, about = "Synaxis inference gateway daemon")]
struct Cli {
    /// Path of the TOML config file. Without it, `config/synaxisd.toml` when that file exists,
    /// else the built-in embedded default.
    #[arg(long, short, env = "SYNAXIS_CONFIG", global = true)]
    config: Option<PathBuf>,

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

    let loaded = match &cli.config {
        Some(path) => Config::load(path),
        None if Path::new(DEFAULT_CONFIG_PATH).is_file() => {
            Config::load(Path::new(DEFAULT_CONFIG_PATH))
        }
        None => Config::load_builtin(BUILTIN_CONFIG),
    };
    let mut config = match loaded {
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
                let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
                synaxisd::secrets::peer_secret(&env).map_err(app::StartupError::from)?;
                println!("config is valid");
                Ok(())
            }
        }
    });

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "synaxisd failed");
            let is_config = error
                .downcast_ref::<app::StartupError>()
                .is_some_and(app::StartupError::is_config);
            if is_config {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
