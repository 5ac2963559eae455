//! Logins under attack (issue 10): the real `espmail serve` (password mode, release
//! build), then bursts of 1,000 concurrent wrong guesses, while a real player logs in from
//! a clean address again and again. Prints answers per second, how many guesses were
//! hashed, and the player's login latency (p50/p99/max) during each burst.
//!
//! `cargo bench --bench login_attack` (BENCHMARKS.md, "Logins under attack").

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use espmail::talk::{Client, ClientError};

const GUESSES: usize = 1000;

struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let exe = env!("CARGO_BIN_EXE_espmail");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("espmail.toml");
    std::fs::write(
        &cfg,
        "[server]\nmax_connections = 5000\nmax_connections_per_address = 2000\n\
         [auth]\nauto_register = false\n[logging]\nlevel = \"warn\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let base = |cmd: &mut Command| {
        cmd.arg("--config").arg(&cfg).arg("--data-dir").arg(&data);
    };
    let mut init = Command::new(exe);
    init.arg("init");
    base(&mut init);
    assert!(init
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success());
    let mut add = Command::new(exe);
    add.args(["account", "add", "Bob"]);
    base(&mut add);
    let mut child = add
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"bob-password\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let mut serve = Command::new(exe);
    serve.args(["serve", "--listen", "127.0.0.1:0"]);
    base(&mut serve);
    let mut child = serve
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("espmail listening on ") {
                let _ = tx.send(a.trim().parse::<SocketAddr>().unwrap());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server started");
    Server {
        child,
        addr,
        _dir: dir,
    }
}

/// One login line from `from`; `Ok` when let in, else the refusal's text.
async fn attempt(server: SocketAddr, from: String, name: &str, pw: &str) -> Result<(), String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let stream = socket.connect(server).await.map_err(|e| e.to_string())?;
    let mut c = Client::handshake(stream, name, Some(pw))
        .await
        .map_err(|e| e.to_string())?;
    c.wait = Duration::from_secs(120);
    match c.im_alive().await {
        Ok(()) => Ok(()),
        Err(ClientError::Refused(t)) => Err(t),
        Err(e) => Err(e.to_string()),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A burst of [`GUESSES`] wrong guesses from `addresses` addresses, all at once, while the
/// real Bob logs in from clean addresses one after another until the burst is answered.
async fn burst(server: SocketAddr, addresses: usize, round: usize) {
    let started = Instant::now();
    let guesses: Vec<_> = (0..GUESSES)
        .map(|i| {
            let from = format!(
                "127.{}.{}.{}",
                10 + round,
                1 + (i % addresses) / 250,
                1 + (i % addresses) % 250
            );
            tokio::spawn(attempt(server, from, "Bob", "a-wrong-guess"))
        })
        .collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let player = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut refused = 0;
            let mut k = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let from = format!("127.{}.200.{}", 10 + round, 1 + k % 250);
                k += 1;
                let t = Instant::now();
                match attempt(server, from, "Bob", "bob-password").await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(_) => refused += 1,
                }
            }
            (latencies, refused)
        })
    };
    let (mut wrong, mut throttled, mut other) = (0, 0, 0);
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for g in guesses {
        match g.await.unwrap() {
            Err(t) if t == "Wrong name or password." => wrong += 1,
            Err(t) if t.starts_with("Too many tries") => {
                throttled += 1;
                *reasons.entry(t).or_default() += 1;
            }
            r => {
                other += 1;
                *reasons.entry(format!("{r:?}")).or_default() += 1;
            }
        }
    }
    let took = started.elapsed();
    for (why, n) in &reasons {
        println!("  {n} x {why}");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut lat, refused) = player.await.unwrap();
    lat.sort();
    println!(
        "{GUESSES} guesses from {addresses} address(es): answered in {:.2} s ({:.0} answers/s); \
         hashed and wrong {wrong}, throttled {throttled}, other {other}",
        took.as_secs_f64(),
        GUESSES as f64 / took.as_secs_f64(),
    );
    println!(
        "  the player meanwhile: {} logins, p50 {:?}, p99 {:?}, max {:?}; refused {refused}",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default(),
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would too: only run for real.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let server = start();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("logins under attack: espmail serve (release), {cores} cores, hash_threads = cores");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // One attacker address: the throttle answers nearly all without hashing.
        burst(server.addr, 1, 0).await;
        // 200 addresses, five guesses each: every guess is within its address's limit, so
        // every one is hashed (or refused when the hashing queue is full).
        burst(server.addr, 200, 1).await;
    });
}
