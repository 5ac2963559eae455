//! `espmail-load`: a load generator. It starts `espmail serve` (the sibling binary) on a
//! temporary data directory, logs N avatars in over real Q-Link sessions on loopback, then
//! drives live ESP at a fixed rate and ESP Mail saves from many senders at once, and
//! prints what it measured: connections held, server memory per connection, live-ESP
//! round trip p50/p99 (the sender's request written -> the sender's own reply, esp=1, is
//! read; the figure), live-ESP delivery latency p50/p99 (request written -> the
//! recipient has the line), and durable ESP Mail saves per second.
//!
//! `cargo run --release --bin espmail-load -- --avatars 8000 --esp-rate 1000`
//!
//! With `--tls`, the server also opens its TLS listener (a self-signed pair made for the
//! run) and every avatar connects there, its client pinned to that certificate: the same
//! figures over TLS, and TLS logins per second (handshake, login line and entry).

#![allow(clippy::print_stdout, clippy::print_stderr)] // a benchmark's job is to report

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use espmail::talk::{front_end_login_line, Client, Event, Transport};
use espmail::tls::{generate_self_signed, write_new_pair, CertPaths, Connector, Verify};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Load generator for espmail.
#[derive(Debug, Parser)]
struct Opts {
    /// Avatars to log in.
    #[arg(long, default_value_t = 1000)]
    avatars: usize,
    /// Live ESP senders (each sends to another avatar); at most half the avatars.
    #[arg(long, default_value_t = 1000)]
    senders: usize,
    /// Live ESP lines per second, all senders together.
    #[arg(long, default_value_t = 1000)]
    esp_rate: u32,
    /// Seconds of live ESP.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Concurrent ESP Mail senders (each saves one message).
    #[arg(long, default_value_t = 1000)]
    mail_senders: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 200)]
    login_concurrency: usize,
    /// Connect every avatar to the server's TLS listener instead of the plain one.
    #[arg(long)]
    tls: bool,
}

/// A client on the plain or the TLS listener.
type Conn = Client<Box<dyn Transport>>;

/// Where the avatars connect: the plain address, or the TLS one with a pinned connector.
#[derive(Clone)]
struct Target {
    addr: String,
    tls: Option<Arc<Connector>>,
}

impl Target {
    /// `name` through the trusted front end, all the way in (over TLS when set).
    async fn enter(&self, name: &str) -> Result<Conn, Failure> {
        let mut stream: Box<dyn Transport> = match &self.tls {
            Some(connector) => Box::new(connector.connect(&self.addr).await?),
            None => Box::new(tokio::net::TcpStream::connect(&self.addr).await?),
        };
        stream
            .write_all(&front_end_login_line(name, FRONT_END_SECRET))
            .await?;
        stream.flush().await?;
        Ok(Client::from_stream(stream).into_plaza().await?)
    }
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

struct Server {
    child: Child,
    addr: String,
    /// The TLS listener's address and the certificate's pin, with `--tls`.
    tls: Option<(String, espmail::tls::Fingerprint)>,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The secret the load generator, as the trusted front end, sends in its login lines.
const FRONT_END_SECRET: &str = "espmail-load-front-end-secret";

fn start_server(tls: bool) -> Result<Server, Failure> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("espmail");
    let dir = std::env::temp_dir().join(format!("espmail-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("espmail.toml");
    // Trusted front end: the load measures the server, not scrypt. Every avatar comes from
    // 127.0.0.1, so that address is exempt from the per-address cap, as a front end would be.
    // The front end proves itself with a secret in each login line.
    let secret = dir.join("front-end.secret");
    std::fs::write(&secret, FRONT_END_SECRET)?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    let (tls_section, pin) = if tls {
        let made = generate_self_signed("localhost", 30)?;
        let paths = CertPaths {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        };
        write_new_pair(&paths, &made.cert_pem, &made.key_pem)?;
        let section = format!(
            "[tls]\nlisten = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n",
            paths.cert, paths.key
        );
        (section, Some(made.fingerprint))
    } else {
        (String::new(), None)
    };
    std::fs::write(
        &cfg,
        format!(
            "[server]\nmax_connections = 19000\nconnection_cap_exempt = [\"127.0.0.1\"]\n\
             [data]\nkeyfile = \"{}\"\n\
             [auth]\nmode = \"trusted\"\ntrusted_peers = [\"127.0.0.1\"]\n\
             trusted_secret_file = \"{}\"\n\
             [mail]\nmax_per_recipient = 50\n[logging]\nlevel = \"info\"\n{tls_section}",
            // Outside the data directory, as the README recommends (no warning at start).
            dir.join("keyfile").display(),
            secret.display()
        ),
    )?;
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("WARN") || line.contains("ERROR") || line.contains("session ended") {
                eprintln!("server: {line}");
            }
            // The plain line first, then the TLS one (when set).
            if let Some(addr) = line.strip_prefix("espmail listening for TLS on ") {
                let _ = tx.send(addr.trim().to_string());
            } else if let Some(addr) = line.strip_prefix("espmail listening on ") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(30))?;
    let tls = match pin {
        Some(pin) => Some((rx.recv_timeout(Duration::from_secs(30))?, pin)),
        None => None,
    };
    Ok(Server {
        child,
        addr,
        tls,
        dir,
    })
}

/// Resident memory of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let o = Opts::parse();
    let server = start_server(o.tls)?;
    let pid = server.child.id();
    let target = match &server.tls {
        Some((addr, pin)) => Target {
            addr: addr.clone(),
            tls: Some(Arc::new(Connector::new(
                &Verify::Pin(*pin),
                Duration::from_secs(30),
            )?)),
        },
        None => Target {
            addr: server.addr.clone(),
            tls: None,
        },
    };
    let how = if o.tls { "TLS" } else { "plain" };
    println!(
        "server pid {pid}; avatars connect to {} ({how})",
        target.addr
    );

    // Offline recipients for ESP Mail: accounts that exist but are not connected.
    let offline = (o.mail_senders / 40).max(1);
    for k in 0..offline {
        let mut c = target.enter(&format!("off{k}")).await?;
        c.quit().await?;
        c.wait_closed().await?;
    }

    let rss0 = rss_kib(pid);
    let t0 = Instant::now();
    let gate = Arc::new(Semaphore::new(o.login_concurrency));
    let mut logins = Vec::new();
    for i in 0..o.avatars {
        let gate = gate.clone();
        let target = target.clone();
        logins.push(tokio::spawn(async move {
            let _p = gate.acquire().await;
            let mut c = match target.enter(&format!("a{i}")).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("login a{i} failed: {e}");
                    return None;
                }
            };
            c.wait = Duration::from_secs(60);
            Some(c)
        }));
    }
    let mut clients = Vec::new();
    for h in logins {
        clients.push(h.await.ok().flatten());
    }
    let connected = clients.iter().filter(|c| c.is_some()).count();
    let login_secs = t0.elapsed().as_secs_f64();
    // Let the last arrivals' broadcasts settle before measuring memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kib(pid);
    let per_conn = (rss1.saturating_sub(rss0) as f64) * 1024.0 / connected.max(1) as f64;
    println!(
        "logged in {connected}/{} avatars ({how}) in {login_secs:.1} s = {:.0} logins/s; server RSS {rss0} KiB -> {rss1} KiB = {:.1} KiB per connection",
        o.avatars,
        connected as f64 / login_secs.max(f64::EPSILON),
        per_conn / 1024.0
    );

    // Live ESP: sender i -> recipient i + half.
    let half = o.avatars / 2;
    let senders = o.senders.min(half);
    let per_sender = f64::from(o.esp_rate) / senders.max(1) as f64;
    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let rtt: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for (i, slot) in clients.iter_mut().enumerate() {
        let Some(mut c) = slot.take() else { continue };
        let stop = stop.clone();
        let sent_at = sent_at.clone();
        let lat = lat.clone();
        let rtt = rtt.clone();
        let sender = i < senders;
        let target = format!("a{}", i + half);
        tasks.push(tokio::spawn(async move {
            if sender {
                if !c.speak(format!("TO:{target}").as_bytes()).await.ok()? {
                    return Some(c);
                }
                let period = Duration::from_secs_f64(1.0 / per_sender);
                let mut tick = tokio::time::interval_at(
                    tokio::time::Instant::now() + period.mul_f64((i % 97) as f64 / 97.0),
                    period,
                );
                let mut n = 0u64;
                // Replies come back in request order on the one link: a FIFO of the
                // moments each request was written pairs them up.
                let mut pending: std::collections::VecDeque<Instant> = Default::default();
                let me = c.me;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return Some(c),
                        _ = tick.tick() => {
                            let id = (i as u64) << 32 | n;
                            n += 1;
                            let at = Instant::now();
                            sent_at.lock().ok()?.insert(id, at);
                            pending.push_back(at);
                            c.send_esp(format!("t{id}").as_bytes()).await.ok()?;
                        }
                        ev = c.next_event_unbounded() => {
                            if let Event::Reply { noid, .. } = ev.ok()? {
                                if noid == me {
                                    if let Some(at) = pending.pop_front() {
                                        rtt.lock().ok()?.push(at.elapsed());
                                    }
                                }
                            }
                        }
                    }
                }
            } else {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return Some(c),
                        ev = c.next_event_unbounded() => {
                            if let Event::Talk { speaker: 0, text } = ev.ok()? {
                                let now = Instant::now();
                                if let Some(id) = text.strip_prefix(b"t").and_then(|t| std::str::from_utf8(t).ok()).and_then(|t| t.parse::<u64>().ok()) {
                                    if let Some(at) = sent_at.lock().ok()?.remove(&id) {
                                        lat.lock().ok()?.push(now - at);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }));
    }
    let t1 = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.secs)).await;
    let sent_total = {
        // Lines still in flight at the stop are not counted as lost.
        stop.cancel();
        let mut back = Vec::new();
        for t in tasks {
            back.push(t.await.ok().flatten());
        }
        clients = back;
        lat.lock().map(|l| l.len()).unwrap_or(0)
    };
    let esp_secs = t1.elapsed().as_secs_f64();
    let mut l = lat.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort();
    let lost = sent_at.lock().map(|m| m.len()).unwrap_or(0);
    let mut r = rtt.lock().map(|r| r.clone()).unwrap_or_default();
    r.sort();
    println!(
        "live ESP round trip (request written -> sender's reply esp=1 read): {} replies; p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        r.len(),
        pct(&r, 0.50).as_secs_f64() * 1e3,
        pct(&r, 0.99).as_secs_f64() * 1e3,
        r.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    println!(
        "live ESP: {sent_total} delivered in {esp_secs:.1} s = {:.0}/s from {senders} senders; delivery latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms; not delivered by the stop: {lost}",
        sent_total as f64 / esp_secs,
        pct(&l, 0.50).as_secs_f64() * 1e3,
        pct(&l, 0.99).as_secs_f64() * 1e3,
        l.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );

    // ESP Mail: the recipients half sends one message each to an offline avatar, all at once.
    let mut tasks = Vec::new();
    let go = Arc::new(tokio::sync::Barrier::new(o.mail_senders.min(half) + 1));
    let mut mailers = 0;
    for (i, slot) in clients.iter_mut().enumerate().skip(half) {
        if mailers >= o.mail_senders {
            break;
        }
        let Some(mut c) = slot.take() else { continue };
        mailers += 1;
        let go = go.clone();
        let to = format!("off{}", mailers % offline);
        tasks.push(tokio::spawn(async move {
            let r: Result<Instant, Failure> = async {
                c.speak(format!("TO:{to}").as_bytes()).await?;
                c.esp(format!("mail from {i}").as_bytes()).await?;
                let p = c.wait_for(|e| matches!(e, Event::Prompt(_))).await?;
                let prompt = p.text().unwrap_or_default().to_vec();
                go.wait().await;
                c.answer(&prompt, b"Y").await?;
                c.wait_text("saved.").await?;
                Ok(Instant::now())
            }
            .await;
            (r.ok(), c)
        }));
    }
    go.wait().await;
    let t2 = Instant::now();
    let mut saved = 0;
    let mut last = t2;
    for t in tasks {
        if let Ok((Some(at), _c)) = t.await {
            saved += 1;
            last = last.max(at);
        }
    }
    let mail_secs = (last - t2).as_secs_f64();
    println!(
        "ESP Mail: {saved}/{mailers} saved (durably committed) in {mail_secs:.2} s = {:.0} saves/s",
        saved as f64 / mail_secs.max(1e-9)
    );
    let still = clients.iter().filter(|c| c.is_some()).count() + saved;
    println!("connections still up after the run: {still}/{connected}");
    drop(server);
    Ok(())
}
