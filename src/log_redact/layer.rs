//! The tracing subscriber: one reloadable filter at the top, then a plain fmt layer.
//!
//! Why this shape: the filter that `debug on|off` changes is a `reload::Layer<EnvFilter>`
//! directly on the registry, a *global* filter. A reload wrapped around a per-layer filter
//! (`fmt::layer().with_filter(..)`) panics or is ignored on the next event
//! (tokio-rs/tracing#1629), so there is none here: the fmt layers below have no filter
//! of their own. Reloading rebuilds tracing's callsite interest cache, which is global,
//! so the change reaches every thread at once (a test in `tests/logging.rs` proves it).
//!
//! Logs go to stderr; with a log file configured, also to that file, created with mode
//! 0600 and appended to. No ANSI colours: lines must stay greppable, in files and in the
//! canary tests that search them.
//!
//! May touch: stderr, the log file, the global default subscriber (only in `init*`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::Dispatch;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use super::control::{parse_filter, FilterHandle, LogControl};
use super::LogError;

/// How to set up logging (from the config's `[logging]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// The starting filter, e.g. `info` (config `logging.level`).
    pub level: String,
    /// Also append to this file, created with mode 0600 (config `logging.file`).
    pub file: Option<PathBuf>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            level: "info".to_owned(),
            file: None,
        }
    }
}

/// Installs the process-wide subscriber: stderr, plus the log file if one is configured.
/// Returns the one [`LogControl`] of the process. Fails if a subscriber is already set.
pub fn init(opts: &LogOptions) -> Result<LogControl, LogError> {
    let writer = match &opts.file {
        Some(path) => {
            let file = Arc::new(open_log_file(path)?);
            BoxMakeWriter::new(io::stderr.and(file))
        }
        None => BoxMakeWriter::new(io::stderr),
    };
    init_with_writer(&opts.level, writer)
}

/// Installs the process-wide subscriber writing to `writer` (tests: a [`Capture`]).
pub fn init_with_writer<W>(level: &str, writer: W) -> Result<LogControl, LogError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (dispatch, control) = dispatch_with_writer(level, writer)?;
    dispatch
        .try_init()
        .map_err(|e| LogError::AlreadyInitialized(e.to_string()))?;
    Ok(control)
}

/// Builds the same subscriber as [`init`] without installing it anywhere, writing to
/// `writer`: for tests that scope it with `tracing::dispatcher::with_default`, or run a
/// server in a thread with it as default.
pub fn dispatch_with_writer<W>(level: &str, writer: W) -> Result<(Dispatch, LogControl), LogError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter, handle): (_, FilterHandle) =
        reload::Layer::<EnvFilter, Registry>::new(parse_filter(level)?);
    let subscriber = tracing_subscriber::registry()
        .with(filter) // the only reloadable piece, and it sits at the top
        .with(fmt_layer(writer));
    let control = LogControl::new(handle, level, None)?;
    Ok((Dispatch::new(subscriber), control))
}

/// The fmt layer every subscriber here uses: no colours, targets shown, no filter of
/// its own (see the module doc for why).
fn fmt_layer<S, W>(writer: W) -> fmt::Layer<S, fmt::format::DefaultFields, fmt::format::Format, W>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fmt::layer()
        .with_ansi(false)
        .with_target(true)
        .with_writer(writer)
}

/// Opens (creating if needed) a log file for appending, readable and writable by the
/// server's user only. A file that exists with wider permissions is narrowed to 0600.
pub fn open_log_file(path: &Path) -> Result<File, LogError> {
    let err = |source: io::Error| LogError::LogFile {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    let mode = file.metadata().map_err(err)?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    Ok(file)
}

/// A [`MakeWriter`] that keeps everything written in memory, for tests that must read
/// every log line (the canary tests). Clones share the buffer.
#[derive(Clone, Default)]
pub struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl Capture {
    /// An empty capture.
    pub fn new() -> Capture {
        Capture::default()
    }

    /// Everything written so far (lossy UTF-8).
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }

    /// Everything written so far, as bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.lock().clone()
    }

    /// Forgets what was written.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The first form of `secret` (see [`leak_forms`]) found in what was written, if
    /// any: what a canary test asserts is `None`.
    pub fn find_leak(&self, secret: &[u8]) -> Option<String> {
        let log = self.contents();
        let lower = log.to_lowercase();
        leak_forms(secret)
            .into_iter()
            .find(|form| log.contains(form.as_str()) || lower.contains(&form.to_lowercase()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A Vec<u8> cannot be left half-updated by a panicking writer in a way that
        // matters to a test reading it.
        self.buf.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The ways a secret could show up in a log line if some code formatted it by mistake:
/// as it is, Debug-quoted and escaped (`"…"`, `\x..`, `\u{..}`), as hex (packed or
/// spaced, either case) and as a Debug byte list (`[104, 105, …]`). Canary tests search
/// captured logs for every one of them.
pub fn leak_forms(secret: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(secret).into_owned();
    let hex: Vec<String> = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut forms = vec![
        text.clone(),
        format!("{text:?}"),
        text.escape_default().to_string(),
        text.escape_debug().to_string(),
        secret.escape_ascii().to_string(),
        hex.concat(),
        hex.join(" "),
        hex.iter().map(|h| format!("\\x{h}")).collect(),
        format!("{secret:?}"),
        format!("{:?}", secret)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    ];
    forms.retain(|f| !f.is_empty());
    forms.sort();
    forms.dedup();
    forms
}

impl io::Write for Capture {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.lock().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Capture {
    type Writer = Capture;

    fn make_writer(&'w self) -> Capture {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_changes_what_a_scoped_dispatch_writes() {
        let capture = Capture::new();
        let (dispatch, control) = dispatch_with_writer("info", capture.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::debug!(marker = "before", "hidden");
            tracing::info!(marker = "shown", "visible");
            control.set_debug(true, "uid=42").unwrap();
            tracing::debug!(marker = "during", "now visible");
            control.set_debug(false, "uid=42").unwrap();
            tracing::debug!(marker = "after", "hidden again");
        });
        let out = capture.contents();
        assert!(!out.contains("before"), "{out}");
        assert!(out.contains("marker=\"shown\""), "{out}");
        assert!(out.contains("marker=\"during\""), "{out}");
        assert!(!out.contains("after"), "{out}");
        // The switch itself is logged at info, with who asked.
        assert!(out.contains("who=\"uid=42\""), "{out}");
        assert!(out.contains("action=\"debug on\""), "{out}");
        assert!(out.contains("action=\"debug off\""), "{out}");
        assert!(!out.contains("\u{1b}["), "no ANSI colours: {out}");
    }

    #[test]
    fn find_leak_sees_every_accidental_form() {
        let secret = b"canary \"7f\" text";
        let hex: String = secret.iter().map(|b| format!("{b:02X} ")).collect();
        let mistakes = [
            String::from_utf8_lossy(secret).into_owned(),
            format!("text={:?}", String::from_utf8_lossy(secret)),
            format!("bytes={:?}", secret.to_vec()),
            format!("payload={hex}"),
            format!("raw={}", secret.escape_ascii()),
        ];
        for mistake in mistakes {
            let capture = Capture::new();
            let (dispatch, _control) = dispatch_with_writer("trace", capture.clone()).unwrap();
            tracing::dispatcher::with_default(&dispatch, || tracing::info!("{mistake}"));
            assert!(capture.find_leak(secret).is_some(), "missed: {mistake}");
        }
        let capture = Capture::new();
        let (dispatch, _control) = dispatch_with_writer("trace", capture.clone()).unwrap();
        let safe = crate::log_redact::Sensitive::new(secret.to_vec());
        tracing::dispatcher::with_default(&dispatch, || tracing::info!(text = ?safe, %safe));
        assert_eq!(capture.find_leak(secret), None, "{}", capture.contents());
        assert!(
            capture.contents().contains("len=16"),
            "{}",
            capture.contents()
        );
    }

    #[test]
    fn log_file_is_created_0600_and_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("espmail.log");
        std::fs::write(&path, b"old line\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        {
            let mut f = open_log_file(&path).unwrap();
            io::Write::write_all(&mut f, b"new line\n").unwrap();
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"old line\nnew line\n");
        let fresh = dir.path().join("fresh.log");
        open_log_file(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn log_file_error_names_the_path() {
        let err = open_log_file(Path::new("/nonexistent-dir/x.log")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.log"), "{err}");
    }
}
