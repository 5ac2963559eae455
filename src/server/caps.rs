//! What one address may hold at once (DESIGN.md promise 10: an unauthenticated connection
//! holds no seat in the world, and no one address fills the server).
//!
//! - [`AddressCaps`]: connections per address, at most `[server]
//!   max_connections_per_address`, except for the addresses in `connection_cap_exempt`. The
//!   address is the player's: the peer's own, or the one a listed front end's PROXY header
//!   gave. IPv6 addresses count by their /64, which one host usually holds whole.
//! - [`SeatsBeforeLogin`]: seats in the Plaza held by connections that are not yet
//!   authenticated, at most `[server] max_unauthenticated_seats` in all. Only the in-world
//!   password dialogue needs one (see `session`).
//!
//! Both hand out a guard that gives its place back when dropped, so a session that ends
//! in any way, a panic included, cannot leak one.
//!
//! May touch: memory only.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::AddrRange;

/// The key an address is counted under: an IPv4 address as it is (an IPv4-mapped IPv6
/// address as its IPv4 address), an IPv6 address by its /64.
fn counted_as(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Connections per address.
#[derive(Debug)]
pub struct AddressCaps {
    max: usize,
    exempt: Vec<AddrRange>,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place under its address's cap; given back on drop.
#[derive(Debug)]
pub struct AddressSlot {
    caps: Arc<AddressCaps>,
    /// `None` for an exempt address (nothing was counted).
    key: Option<IpAddr>,
}

/// The address already has its cap of connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{count} connections from this address already (the cap is {max})")]
pub struct AddressFull {
    /// Connections it holds.
    pub count: usize,
    /// The cap.
    pub max: usize,
}

impl AddressCaps {
    /// At most `max` connections per address, none counted for `exempt`.
    pub fn new(max: usize, exempt: Vec<AddrRange>) -> Arc<AddressCaps> {
        Arc::new(AddressCaps {
            max,
            exempt,
            counts: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Each update leaves the map consistent, so a poisoned lock is safe to keep using.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for a connection from `ip`, unless its address is at the cap.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Result<AddressSlot, AddressFull> {
        if self.exempt.iter().any(|range| range.contains(ip)) {
            return Ok(AddressSlot {
                caps: Arc::clone(self),
                key: None,
            });
        }
        let key = counted_as(ip);
        let mut counts = self.lock();
        let count = counts.entry(key).or_insert(0);
        if *count >= self.max {
            return Err(AddressFull {
                count: *count,
                max: self.max,
            });
        }
        *count += 1;
        Ok(AddressSlot {
            caps: Arc::clone(self),
            key: Some(key),
        })
    }

    /// Connections counted for `ip`'s address now.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.lock().get(&counted_as(ip)).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let Some(key) = self.key else {
            return;
        };
        let mut counts = self.caps.lock();
        if let Some(count) = counts.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // No entry outlives its connections: the map holds live addresses only.
                counts.remove(&key);
            }
        }
    }
}

/// Seats held before authentication, in all.
#[derive(Debug, Clone)]
pub struct SeatsBeforeLogin(Arc<Semaphore>);

/// One unauthenticated connection's seat allowance; given back on drop (when the
/// connection authenticates, or ends).
#[derive(Debug)]
pub struct SeatBeforeLogin(#[allow(dead_code)] OwnedSemaphorePermit);

impl SeatsBeforeLogin {
    /// At most `max` at once.
    pub fn new(max: usize) -> SeatsBeforeLogin {
        SeatsBeforeLogin(Arc::new(Semaphore::new(max)))
    }

    /// One allowance, if any is left.
    pub fn take(&self) -> Option<SeatBeforeLogin> {
        Arc::clone(&self.0)
            .try_acquire_owned()
            .ok()
            .map(SeatBeforeLogin)
    }

    /// How many are left.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_gets_its_cap_and_its_places_back() {
        let caps = AddressCaps::new(2, Vec::new());
        let a = caps.take(ip("127.0.0.2")).unwrap();
        let _b = caps.take(ip("127.0.0.2")).unwrap();
        assert_eq!(
            caps.take(ip("127.0.0.2")).unwrap_err(),
            AddressFull { count: 2, max: 2 }
        );
        // Another address is not touched.
        let _c = caps.take(ip("127.0.0.3")).unwrap();
        drop(a);
        assert_eq!(caps.count(ip("127.0.0.2")), 1);
        let _d = caps.take(ip("127.0.0.2")).unwrap();
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let caps = AddressCaps::new(1, Vec::new());
        let _a = caps.take(ip("2001:db8:1:2::1")).unwrap();
        assert!(caps.take(ip("2001:db8:1:2:ffff::9")).is_err(), "same /64");
        assert!(caps.take(ip("2001:db8:1:3::1")).is_ok(), "another /64");
        let _v4 = caps.take(ip("192.0.2.7")).unwrap();
        assert!(caps.take(ip("::ffff:192.0.2.7")).is_err());
    }

    #[test]
    fn exempt_addresses_and_networks_are_not_counted() {
        let exempt = vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let caps = AddressCaps::new(1, exempt);
        let held: Vec<_> = (0..5)
            .map(|_| caps.take(ip("127.0.0.1")).unwrap())
            .collect();
        let more: Vec<_> = (0..5).map(|_| caps.take(ip("10.9.8.7")).unwrap()).collect();
        assert_eq!(caps.count(ip("127.0.0.1")), 0);
        assert_eq!(held.len() + more.len(), 10);
        let _one = caps.take(ip("127.0.0.2")).unwrap();
        assert!(caps.take(ip("127.0.0.2")).is_err());
    }

    #[test]
    fn seats_before_login_are_bounded_and_given_back() {
        let seats = SeatsBeforeLogin::new(2);
        let a = seats.take().unwrap();
        let _b = seats.take().unwrap();
        assert!(seats.take().is_none());
        drop(a);
        assert_eq!(seats.available(), 1);
        assert!(seats.take().is_some());
    }
}
