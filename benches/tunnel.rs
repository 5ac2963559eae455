//! `espmail tunnel` on loopback (issue 12): relay throughput both ways and the round-trip
//! latency it adds, against the same client talking directly to a plain server.
//!
//! Paths measured, all on 127.0.0.1:
//! - direct: client → plain TCP server (the baseline, what an old client does today);
//! - tunnel: client → `espmail tunnel` (the real release binary, its own process, pinned
//!   certificate) → TLS server built with the library's acceptor (this process).
//!
//! The servers do one of three things, chosen by the client's first byte: `E` echo,
//! `U` read to the end and answer the byte count, `D` send the number of bytes asked for.
//!
//! Run: `cargo bench --bench tunnel` (`ESPMAIL_BENCH_SCALE=4` for longer runs).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use espmail::tls::{accept, generate_self_signed, write_new_pair, CertPaths, ReloadableAcceptor};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHUNK: usize = 64 * 1024;

async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut mode = [0u8; 1];
    if s.read_exact(&mut mode).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; CHUNK];
    match mode[0] {
        b'E' => loop {
            let n = match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if s.write_all(&buf[..n]).await.is_err() {
                return;
            }
        },
        b'U' => {
            let mut total = 0u64;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n as u64,
                }
            }
            let _ = s.write_all(&total.to_be_bytes()).await;
            let _ = s.shutdown().await;
        }
        b'D' => {
            let mut want = [0u8; 8];
            if s.read_exact(&mut want).await.is_err() {
                return;
            }
            let mut left = u64::from_be_bytes(want);
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                left -= n as u64;
            }
            let _ = s.shutdown().await;
        }
        _ => {}
    }
}

async fn plain_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(serve_one(s));
        }
    });
    addr
}

async fn tls_server(acceptor: Arc<ReloadableAcceptor>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            let acceptor = acceptor.current();
            tokio::spawn(async move {
                if let Ok(tls) = accept(&acceptor.acceptor, s, Duration::from_secs(10)).await {
                    serve_one(tls).await;
                }
            });
        }
    });
    addr
}

/// The real tunnel binary, pinned to `pin`; returns it and its local address.
fn start_tunnel(server: SocketAddr, pin: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_espmail"))
        .args([
            "tunnel",
            &server.to_string(),
            "--listen",
            "127.0.0.1:0",
            "--pin",
            pin,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    let addr = ready
        .strip_prefix("espmail tunnel listening on ")
        .and_then(|r| r.split(" -> ").next())
        .unwrap_or_else(|| panic!("unexpected first line {ready:?}"))
        .parse()
        .unwrap();
    // Keep draining the per-connection lines so the tunnel never blocks on stderr.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (child, addr)
}

async fn connect(addr: SocketAddr, mode: u8) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(&[mode]).await.unwrap();
    s
}

/// Round trips of `size` bytes, one at a time; returns each one's duration in µs, sorted.
async fn round_trips(addr: SocketAddr, n: usize, size: usize) -> Vec<f64> {
    let mut s = connect(addr, b'E').await;
    let out = vec![0x5Au8; size];
    let mut back = vec![0u8; size];
    for _ in 0..n / 20 {
        // warm-up: connection set up, buffers and caches in place
        s.write_all(&out).await.unwrap();
        s.read_exact(&mut back).await.unwrap();
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(&out).await.unwrap();
        s.read_exact(&mut back).await.unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// MiB/s for `bytes` sent up (client → server) until the server has counted them all.
async fn upload(addr: SocketAddr, bytes: u64) -> f64 {
    let mut s = connect(addr, b'U').await;
    let chunk = vec![0xA5u8; CHUNK];
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        s.write_all(&chunk[..n]).await.unwrap();
        left -= n as u64;
    }
    s.shutdown().await.unwrap();
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(u64::from_be_bytes(count), bytes);
    bytes as f64 / secs / (1 << 20) as f64
}

/// MiB/s for `bytes` sent down (server → client), until the last one arrived.
async fn download(addr: SocketAddr, bytes: u64) -> f64 {
    let mut s = connect(addr, b'D').await;
    let t = Instant::now();
    s.write_all(&bytes.to_be_bytes()).await.unwrap();
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        match s.read(&mut buf).await.unwrap() {
            0 => break,
            n => got += n as u64,
        }
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(got, bytes);
    bytes as f64 / secs / (1 << 20) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let scale: usize = std::env::var("ESPMAIL_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let made = generate_self_signed("localhost", 30).unwrap();
    let paths = CertPaths {
        cert: dir.path().join("c.pem"),
        key: dir.path().join("k.pem"),
    };
    write_new_pair(&paths, &made.cert_pem, &made.key_pem).unwrap();
    let acceptor = Arc::new(ReloadableAcceptor::load(&paths).unwrap());

    rt.block_on(async {
        let direct = plain_server().await;
        let tls = tls_server(acceptor).await;
        let (mut child, tunnel) = start_tunnel(tls, &made.fingerprint.to_pin());

        let n = 20_000 * scale;
        println!("round trips: {n} per path, one at a time, after {} warm-up", n / 20);
        println!("| payload | direct p50 | direct p99 | tunnel p50 | tunnel p99 | added p50 | added p99 |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for size in [16usize, 128, 1024] {
            let d = round_trips(direct, n, size).await;
            let t = round_trips(tunnel, n, size).await;
            let (d50, d99, t50, t99) = (pct(&d, 0.5), pct(&d, 0.99), pct(&t, 0.5), pct(&t, 0.99));
            println!(
                "| {size} B | {d50:.1} µs | {d99:.1} µs | {t50:.1} µs | {t99:.1} µs | {:.1} µs | {:.1} µs |",
                t50 - d50,
                t99 - d99
            );
        }

        let bytes = (256u64 << 20) * scale as u64;
        println!();
        println!("throughput: {} MiB per transfer, median of 3", bytes >> 20);
        println!("| direction | direct | tunnel | tunnel / direct |");
        println!("|---|---:|---:|---:|");
        for (name, up) in [("up (client → server)", true), ("down (server → client)", false)] {
            let mut d = Vec::new();
            let mut t = Vec::new();
            for _ in 0..3 {
                if up {
                    d.push(upload(direct, bytes).await);
                    t.push(upload(tunnel, bytes).await);
                } else {
                    d.push(download(direct, bytes).await);
                    t.push(download(tunnel, bytes).await);
                }
            }
            let (d, t) = (median(d), median(t));
            println!(
                "| {name} | {d:.0} MiB/s | {t:.0} MiB/s | {:.1} % |",
                100.0 * t / d
            );
        }
        let _ = child.kill();
        let _ = child.wait();
    });
}
