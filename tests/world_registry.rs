//! The presence registry used from many tasks at once, the way sessions use it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use espmail_test_macros::bounded;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use espmail::avatar::AvatarName;
use espmail::world::esp::{EspState, Intent, LiveEsp, MailRate, RegistryDirectory};
use espmail::world::{KickReason, Noids, Registry, SendOutcome};
use tokio::sync::mpsc;
use tokio::time::timeout;

fn name(s: &str) -> AvatarName {
    AvatarName::parse(s).unwrap()
}

const WAIT: Duration = Duration::from_secs(10);

#[bounded]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_join_broadcast_and_leave() {
    let reg: Arc<Registry<(u64, u32)>> = Arc::new(Registry::new());
    const TASKS: u64 = 16;
    const MSGS: u32 = 20;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS as usize));
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let reg = Arc::clone(&reg);
        let barrier = Arc::clone(&barrier);
        handles.push(tokio::spawn(async move {
            let member = reg.seat();
            let (tx, mut rx) = mpsc::channel(1024);
            member.enter(&name(&format!("Avatar{t}")), tx);
            // Everyone is present before anyone broadcasts.
            barrier.wait().await;
            for i in 0..MSGS {
                reg.broadcast(Some(member.id()), &(t, i));
                tokio::task::yield_now().await;
            }
            // Receive every other task's messages, in order per sender.
            let mut next = vec![0u32; TASKS as usize];
            let expected = (TASKS - 1) * u64::from(MSGS);
            for _ in 0..expected {
                let (from, i) = timeout(WAIT, rx.recv()).await.unwrap().unwrap();
                assert_ne!(from, t);
                assert_eq!(next[from as usize], i, "out of order from {from}");
                next[from as usize] += 1;
            }
            barrier.wait().await;
            (member.noids().unwrap(), member)
        }));
    }
    let mut members = Vec::new();
    let mut noids = HashSet::new();
    for h in handles {
        let (n, m) = h.await.unwrap();
        assert!(
            noids.insert(n.avatar) && noids.insert(n.head),
            "noid reused while held"
        );
        members.push(m);
    }
    assert_eq!(reg.count(), TASKS as usize);
    assert_eq!(reg.present().len(), TASKS as usize);
    drop(members);
    assert_eq!(reg.count(), 0);
    assert_eq!(reg.seat().noids(), Some(Noids { avatar: 1, head: 2 }));
}

#[bounded]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_while_broadcasting_keeps_noids_unique() {
    let reg: Arc<Registry<u8>> = Arc::new(Registry::new());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let broadcaster = {
        let reg = Arc::clone(&reg);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                reg.broadcast(None, &1);
                n += 1;
                tokio::task::yield_now().await;
            }
            n
        })
    };
    let mut tasks = Vec::new();
    for t in 0..8 {
        let reg = Arc::clone(&reg);
        tasks.push(tokio::spawn(async move {
            for round in 0..200 {
                let m = reg.seat();
                let (tx, mut rx) = mpsc::channel(4);
                m.enter(&name(&format!("c{t}")), tx);
                let n = m.noids().unwrap();
                assert!(n.avatar >= 1 && n.head <= 254 && n.avatar != n.head);
                // Drain so the outbox does not fill (a full one would kick us).
                while rx.try_recv().is_ok() {}
                if round % 2 == 0 {
                    assert!(m.leave() || m.kicked().is_cancelled());
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(broadcaster.await.unwrap() > 0);
    assert_eq!(reg.count(), 0);
    // All 254 noids are free again: 127 seats fit.
    let seats: Vec<_> = (0..127).map(|_| reg.seat()).collect();
    assert!(seats.iter().all(|s| s.noids().is_some()));
}

#[bounded]
#[tokio::test]
async fn a_slow_reader_is_disconnected_and_the_sender_never_waits() {
    let reg: Arc<Registry<Vec<u8>>> = Arc::new(Registry::new());
    let slow = reg.seat();
    let (stx, _never_read) = mpsc::channel(8);
    slow.enter(&name("Slow"), stx);
    let fast = reg.seat();
    let (ftx, mut frx) = mpsc::channel(10_000);
    fast.enter(&name("Fast"), ftx);
    let kicked = slow.kicked().clone();
    let watcher = tokio::spawn(async move {
        kicked.cancelled().await;
    });
    for i in 0..10_000u32 {
        reg.broadcast(None, &i.to_le_bytes().to_vec());
    }
    // 10,000 broadcasts never blocked on the reader that is not reading.
    timeout(WAIT, watcher).await.unwrap().unwrap();
    assert_eq!(slow.kick_reason(), Some(KickReason::SlowReader));
    assert!(!reg.is_online("slow"));
    let mut got = 0;
    while frx.try_recv().is_ok() {
        got += 1;
    }
    assert_eq!(got, 10_000);
}

#[bounded]
#[tokio::test]
async fn second_login_kicks_the_first_session_task() {
    let reg: Arc<Registry<String>> = Arc::new(Registry::new());
    let first = reg.seat();
    let (tx1, _rx1) = mpsc::channel(4);
    first.enter(&name("Bob"), tx1);
    // The first session's task waits on its kick token, as Session::run does.
    let task = tokio::spawn(async move {
        first.kicked().cancelled().await;
        first.kick_reason().and_then(KickReason::text)
    });
    let second = reg.seat();
    let (tx2, mut rx2) = mpsc::channel(4);
    let entered = second.enter(&name("BOB"), tx2);
    assert!(entered.replaced.is_some());
    let said = timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(said, Some("You have logged in elsewhere."));
    assert_eq!(reg.send_to("bob", "hi".into()), SendOutcome::Sent);
    assert_eq!(rx2.recv().await.unwrap(), "hi");
    assert_eq!(reg.count(), 1);
}

#[derive(Debug)]
enum Msg {
    Esp(LiveEsp),
}

#[bounded]
#[tokio::test]
async fn live_esp_through_the_registry() {
    let reg: Arc<Registry<Msg>> = Arc::new(Registry::new());
    let alice = reg.seat();
    let bob = reg.seat();
    let (atx, _arx) = mpsc::channel(4);
    let (btx, mut brx) = mpsc::channel(4);
    alice.enter(&name("Alice"), atx);
    bob.enter(&name("Bob"), btx);
    let dir = RegistryDirectory::new(&reg, Msg::Esp);
    let rate = MailRate::default();
    let mut esp = EspState::new(name("Alice"));
    let out = esp.start("bob", None, &dir);
    assert!(matches!(out.last(), Some(Intent::Reply { esp: true })));
    let out = esp.esp(b"ESP:by the fountain", &dir, &rate, Instant::now());
    assert!(matches!(&out[0], Intent::Echo(t) if t.expose() == b"ESP:by the fountain"));
    let Msg::Esp(live) = brx.recv().await.unwrap();
    assert_eq!(live.header(), "ESP from Alice: ");
    assert_eq!(live.body.expose(), b"by the fountain");
    // Bob leaves: the next line becomes an ESP Mail offer.
    drop(bob);
    let out = esp.esp(b"ESP:later then", &dir, &rate, Instant::now());
    assert!(matches!(&out[0], Intent::Reply { esp: false }));
    assert!(matches!(&out[1], Intent::Prompt(p) if p == "ESP Mail to Bob? (Y/N) "));
}
