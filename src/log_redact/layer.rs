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
//! 0600 (its directory, when missing, 0700) and appended to. The file is a [`LogFile`],
//! which SIGHUP reopens at the same path, so logrotate can move it away and signal (see
//! [`super::control::reload_on_sighup`]). No ANSI colours: lines must stay greppable, in
//! files and in the canary tests that search them.
//!
//! May touch: stderr, the log file and its directory, the global default subscriber (only
//! in `init*`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

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
    let file = opts.file.as_deref().map(LogFile::open).transpose()?;
    let writer = match &file {
        Some(file) => BoxMakeWriter::new(io::stderr.and(file.clone())),
        None => BoxMakeWriter::new(io::stderr),
    };
    let control = init_with_writer(&opts.level, writer)?;
    if let Some(file) = file {
        control.attach_log_file(file);
    }
    Ok(control)
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
/// server's user only. A file that exists with wider permissions is narrowed to 0600. A
/// missing directory is created with mode 0700, as the data directory is; an existing
/// one is left as it is (it may be a shared `/var/log`).
pub fn open_log_file(path: &Path) -> Result<File, LogError> {
    let err = |source: io::Error| LogError::LogFile {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_dir::create(dir).map_err(err)?;
    }
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

/// The log file, as a [`MakeWriter`] that [`LogFile::reopen`] points at a freshly opened
/// file at the same path: logrotate moves the file away, sends SIGHUP, and the next line
/// goes to a new file (mode 0600) where the old one was. Clones share the file.
#[derive(Clone)]
pub struct LogFile {
    inner: Arc<LogFileInner>,
}

struct LogFileInner {
    path: PathBuf,
    /// The open file. Each event takes a clone of the `Arc` (a read lock held for that
    /// clone only), so a reopen never waits for a slow write, and a write in progress
    /// finishes on the file it started on.
    current: RwLock<Arc<File>>,
}

impl LogFile {
    /// Opens the file as [`open_log_file`] does.
    pub fn open(path: &Path) -> Result<LogFile, LogError> {
        Ok(LogFile {
            inner: Arc::new(LogFileInner {
                path: path.to_owned(),
                current: RwLock::new(Arc::new(open_log_file(path)?)),
            }),
        })
    }

    /// The configured path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Opens the path again (creating the file, and its directory, if they were moved
    /// away) and writes there from now on. On failure, the old file stays in use.
    pub fn reopen(&self) -> Result<(), LogError> {
        let fresh = Arc::new(open_log_file(&self.inner.path)?);
        // An Arc<File> cannot be left half-replaced by a panic elsewhere.
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    fn current(&self) -> Arc<File> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile")
            .field("path", &self.inner.path)
            .finish()
    }
}

/// One event's writer: the file that was current when the event began.
#[derive(Debug)]
pub struct LogFileWriter(Arc<File>);

impl io::Write for LogFileWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        (&*self.0).write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

impl<'w> MakeWriter<'w> for LogFile {
    type Writer = LogFileWriter;

    fn make_writer(&'w self) -> LogFileWriter {
        LogFileWriter(self.current())
    }
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
    fn a_missing_log_directory_is_created_0700() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/espmail/espmail.log");
        open_log_file(&path).unwrap();
        for d in [dir.path().join("logs"), dir.path().join("logs/espmail")] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        // An existing directory keeps its mode.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        open_log_file(&shared.join("x.log")).unwrap();
        let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }

    #[test]
    fn reopen_writes_to_a_new_file_where_the_old_one_was_moved_from() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("espmail.log");
        let file = LogFile::open(&path).unwrap();
        file.make_writer().write_all(b"before\n").unwrap();
        let rotated = dir.path().join("espmail.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        file.make_writer().write_all(b"still old\n").unwrap();
        file.reopen().unwrap();
        file.make_writer().write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read(&rotated).unwrap(), b"before\nstill old\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"after\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A reopen that fails keeps the old file in use.
        let blocked = tempfile::tempdir().unwrap();
        let inside = blocked.path().join("d/espmail.log");
        let file = LogFile::open(&inside).unwrap();
        std::fs::remove_file(&inside).unwrap();
        std::fs::remove_dir(blocked.path().join("d")).unwrap();
        std::fs::write(blocked.path().join("d"), b"a file where the directory was").unwrap();
        assert!(file.reopen().is_err());
        file.make_writer().write_all(b"kept\n").unwrap();
    }

    #[test]
    fn log_file_error_names_the_path() {
        // The "directory" is a file: neither it nor the log can be made.
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("plain-file");
        std::fs::write(&not_a_dir, b"").unwrap();
        let path = not_a_dir.join("x.log");
        let err = open_log_file(&path).unwrap_err();
        assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
    }
}
