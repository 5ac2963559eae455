//! [`LogControl`]: the one handle that changes what is logged while the server runs.
//!
//! It owns the reload handle of the top-level filter (see [`super::layer`]), so every
//! switch, from the admin socket (`debug on|off`), from SIGHUP (re-read the level from the
//! config file) or from code, goes through the same place, is logged at info with who
//! asked, and is announced on a watch channel: the world subscribes to it and tells every
//! connected avatar [`DEBUG_NOTICE`] when debug logging goes on.
//!
//! It also holds the log file, if there is one, so that SIGHUP can reopen it (logrotate
//! moves the file away, then signals).
//!
//! May touch: the tracing filter and, on SIGHUP, the log file's path. Nothing else.

use std::any::Any;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::watch;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::{reload, EnvFilter, Registry};

use super::layer::LogFile;
use super::LogError;

/// What every avatar is told when debug logging is on: at login after HERE_I_AM, and when
/// it is switched on while they are connected (ESPMAIL.md §2). Product words: exact.
pub const DEBUG_NOTICE: &str = "Notice: debug logging is on. ESP text is never logged.";

/// The filter `debug on` installs when the configured level is quieter than debug.
pub const DEBUG_FILTER: &str = "debug";

/// The filter `debug off` falls back to when the configured level itself is debug or
/// more verbose (otherwise it returns to the configured level).
pub const QUIET_FILTER: &str = "info";

/// The reload handle of the one top-level filter.
pub(crate) type FilterHandle = reload::Handle<EnvFilter, Registry>;

/// Changes the log filter of the running process. Cheap to clone; every clone controls
/// the same filter.
#[derive(Clone)]
pub struct LogControl {
    inner: Arc<Inner>,
}

struct Inner {
    handle: FilterHandle,
    state: Mutex<State>,
    debug_tx: watch::Sender<bool>,
    /// The log file, when logs also go to one: SIGHUP reopens it.
    log_file: OnceLock<LogFile>,
    /// For [`LogControl::standalone`]: keeps the reloadable layer alive, since a handle
    /// whose layer is gone cannot reload.
    _layer: Option<Box<dyn Any + Send + Sync>>,
}

struct State {
    /// The level from the config file (or the command line): what `debug off` and
    /// SIGHUP return to.
    base: String,
    /// The filter in effect.
    current: String,
}

/// Whether debug logging is on, and the filter in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStatus {
    /// True when events at debug level (or more verbose) can be logged for any target:
    /// then players must be told.
    pub debug: bool,
    /// The filter in effect, e.g. `info` or `debug`.
    pub filter: String,
}

impl fmt::Display for LogStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "debug logging is {} (filter \"{}\")",
            if self.debug { "on" } else { "off" },
            self.filter
        )
    }
}

impl LogControl {
    pub(crate) fn new(
        handle: FilterHandle,
        directive: &str,
        layer: Option<Box<dyn Any + Send + Sync>>,
    ) -> Result<LogControl, LogError> {
        let filter = parse_filter(directive)?;
        let (debug_tx, _) = watch::channel(filter_is_debug(&filter));
        Ok(LogControl {
            inner: Arc::new(Inner {
                handle,
                state: Mutex::new(State {
                    base: directive.to_owned(),
                    current: directive.to_owned(),
                }),
                debug_tx,
                log_file: OnceLock::new(),
                _layer: layer,
            }),
        })
    }

    /// A control whose filter is not installed in any subscriber: switching works and
    /// notifies subscribers, but filters nothing. For tests of code that reacts to the
    /// switch (the world's notice, the admin socket) without a global subscriber.
    pub fn standalone(directive: &str) -> Result<LogControl, LogError> {
        let (layer, handle) = reload::Layer::<EnvFilter, Registry>::new(parse_filter(directive)?);
        LogControl::new(handle, directive, Some(Box::new(layer)))
    }

    /// Switches debug logging on or off; `who` names the requester in the info log line
    /// (e.g. `uid=1000`). Returns the new status.
    pub fn set_debug(&self, on: bool, who: &str) -> Result<LogStatus, LogError> {
        let mut state = self.lock();
        let base_is_debug = filter_is_debug(&parse_filter(&state.base)?);
        let directive = match (on, base_is_debug) {
            (true, true) | (false, false) => state.base.clone(),
            (true, false) => DEBUG_FILTER.to_owned(),
            (false, true) => QUIET_FILTER.to_owned(),
        };
        let action = if on { "debug on" } else { "debug off" };
        self.install(&mut state, directive, who, action)
    }

    /// Installs any filter (same syntax as the config's `logging.level`).
    pub fn set_filter(&self, directive: &str, who: &str) -> Result<LogStatus, LogError> {
        let mut state = self.lock();
        self.install(&mut state, directive.to_owned(), who, "set filter")
    }

    /// Makes `level` the configured level (e.g. re-read from the config file on SIGHUP)
    /// and installs it, ending any runtime `debug on`.
    pub fn reload_from_config(&self, level: &str, who: &str) -> Result<LogStatus, LogError> {
        let mut state = self.lock();
        // Check before changing `base`, so a bad file leaves everything as it was.
        parse_filter(level)?;
        let status = self.install(&mut state, level.to_owned(), who, "reload from config")?;
        state.base = level.to_owned();
        Ok(status)
    }

    /// Makes `file` the log file that [`LogControl::reopen_log_file`] reopens. Only the
    /// first call counts: a process has one log file.
    pub(crate) fn attach_log_file(&self, file: LogFile) {
        let _ = self.inner.log_file.set(file);
    }

    /// Reopens the log file at its configured path (after logrotate moved it away), and
    /// returns that path; `Ok(None)` when logs go to stderr only. On failure the old file
    /// stays in use.
    pub fn reopen_log_file(&self) -> Result<Option<PathBuf>, LogError> {
        match self.inner.log_file.get() {
            Some(file) => {
                file.reopen()?;
                Ok(Some(file.path().to_owned()))
            }
            None => Ok(None),
        }
    }

    /// The status now.
    pub fn status(&self) -> LogStatus {
        let state = self.lock();
        LogStatus {
            debug: *self.inner.debug_tx.borrow(),
            filter: state.current.clone(),
        }
    }

    /// Whether debug logging is on now (a login checks this to decide on the notice).
    pub fn is_debug(&self) -> bool {
        *self.inner.debug_tx.borrow()
    }

    /// A receiver that sees `true` each time debug logging goes on and `false` when it
    /// goes off (only on changes). The world uses it to tell connected avatars.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.debug_tx.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two strings, always left consistent; a panic elsewhere while the
        // lock was held cannot have broken it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn install(
        &self,
        state: &mut State,
        directive: String,
        who: &str,
        action: &'static str,
    ) -> Result<LogStatus, LogError> {
        let filter = parse_filter(&directive)?;
        let is_on = filter_is_debug(&filter);
        let was_debug = *self.inner.debug_tx.borrow();
        // Going quieter: say so while the line can still be seen at the old level.
        if !is_on {
            tracing::info!(who, action, filter = %directive, debug = is_on, "log filter changed");
        }
        self.inner
            .handle
            .reload(filter)
            .map_err(|e| LogError::Reload(e.to_string()))?;
        state.current = directive.clone();
        if is_on {
            tracing::info!(who, action, filter = %directive, debug = is_on, "log filter changed");
        }
        if is_on != was_debug {
            self.inner.debug_tx.send_replace(is_on);
        }
        Ok(LogStatus {
            debug: is_on,
            filter: directive,
        })
    }
}

impl fmt::Debug for LogControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.status();
        f.debug_struct("LogControl")
            .field("debug", &status.debug)
            .field("filter", &status.filter)
            .finish()
    }
}

/// On every SIGHUP, until `shutdown` is cancelled: reopens the log file (if there is one)
/// at its path, so logrotate's move-then-signal starts a new file; then re-reads the log
/// level and installs it through `control` (ending any runtime `debug on`). `read_level`
/// reads the level from the config file; when it fails (a typo in the file), the error is
/// logged and the filter in effect is kept. A log file that cannot be reopened is logged
/// too, and the old one stays in use.
///
/// The signal handler is installed when this function is called, before the returned
/// future first runs, so a SIGHUP sent right after cannot kill the process. Call it
/// inside a tokio runtime and spawn the future.
pub fn reload_on_sighup<F, E>(
    control: LogControl,
    read_level: F,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static>
where
    F: Fn() -> Result<String, E> + Send + 'static,
    E: fmt::Display,
{
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            match control.reopen_log_file() {
                Ok(Some(path)) => {
                    tracing::info!(path = %path.display(), "SIGHUP: log file reopened")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "SIGHUP: log file not reopened; still writing to the old one")
                }
            }
            let level = match read_level() {
                Ok(level) => level,
                Err(e) => {
                    tracing::warn!(error = %e, "SIGHUP: config not re-read; log filter unchanged");
                    continue;
                }
            };
            if let Err(e) = control.reload_from_config(&level, "SIGHUP") {
                tracing::warn!(error = %e, "SIGHUP: log filter unchanged");
            }
        }
    })
}

/// Whether a filter lets any debug (or trace) event through. A filter with no hint is
/// treated as verbose: when unsure, players are told.
fn filter_is_debug(filter: &EnvFilter) -> bool {
    filter
        .max_level_hint()
        .map_or(true, |max| max >= LevelFilter::DEBUG)
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a log filter more strictly than `EnvFilter` does: there, a bare word that is
/// not a level (`inof`) names a *target*, which would quietly switch logging off for
/// everything else. Here every directive must end in a level.
pub fn check_filter(directive: &str) -> Result<(), LogError> {
    parse_filter(directive).map(|_| ())
}

pub(crate) fn parse_filter(directive: &str) -> Result<EnvFilter, LogError> {
    let bad = |reason: String| LogError::BadFilter {
        directive: directive.to_owned(),
        reason,
    };
    if directive.trim().is_empty() {
        return Err(bad("it is empty".to_owned()));
    }
    for part in directive
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let level = match part.rsplit_once('=') {
            Some((target, level)) if !target.trim().is_empty() => level.trim(),
            Some(_) => return Err(bad(format!("`{part}` has no target before `=`"))),
            None => part,
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(bad(format!("`{level}` in `{part}` is not a level")));
        }
    }
    EnvFilter::builder()
        .parse(directive)
        .map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_on_off_from_info() {
        let c = LogControl::standalone("info").unwrap();
        let mut rx = c.subscribe();
        assert!(!c.is_debug());
        let s = c.set_debug(true, "uid=1").unwrap();
        assert_eq!(
            s,
            LogStatus {
                debug: true,
                filter: "debug".into()
            }
        );
        assert!(rx.has_changed().unwrap());
        assert!(*rx.borrow_and_update());
        assert!(c.is_debug());
        let s = c.set_debug(false, "uid=1").unwrap();
        assert_eq!(s.filter, "info");
        assert!(!*rx.borrow_and_update());
        assert_eq!(
            c.status().to_string(),
            "debug logging is off (filter \"info\")"
        );
    }

    #[test]
    fn configured_debug_level_counts_as_on_and_off_goes_to_info() {
        let c = LogControl::standalone("warn,espmail::store=debug").unwrap();
        assert!(
            c.is_debug(),
            "any debug directive means players must be told"
        );
        assert_eq!(
            c.set_debug(true, "t").unwrap().filter,
            "warn,espmail::store=debug"
        );
        let off = c.set_debug(false, "t").unwrap();
        assert_eq!(off.filter, QUIET_FILTER);
        assert!(!off.debug);
    }

    #[test]
    fn repeated_switch_does_not_notify_again() {
        let c = LogControl::standalone("info").unwrap();
        let mut rx = c.subscribe();
        c.set_debug(false, "t").unwrap();
        assert!(!rx.has_changed().unwrap());
        c.set_debug(true, "t").unwrap();
        rx.borrow_and_update();
        c.set_debug(true, "t").unwrap();
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn reload_from_config_replaces_base_and_ends_runtime_debug() {
        let c = LogControl::standalone("info").unwrap();
        c.set_debug(true, "uid=1").unwrap();
        let s = c.reload_from_config("warn", "SIGHUP").unwrap();
        assert_eq!(s.filter, "warn");
        assert!(!c.is_debug());
        // debug off now returns to the new base.
        c.set_debug(true, "t").unwrap();
        assert_eq!(c.set_debug(false, "t").unwrap().filter, "warn");
        // A bad level leaves everything as it was.
        assert!(c.reload_from_config("inof", "SIGHUP").is_err());
        assert_eq!(c.status().filter, "warn");
    }

    #[test]
    fn bad_filters_are_refused_with_reason() {
        for bad in ["", "inof", "espmail=loud", "=debug", "loud="] {
            let err = check_filter(bad).unwrap_err();
            assert!(err.to_string().contains("filter"), "{err}");
        }
        for good in ["info", "TRACE", "info,espmail::store=debug", "off"] {
            check_filter(good).unwrap();
        }
    }

    #[test]
    fn notice_is_the_product_text_and_fits_a_balloon() {
        assert_eq!(
            DEBUG_NOTICE,
            "Notice: debug logging is on. ESP text is never logged."
        );
        assert!(DEBUG_NOTICE.len() <= 114);
    }
}
