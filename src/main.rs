//! The `espmail` binary: command line, configuration and logging at the edge; everything
//! else lives in the library. `anyhow` lives here only.
//!
//! Exit codes: 0 done, 1 failed (one clear line on stderr), 2 usage (clap).

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use espmail::admin;
use espmail::cli::{Cli, Command, DataArgs, ServeArgs, TopCommand, TunnelArgs};
use espmail::cli_docs;
use espmail::config::{Config, ConfigSource, Overrides};
use espmail::espmail::accounts::{AccountsHandle, ThrottleLimits};
use espmail::espmail::open::Served;
use espmail::listen::Listener;
use espmail::log_redact;
use espmail::ops;
use espmail::server::{self, Deps, ServerStats, Settings};
use espmail::supervisor;
use espmail::tls::{CertPaths, ReloadableAcceptor};
use espmail::world::esp::MailRate;
use espmail::world::Registry;

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
    let cmd = match cli.command {
        TopCommand::World(cmd) => cmd,
        TopCommand::Completions(args) => {
            return Ok(cli_docs::completions(
                args.shell,
                &mut std::io::stdout().lock(),
            )?)
        }
        TopCommand::Man(args) => return Ok(cli_docs::man(&args, &mut std::io::stdout().lock())?),
    };
    match cmd {
        Command::Serve(args) => serve(args),
        // The operator commands live in the library (`espmail::ops`), tested there.
        cmd @ (Command::Init(_)
        | Command::Check(_)
        | Command::Account(_)
        | Command::Admin(_)
        | Command::Stats(_)
        | Command::Purge(_)
        | Command::RotateKey(_)
        | Command::Quarantine(_)) => Ok(espmail::ops::run(cmd)?),
        Command::Talk(args) => {
            let tls = args.tls || args.verify.is_set();
            let mut opts = espmail::talk::TalkOptions::new(args.server, &args.name, args.password)?;
            if tls {
                opts = opts.with_tls(args.verify.verify());
            }
            let rt = runtime()?;
            // Ok is an orderly end (exit 0): the player left, or the server said why.
            rt.block_on(espmail::talk::run(opts))?;
            Ok(())
        }
        Command::Tunnel(args) => {
            let rt = runtime()?;
            rt.block_on(espmail::tunnel::run(tunnel_options(args)))?;
            Ok(())
        }
    }
}

/// The tunnel's command line as the library's options (the library does not see `cli`).
fn tunnel_options(args: TunnelArgs) -> espmail::tunnel::TunnelOptions {
    espmail::tunnel::TunnelOptions {
        server: args.server,
        listen: args.listen,
        verify: args.verify.verify(),
        connect_timeout: std::time::Duration::from_secs(args.connect_timeout),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")
}

/// The config file found in the search order (`--config` / `ESPMAIL_CONFIG`, else
/// `/etc/espmail/espmail.toml` when it exists, else none), with the command-line values on
/// top; and where it came from, to be logged.
fn load_config(
    data: &DataArgs,
    listen: Option<std::net::SocketAddr>,
) -> Result<(Config, ConfigSource)> {
    let source = ops::config_source(data);
    let overrides = Overrides {
        listen,
        data_dir: data.data_dir.clone(),
    };
    let config = Config::load(source.path(), &overrides)?;
    Ok((config, source))
}

#[allow(clippy::print_stderr)] // the keyfile warning must reach the operator's console
fn warn_new_keyfile(path: &Path) {
    eprintln!(
        "espmail: WARNING: created a new keyfile at {}.\n\
         espmail: WARNING: BACK IT UP NOW, SEPARATELY from the database. Without it, \
         waiting ESP Mail cannot be read by anyone, ever.",
        path.display()
    );
}

/// At every start, while it is true (issue 10 M6, L5): a keyfile inside the data
/// directory (a backup of the directory then holds key and mail together), and a data
/// directory others may read (left as the operator made it, but said).
fn warn_about_layout(config: &Config) {
    if config.data.keyfile_inside_data_dir() {
        tracing::warn!(
            keyfile = %config.data.keyfile_path().display(),
            data_dir = %config.data.dir.display(),
            "the keyfile is inside the data directory, so a backup of the directory holds the \
             key together with the mail it opens; move the keyfile out (e.g. to \
             /etc/espmail/keyfile, mode 0600) and set [data] keyfile to its path"
        );
    }
    match espmail::private_dir::open_to_others(&config.data.dir) {
        Ok(Some(mode)) => tracing::warn!(
            data_dir = %config.data.dir.display(),
            mode = %format_args!("{mode:o}"),
            "the data directory may be read by other users; run `chmod 700` on it unless \
             that is meant"
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(data_dir = %config.data.dir.display(), error = %e, "cannot read the data directory's mode")
        }
    }
}

#[allow(clippy::print_stderr)] // the listening line is part of the product (ESPMAIL.md §5)
fn serve(args: ServeArgs) -> Result<()> {
    let (mut config, source) = load_config(&args.data, args.listen)?;
    // -d/-q, else the file's level, else RUST_LOG, else info.
    let flag = (args.debug.then_some("debug")).or(args.quiet.then_some("warn"));
    let rust_log = std::env::var("RUST_LOG").ok();
    let level = match flag {
        Some(level) => level.to_owned(),
        None => config.logging.starting_level(rust_log.as_deref())?,
    };
    config.logging.level = Some(level);
    // Absolute from here on: what is logged and opened does not depend on the cwd.
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let relative = config.make_paths_absolute(&cwd);
    let control =
        log_redact::init(&config.logging.log_options()).context("cannot set up logging")?;
    supervisor::warn_relative_paths(&relative, &cwd);
    // Read before anything is bound or opened: a trusted front end without its secret
    // would be refused at every login.
    let front_end_secret = ops::secret::front_end_secret(&config)?;
    // Bind first: a port in use is refused before any data is opened or created.
    let std_listener = espmail::listen::bind(config.server.listen)?;
    let tls = tls_listener(&config)?;
    // The data directory, the keyfile (made only for a fresh database: never beside
    // existing mail), the store's writer and the accounts, all through the vault's one
    // start-up path.
    let paths = ops::vault_paths(&config);
    let Served {
        mail,
        accounts,
        new_keyfile,
    } = paths.serve(&ops::mail_limits(&config))?;
    if new_keyfile {
        warn_new_keyfile(&paths.keyfile);
    }
    let accounts = AccountsHandle::new(
        accounts.with_min_password_len(config.auth.min_password_len),
        config.auth.hash_threads_in_effect(),
        ThrottleLimits::default(),
    )?;
    tracing::info!("config from {source}");
    for line in config.summary().lines() {
        tracing::info!("config {line}");
    }
    warn_about_layout(&config);
    let deps = Arc::new(Deps {
        settings: Settings::from_config(&config),
        registry: Arc::new(Registry::new()),
        accounts,
        auth_mode: server::auth_mode(&config, front_end_secret),
        mail: mail.clone(),
        mail_rate: MailRate::new(
            usize::try_from(config.mail.send_rate_per_minute).unwrap_or(usize::MAX),
        ),
        debug: Some(control.subscribe()),
        connections: AtomicUsize::new(0),
        guards: server::Guards::from_config(&config),
    });
    let admin_path = config.admin_socket_path();
    let admin_socket = admin::AdminSocket::bind(&admin_path)?;

    let reread_level = level_reader(source.path().map(Path::to_path_buf), rust_log);

    let rt = runtime()?;
    rt.block_on(async move {
        let listener = TcpListener::from_std(std_listener).context("listening socket")?;
        let local = listener.local_addr().context("listening socket")?;
        let shutdown = CancellationToken::new();
        spawn_signal_watch(shutdown.clone())?;
        let (tls, tls_local, tls_reload) = match tls {
            Some(t) => {
                let (listener, local, reload) = start_tls(t, &config, &shutdown)?;
                (Some(listener), Some(local), Some(tokio::spawn(reload)))
            }
            None => (None, None, None),
        };
        // Installed before the listening line, so a SIGHUP sent once the operator (or a
        // test) sees that line never meets the default action (terminate).
        let sighup = log_redact::reload_on_sighup(control.clone(), reread_level, shutdown.clone())
            .context("cannot watch SIGHUP")?;
        let sighup_task = tokio::spawn(sighup);
        let admin_task = tokio::spawn(admin_socket.serve(
            control.clone(),
            Arc::new(ServerStats(deps.clone())),
            shutdown.clone(),
        ));
        let purge_task =
            mail.spawn_purge_task(std::time::Duration::from_secs(3600), shutdown.clone());
        // The plain line first, unchanged (tests, scripts and CI wait for it), then the TLS
        // one; READY=1 once both are printed: both sockets accept from here on.
        eprintln!("espmail listening on {local}");
        if let Some(tls_local) = tls_local {
            eprintln!("espmail listening for TLS on {tls_local}");
        }
        supervisor::notify_ready(local, tls_local);
        let stopping_task = tokio::spawn(supervisor::notify_stopping_on(shutdown.clone()));
        let result = server::run(listener, tls, deps, shutdown.clone()).await;
        shutdown.cancel();
        // Every session has finished (their saves and deletes included); now the writer
        // commits whatever is still queued and stops.
        if let Err(e) = mail.shutdown().await {
            tracing::error!(error = %e, "ESP Mail store did not shut down cleanly");
        }
        let _ = admin_task.await;
        let _ = purge_task.await;
        let _ = sighup_task.await;
        if let Some(task) = tls_reload {
            let _ = task.await;
        }
        let _ = stopping_task.await;
        result?;
        tracing::info!("shut down cleanly");
        Ok(())
    })
}

/// The TLS listener's socket and certificate, when `[tls] listen` is set: bound with the
/// same worded refusals as the plain one, and a pair that cannot be used refuses the
/// start (the file and what is wrong, in words).
fn tls_listener(
    config: &Config,
) -> Result<Option<(std::net::TcpListener, Arc<ReloadableAcceptor>, CertPaths)>> {
    let (Some(addr), Some(cert), Some(key)) =
        (config.tls.listen, &config.tls.cert, &config.tls.key)
    else {
        return Ok(None); // the config's check guarantees cert and key with listen
    };
    let listener = espmail::listen::bind_for(addr, Listener::Tls)?;
    let paths = CertPaths {
        cert: cert.clone(),
        key: key.clone(),
    };
    let acceptor = ReloadableAcceptor::load(&paths).context("cannot start the TLS listener")?;
    Ok(Some((listener, Arc::new(acceptor), paths)))
}

/// The TLS listener in the runtime: its socket, its SIGHUP reload (installed now, before
/// the listening lines), and its address.
fn start_tls(
    (std_listener, acceptor, paths): (std::net::TcpListener, Arc<ReloadableAcceptor>, CertPaths),
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<(
    server::TlsListener,
    std::net::SocketAddr,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    let listener = TcpListener::from_std(std_listener).context("TLS listening socket")?;
    let local = listener.local_addr().context("TLS listening socket")?;
    server::log_loaded(&acceptor);
    let reload = server::reload_on_sighup(acceptor.clone(), paths, shutdown.clone())
        .context("cannot watch SIGHUP")?;
    let tls = server::TlsListener {
        listener,
        acceptor,
        handshake_timeout: std::time::Duration::from_secs(config.tls.handshake_timeout_secs),
    };
    Ok((tls, local, reload))
}

/// What SIGHUP re-reads: `[logging] level` from the config file read at start (or, when
/// the file sets none, `RUST_LOG` as it was at start). The `--debug`/`--quiet` flags set
/// only the starting level (their help says "start with"), so a SIGHUP puts the file's
/// level in force. Without a config file there is nothing to re-read: the reload is
/// refused with a reason and the filter in effect stays.
fn level_reader(
    config: Option<std::path::PathBuf>,
    rust_log: Option<String>,
) -> impl Fn() -> std::result::Result<String, String> + Send + 'static {
    move || match &config {
        Some(path) => Config::read(path)
            .and_then(|c| c.logging.starting_level(rust_log.as_deref()))
            .map_err(|e| e.to_string()),
        None => Err(
            "the server was started without --config (nor ESPMAIL_CONFIG, nor \
             /etc/espmail/espmail.toml): there is no file to re-read (use `espmail admin \
             debug on|off` instead)"
                .to_owned(),
        ),
    }
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
