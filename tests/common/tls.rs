//! TLS pieces for the tests: certificates made with the library, a TLS front built with
//! the library's acceptor (it terminates TLS and forwards the plain bytes to a real
//! `espmail serve`, or echoes them), a plain listener that records every byte and never
//! answers, and the real `espmail tunnel` binary as a child process.
//!
//! The front and the recorder run on their own threads and runtimes, so a test may wait
//! for them (bounded, on a condition) from anywhere without stalling them.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use espmail::tls::{
    accept, generate_self_signed_between, write_new_pair, CertPaths, Fingerprint,
    ReloadableAcceptor,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Captured, TestServer, WAIT};

/// A certificate + key on disk and the certificate's fingerprint.
pub struct Pair {
    pub paths: CertPaths,
    pub fingerprint: Fingerprint,
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A self-signed pair for `host`, valid from an hour ago for 30 days.
pub fn make_pair(dir: &Path, name: &str, host: &str) -> Pair {
    let now = now_unix();
    make_pair_between(dir, name, host, now - 3600, now + 30 * 86_400)
}

/// A self-signed pair for `host` with the given validity (Unix seconds).
pub fn make_pair_between(dir: &Path, name: &str, host: &str, from: i64, to: i64) -> Pair {
    let made = generate_self_signed_between(host, from, to).unwrap();
    let paths = CertPaths {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    write_new_pair(&paths, &made.cert_pem, &made.key_pem).unwrap();
    Pair {
        paths,
        fingerprint: made.fingerprint,
    }
}

/// The `[tls]` section of a server config: a TLS listener on 127.0.0.1:0 with `pair`,
/// then `more` (other `[tls]` keys, one a line).
pub fn tls_section(pair: &Pair, more: &str) -> String {
    format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n{more}",
        pair.paths.cert, pair.paths.key
    )
}

/// A real `espmail serve` with its TLS listener on (`pair`), `toml` for the other
/// sections and `tls_more` for more `[tls]` keys; [`TestServer::tls_addr`] says where.
pub fn start_tls_server(pair: &Pair, toml: &str, tls_more: &str, extra: &[&str]) -> TestServer {
    let config = format!("{toml}\n{}", tls_section(pair, tls_more));
    TestServer::start_with_config(&config, extra)
}

/// A listening socket on 127.0.0.1 at a free port, ready for tokio, and its address.
fn loopback_listener() -> (std::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A future run on its own thread and current-thread runtime until dropped.
struct Background {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn spawn<F: Future<Output = ()> + Send + 'static>(work: F) -> Background {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                tokio::select! {
                    _ = stopped => {}
                    _ = work => {}
                }
            });
            // Dropping the runtime ends the connection tasks it still runs.
        });
        Background {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Counters shared with a background server, with a bell rung on each change.
pub struct Watched<T> {
    state: Mutex<T>,
    bell: Condvar,
}

impl<T: Clone + Default> Watched<T> {
    fn new() -> Arc<Watched<T>> {
        Arc::new(Watched {
            state: Mutex::new(T::default()),
            bell: Condvar::new(),
        })
    }

    fn update(&self, f: impl FnOnce(&mut T)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.bell.notify_all();
    }

    pub fn now(&self) -> T {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Wait (bounded) until `done` holds; returns the state then.
    pub fn wait_until(&self, what: &str, done: impl Fn(&T) -> bool) -> T {
        let deadline = Instant::now() + WAIT;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if done(&s) {
                return s.clone();
            }
            let now = Instant::now();
            assert!(now < deadline, "timed out waiting for {what}");
            s = self.bell.wait_timeout(s, deadline - now).unwrap().0;
        }
    }
}

/// What the TLS front saw.
#[derive(Debug, Clone, Default)]
pub struct FrontCounts {
    /// Handshakes completed.
    pub handshakes: usize,
    /// Handshakes that failed, with the reason.
    pub failures: Vec<String>,
    /// Plain connections opened to the server behind.
    pub forwarded: usize,
    /// Relays that have ended (both sides closed, or an error).
    pub done: usize,
    /// Plain bytes that came out of TLS towards the server, over relays that ended cleanly.
    pub bytes_up: u64,
}

/// Where the front sends what comes out of TLS.
#[derive(Debug, Clone, Copy)]
pub enum Behind {
    /// To this plain listener (a real `espmail serve`, or a [`Recorder`]).
    Forward(SocketAddr),
    /// Straight back.
    Echo,
}

/// A TLS listener on 127.0.0.1:0 built with the library's acceptor: it stands in for the
/// server's TLS listener until that is wired into `serve`.
pub struct TlsFront {
    pub addr: SocketAddr,
    /// The library's reloadable acceptor (none for [`TlsFront::start_unchecked`]).
    pub acceptor: Option<Arc<ReloadableAcceptor>>,
    pub seen: Arc<Watched<FrontCounts>>,
    _bg: Background,
}

impl TlsFront {
    pub fn start(paths: &CertPaths, behind: Behind) -> TlsFront {
        let acceptor = Arc::new(ReloadableAcceptor::load(paths).unwrap());
        let holder = acceptor.clone();
        let mut front =
            TlsFront::serve(Arc::new(move || holder.current().acceptor.clone()), behind);
        front.acceptor = Some(acceptor);
        front
    }

    /// A front with a pair the library would refuse to load (an expired certificate):
    /// plays a server whose certificate ran out while it was running.
    pub fn start_unchecked(paths: &CertPaths, behind: Behind) -> TlsFront {
        use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
        b.set_certificate_chain_file(&paths.cert).unwrap();
        b.set_private_key_file(&paths.key, SslFiletype::PEM)
            .unwrap();
        let acceptor = b.build();
        TlsFront::serve(Arc::new(move || acceptor.clone()), behind)
    }

    fn serve(
        current: Arc<dyn Fn() -> openssl::ssl::SslAcceptor + Send + Sync>,
        behind: Behind,
    ) -> TlsFront {
        let seen = Watched::<FrontCounts>::new();
        let (std_listener, addr) = loopback_listener();
        let (acc, s) = (current, seen.clone());
        let bg = Background::spawn(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acc, s) = (acc.clone(), s.clone());
                tokio::spawn(async move {
                    let acceptor = acc();
                    let accepted = accept(&acceptor, tcp, Duration::from_secs(10));
                    let mut tls = match accepted.await {
                        Ok(tls) => tls,
                        Err(e) => return s.update(|c| c.failures.push(e.to_string())),
                    };
                    s.update(|c| c.handshakes += 1);
                    match behind {
                        Behind::Forward(to) => {
                            let mut plain = TcpStream::connect(to).await.unwrap();
                            s.update(|c| c.forwarded += 1);
                            let relayed = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                            s.update(|c| {
                                c.done += 1;
                                c.bytes_up += relayed.map_or(0, |(up, _)| up);
                            });
                        }
                        Behind::Echo => {
                            let (mut r, mut w) = tokio::io::split(tls);
                            let echoed = tokio::io::copy(&mut r, &mut w).await;
                            let _ = w.shutdown().await;
                            s.update(|c| {
                                c.done += 1;
                                c.bytes_up += echoed.unwrap_or(0);
                            });
                        }
                    }
                });
            }
        });
        TlsFront {
            addr,
            acceptor: None,
            seen,
            _bg: bg,
        }
    }
}

/// What a [`Recorder`] received.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub connections: usize,
    pub bytes: Vec<u8>,
}

/// A plain TCP listener that records every byte it receives and never says anything:
/// a server that stalls the TLS handshake, or the plain side that must stay empty.
pub struct Recorder {
    pub addr: SocketAddr,
    pub seen: Arc<Watched<Recorded>>,
    _bg: Background,
}

impl Recorder {
    pub fn start() -> Recorder {
        let seen = Watched::<Recorded>::new();
        let (std_listener, addr) = loopback_listener();
        let s = seen.clone();
        let bg = Background::spawn(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    continue;
                };
                s.update(|r| r.connections += 1);
                let s = s.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                        s.update(|r| r.bytes.extend_from_slice(&buf[..n]));
                    }
                });
            }
        });
        Recorder {
            addr,
            seen,
            _bg: bg,
        }
    }
}

/// What a [`Relay`] carried, one entry per connection.
#[derive(Debug, Clone, Default)]
pub struct Relayed {
    /// Bytes towards the server, per connection.
    pub up: Vec<Vec<u8>>,
    /// Bytes from the server, per connection.
    pub down: Vec<Vec<u8>>,
    /// Connections whose both directions have ended.
    pub done: usize,
}

impl Relayed {
    /// Every byte each way, connection after connection (for searching).
    pub fn all(&self) -> Vec<&[u8]> {
        self.up
            .iter()
            .chain(&self.down)
            .map(Vec::as_slice)
            .collect()
    }
}

/// A plain TCP relay on 127.0.0.1:0 that forwards to `to` and records every byte each way:
/// what anyone on the network between the tunnel and the server would see.
pub struct Relay {
    pub addr: SocketAddr,
    pub seen: Arc<Watched<Relayed>>,
    _bg: Background,
}

impl Relay {
    pub fn start(to: SocketAddr) -> Relay {
        let seen = Watched::<Relayed>::new();
        let (std_listener, addr) = loopback_listener();
        let s = seen.clone();
        let bg = Background::spawn(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(outbound) = TcpStream::connect(to).await else {
                    continue;
                };
                let mut index = 0;
                s.update(|r| {
                    index = r.up.len();
                    r.up.push(Vec::new());
                    r.down.push(Vec::new());
                });
                let (in_r, in_w) = inbound.into_split();
                let (out_r, out_w) = outbound.into_split();
                let (s_up, s_down) = (s.clone(), s.clone());
                let up = pump(in_r, out_w, move |b| {
                    s_up.update(|r| r.up[index].extend_from_slice(b))
                });
                let down = pump(out_r, in_w, move |b| {
                    s_down.update(|r| r.down[index].extend_from_slice(b))
                });
                let s = s.clone();
                tokio::spawn(async move {
                    tokio::join!(up, down);
                    s.update(|r| r.done += 1);
                });
            }
        });
        Relay {
            addr,
            seen,
            _bg: bg,
        }
    }
}

/// Copies `from` to `to`, showing each chunk to `record`, then passes the close on.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    record: impl Fn(&[u8]),
) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        record(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// A running `espmail tunnel SERVER --listen 127.0.0.1:0 …`. Drop kills it.
pub struct TestTunnel {
    child: Option<Child>,
    pub addr: SocketAddr,
    captured: Arc<Captured>,
}

impl TestTunnel {
    /// Starts the tunnel and waits (bounded) for its ready line.
    pub fn start(server: &str, extra: &[&str]) -> TestTunnel {
        let mut child = Command::new(env!("CARGO_BIN_EXE_espmail"))
            .args(["tunnel", server, "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start espmail tunnel");
        let captured = Captured::spawn(child.stderr.take().unwrap());
        let mut tunnel = TestTunnel {
            child: Some(child),
            addr: "0.0.0.0:0".parse().unwrap(),
            captured,
        };
        let line = tunnel.wait_for_line("espmail tunnel listening on ");
        let rest = line.split("espmail tunnel listening on ").nth(1).unwrap();
        let (addr, to) = rest.trim().split_once(" -> ").unwrap();
        assert_eq!(to, server, "the ready line names the server");
        tunnel.addr = addr.parse().unwrap();
        tunnel
    }

    /// The tunnel's address as `HOST:PORT` for the protocol client.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Everything the tunnel printed so far.
    pub fn log(&self) -> String {
        self.captured.text()
    }

    /// Wait (bounded) until a line contains `needle`; return that line.
    pub fn wait_for_line(&self, needle: &str) -> String {
        self.captured.wait_until(
            |log| {
                log.text
                    .lines()
                    .find(|l| l.contains(needle))
                    .map(str::to_string)
            },
            |text| format!("tunnel never printed {needle:?}; it printed:\n{text}"),
        )
    }

    /// Wait (bounded) until `n` lines contain `needle`.
    pub fn wait_for_lines(&self, needle: &str, n: usize) {
        self.captured.wait_until(
            |log| (log.text.lines().filter(|l| l.contains(needle)).count() >= n).then_some(()),
            |text| format!("tunnel printed {needle:?} fewer than {n} times:\n{text}"),
        )
    }
}

impl Drop for TestTunnel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
