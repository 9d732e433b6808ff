//! The `hush` command line: `run` the bot or `check-config` a configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hush::config::{Config, ProcessEnv};

#[derive(Parser)]
#[command(name = "hush", version, about = "A Matrix moderation bot: mutes and expiring rules from policy lists")]
struct Cli {
    /// Log format on standard error; RUST_LOG sets the levels (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bot in the foreground until SIGINT or SIGTERM.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a configuration file and exit.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    // What the default shows and why each SDK target is where it is: src/logging.rs.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(hush::logging::DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config, &ProcessEnv) {
            Ok(c) => {
                println!(
                    "{}: OK ({} policy lists, {} protected rooms{})",
                    config.display(),
                    c.policy_lists.len(),
                    c.protected_rooms.len(),
                    if c.dry_run { ", dry run" } else { "" }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            let config = match Config::load(&config, &ProcessEnv) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(hush::bot::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("hush stopped: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
