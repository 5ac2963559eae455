//! The `espmail` binary: command line, configuration and logging at the edge; everything
//! else lives in the library. `anyhow` lives here only.
//!
//! Exit codes: 0 done, 1 failed (one clear line on stderr), 2 usage (clap).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use espmail::cli::{Cli, Command, ServeArgs};
use espmail::server::{self, Deps, Settings};

/// Where `serve` listens when neither the config nor a flag says otherwise.
const DEFAULT_LISTEN: &str = "127.0.0.1:1986";
/// The data directory when neither the config nor a flag says otherwise.
const DEFAULT_DATA_DIR: &str = "data";

#[allow(clippy::print_stderr)] // the binary's job at this edge is to tell the operator
fn main() -> ExitCode {
    let cli = Cli::parse(); // usage errors exit 2 here, with clap's message
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("espmail: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args),
        other => anyhow::bail!(
            "`{}` is not built yet in this version",
            command_name(&other)
        ),
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Serve(_) => "serve",
        Command::Init(_) => "init",
        Command::Account(_) => "account",
        Command::Admin(_) => "admin",
        Command::Stats(_) => "stats",
        Command::Purge(_) => "purge",
        Command::RotateKey(_) => "rotate-key",
        Command::Talk(_) => "talk",
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")
}

fn init_logging(args: &ServeArgs) {
    let default = if args.debug {
        "debug"
    } else if args.quiet {
        "warn"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[allow(clippy::print_stderr)] // the listening line is part of the product (ESPMAIL.md §5)
fn serve(args: ServeArgs) -> Result<()> {
    init_logging(&args);
    let data_dir: PathBuf = args
        .data
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    create_data_dir(&data_dir)?;
    let listen = match args.listen {
        Some(addr) => addr,
        None => DEFAULT_LISTEN.parse().context("default listen address")?,
    };
    let settings = Settings::default();
    let deps = Arc::new(Deps { settings });

    let rt = runtime()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await.with_context(|| {
            format!("cannot listen on {listen} (is another server using it? change --listen)")
        })?;
        let local = listener.local_addr().context("listening socket")?;
        let shutdown = CancellationToken::new();
        spawn_signal_watch(shutdown.clone())?;
        eprintln!("espmail listening on {local}");
        server::run(listener, deps, shutdown).await?;
        tracing::info!("shut down cleanly");
        Ok(())
    })
}

fn create_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Only the operator's account should read the database and keyfile.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {} to its owner", dir.display()))?;
    }
    Ok(())
}

/// SIGINT or SIGTERM: stop accepting, let sessions finish, exit 0.
fn spawn_signal_watch(shutdown: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        shutdown.cancel();
    });
    Ok(())
}
