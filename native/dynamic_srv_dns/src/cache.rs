//! The address cache shared by the epmd module and the membership poller.
//!
//! Entries are keyed by node name and address family. An entry is *fresh* until
//! `max(ttl, min_ttl)` has passed, then *stale* for `max_stale` more, during which it is still
//! served when DNS fails. A lookup that fails marks the entry (and the cache as a whole: the
//! membership poller notices an outage before any connection does), and while that mark is
//! recent the stale entry is answered at once instead of waiting on a DNS server that is
//! known to be down.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// How many entries the cache holds before it drops the ones past their stale window.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// The longest a DNS TTL keeps an answer fresh (one day, as unbound's `cache-max-ttl`): an
/// answer with TTL 2^31 s, spoofed or mistyped, must not pin an address for decades.
pub const MAX_TTL: Duration = Duration::from_secs(86_400);

/// How long an answer with `ttl_s` stays fresh: its TTL, capped at `MAX_TTL`, and at least
/// `min_ttl` (which the operator sets, so it is not capped).
pub fn hold(ttl_s: u32, min_ttl: Duration) -> Duration {
    Duration::from_secs(ttl_s.into()).min(MAX_TTL).max(min_ttl)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Inet,
    Inet6,
}

impl Family {
    pub fn matches(self, ip: &IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::Inet, IpAddr::V4(_)) | (Family::Inet6, IpAddr::V6(_))
        )
    }

    pub fn loopback(self) -> IpAddr {
        match self {
            Family::Inet => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            Family::Inet6 => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Family::Inet => "IPv4",
            Family::Inet6 => "IPv6",
        }
    }
}

/// Who wrote an entry: the epmd module's own lookup of that node, or a topology's poll,
/// which may only name nodes it derives from its own answers (see `Cache::offer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Lookup,
    Topology(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub endpoint: SocketAddr,
    pub fresh_until: Instant,
    pub stale_until: Instant,
    /// When the last refresh of this entry failed, if it did.
    pub failed_at: Option<Instant>,
    /// When a background refresh was started, so an outage starts one, not one per call.
    pub refresh_started: Option<Instant>,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    Fresh(SocketAddr),
    /// Expired, but DNS failed recently: answer with this and refresh in the background.
    StaleDuringOutage(SocketAddr),
    /// Nothing usable without asking DNS (an expired entry is still kept as a fallback).
    Miss,
}

/// One cache entry as the diagnosis shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryView {
    pub node: String,
    pub family: Family,
    pub endpoint: SocketAddr,
    /// Time left before the entry expires; `None` once expired.
    pub fresh_for: Option<Duration>,
    /// For an expired entry, how much longer it may be served while DNS fails; `None` while
    /// fresh, and also once it is past its stale window (then it is never served again).
    pub stale_for: Option<Duration>,
    /// How long ago the last refresh of this entry failed, if it did.
    pub failed_ago: Option<Duration>,
}

impl EntryView {
    /// `fresh`, `stale` (expired, served only while DNS fails) or `dead` (past the window).
    pub fn state(&self) -> &'static str {
        match (self.fresh_for, self.stale_for) {
            (Some(_), _) => "fresh",
            (None, Some(_)) => "stale",
            (None, None) => "dead",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub entries: Vec<EntryView>,
    /// Entries in the cache, including those past `limit`.
    pub total: usize,
    /// How long ago a lookup last failed, `None` if DNS answered since.
    pub dns_failed_ago: Option<Duration>,
}

/// The most entries a snapshot returns, whatever limit it is asked for: the copy is made
/// under the lock every cache hit takes.
pub const MAX_SNAPSHOT: usize = 1_000;

type Key = (String, Family);

/// The entries, ordered by name (a snapshot reads the first few, `port_please` a name's
/// range), and by the end of their stale window, so a full cache finds the dead ones
/// without scanning.
#[derive(Debug, Default)]
struct Entries {
    by_key: BTreeMap<Key, Entry>,
    by_stale_until: BTreeSet<(Instant, Key)>,
}

impl Entries {
    fn put(&mut self, key: Key, entry: Entry) {
        let index = (entry.stale_until, key.clone());
        if let Some(old) = self.by_key.insert(key.clone(), entry) {
            self.by_stale_until.remove(&(old.stale_until, key));
        }
        self.by_stale_until.insert(index);
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_stale_until.remove(&(old.stale_until, key.clone()));
        }
    }

    /// Drops entries past their stale window, soonest first, until one is alive or there
    /// is room for one more; O(log n) per entry dropped.
    fn drop_dead(&mut self, now: Instant, capacity: usize) {
        while self.by_key.len() >= capacity {
            match self.by_stale_until.first() {
                Some((stale_until, _)) if *stale_until <= now => {
                    let (_, key) = self.by_stale_until.pop_first().expect("first exists");
                    self.by_key.remove(&key);
                }
                _ => return,
            }
        }
    }
}

#[derive(Debug)]
pub struct Cache {
    entries: RwLock<Entries>,
    /// When any lookup last failed, as nanoseconds after `epoch`; 0 once DNS answers again.
    /// Atomic, so a cache hit takes one lock, not two.
    dns_failed_at: AtomicU64,
    epoch: Instant,
    capacity: usize,
    /// Set once the full-cache warning is logged, so a flood logs it once, not per answer.
    full_warned: AtomicBool,
}

impl Default for Cache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Cache {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: RwLock::new(Entries::default()),
            dns_failed_at: AtomicU64::new(0),
            epoch: Instant::now(),
            capacity,
            full_warned: AtomicBool::new(false),
        }
    }

    pub fn get(&self, key: &str, family: Family, outage_window: Duration, now: Instant) -> Cached {
        let dns_failed_at = match self.dns_failed_at.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(self.epoch + Duration::from_nanos(nanos)),
        };
        let entries = self.read();
        let Some(entry) = entries.by_key.get(&(key.to_string(), family)) else {
            return Cached::Miss;
        };
        if now < entry.fresh_until {
            Cached::Fresh(entry.endpoint)
        } else if now < entry.stale_until
            && entry
                .failed_at
                .max(dns_failed_at)
                .is_some_and(|failed| now.saturating_duration_since(failed) < outage_window)
        {
            Cached::StaleDuringOutage(entry.endpoint)
        } else {
            Cached::Miss
        }
    }

    /// Stores the answer of the epmd module's own lookup of this node, `hold` being
    /// `max(ttl, min_ttl)`. It was asked for this name, so it replaces whatever was there.
    pub fn insert(
        &self,
        key: &str,
        family: Family,
        endpoint: SocketAddr,
        hold: Duration,
        max_stale: Duration,
        now: Instant,
    ) {
        self.write(key, family, endpoint, Source::Lookup, hold, max_stale, now);
    }

    /// Stores an address a topology derived for a node it lists. It never touches an entry
    /// another source wrote while that entry may still be served (fresh, or within its stale
    /// window): an answer for one service must not redirect, nor keep alive, the address of a
    /// node that was resolved on its own or that another topology lists. Returns true if it
    /// was stored.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        &self,
        topology: u64,
        key: &str,
        family: Family,
        endpoint: SocketAddr,
        hold: Duration,
        max_stale: Duration,
        now: Instant,
    ) -> bool {
        let source = Source::Topology(topology);
        self.write(key, family, endpoint, source, hold, max_stale, now)
    }

    /// The node left `topology`: what that topology wrote about it is no longer fresh (it
    /// stays a fallback while DNS fails, as any expired entry does).
    pub fn expire(&self, topology: u64, key: &str, now: Instant) {
        let mut entries = self.write_lock();
        for family in [Family::Inet, Family::Inet6] {
            if let Some(entry) = entries.by_key.get_mut(&(key.to_string(), family)) {
                if entry.source == Source::Topology(topology) {
                    entry.fresh_until = entry.fresh_until.min(now);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        key: &str,
        family: Family,
        endpoint: SocketAddr,
        source: Source,
        hold: Duration,
        max_stale: Duration,
        now: Instant,
    ) -> bool {
        let map_key = (key.to_string(), family);
        // Decided under the shared lock first: an answer that is turned away (a name another
        // source holds, a full cache), or one that would only extend an entry that is still
        // fresh for half of this answer's hold, must not make cache hits wait on the
        // exclusive lock. (A topology offers every member on every poll.)
        {
            let entries = self.read();
            if self.turned_away(&entries, &map_key, source, now) {
                return false;
            }
            if entries.by_key.get(&map_key).is_some_and(|held| {
                held.source == source
                    && held.endpoint == endpoint
                    && held.failed_at.is_none()
                    && held.fresh_until >= now + hold / 2
            }) {
                return true;
            }
        }
        let mut entries = self.write_lock();
        if self.turned_away(&entries, &map_key, source, now) {
            return false;
        }
        // A full cache still refreshes the entries it holds: only new names are turned away.
        if !entries.by_key.contains_key(&map_key) {
            entries.drop_dead(now, self.capacity);
        }
        if entries.by_key.len() < self.capacity {
            self.full_warned.store(false, Ordering::Relaxed);
        }
        let fresh_until = now + hold;
        entries.put(
            map_key,
            Entry {
                endpoint,
                fresh_until,
                stale_until: fresh_until + max_stale,
                failed_at: None,
                refresh_started: None,
                source,
            },
        );
        true
    }

    /// True if this answer must not be stored: a topology's answer for a node another source
    /// wrote, or the cache is full, the name new, and no entry dead.
    fn turned_away(&self, entries: &Entries, key: &Key, source: Source, now: Instant) -> bool {
        let held = entries.by_key.get(key);
        if let (Source::Topology(_), Some(held)) = (source, held) {
            // Not even an answer that agrees: it would make the entry this topology's (the
            // next answer could then move it) and keep it fresh for this answer's TTL.
            if held.source != source && now < held.stale_until {
                return true;
            }
        }
        let full = held.is_none()
            && entries.by_key.len() >= self.capacity
            && entries
                .by_stale_until
                .first()
                .is_none_or(|(stale_until, _)| *stale_until > now);
        if full && !self.full_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                capacity = self.capacity,
                "address cache full: answers for new names are not cached until entries expire"
            );
        }
        full
    }

    /// Records a failed refresh and returns the stale endpoint to fall back on, if any.
    pub fn fail(&self, key: &str, family: Family, now: Instant) -> Option<SocketAddr> {
        let mut entries = self.write_lock();
        let entry = entries.by_key.get_mut(&(key.to_string(), family))?;
        if now >= entry.stale_until {
            return None;
        }
        entry.failed_at = Some(now);
        entry.refresh_started = None;
        Some(entry.endpoint)
    }

    /// DNS failed (any lookup, including the membership poll's).
    pub fn note_dns_failure(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX).max(1);
        self.dns_failed_at.store(nanos, Ordering::Relaxed);
    }

    /// DNS answered: the outage, if any, is over.
    pub fn note_dns_answer(&self) {
        self.dns_failed_at.store(0, Ordering::Relaxed);
    }

    /// True if the caller should start a background refresh of this entry: none started
    /// within `window` (a refresh that died is retried after it).
    pub fn claim_refresh(&self, key: &str, family: Family, window: Duration, now: Instant) -> bool {
        let mut entries = self.write_lock();
        let Some(entry) = entries.by_key.get_mut(&(key.to_string(), family)) else {
            return false;
        };
        if entry
            .refresh_started
            .is_some_and(|started| now.saturating_duration_since(started) < window)
        {
            return false;
        }
        entry.refresh_started = Some(now);
        true
    }

    /// Forgets a name DNS says no longer exists.
    pub fn remove(&self, key: &str, family: Family) {
        self.write_lock().remove(&(key.to_string(), family));
    }

    /// Any endpoint known for this node name part and address, fresh or stale; used by
    /// `port_please`, which OTP gives only the name part and the IP.
    pub fn port_for(&self, name: &str, ip: IpAddr) -> Option<u16> {
        let prefix = format!("{}@", name.to_ascii_lowercase());
        let entries = self.read();
        let found = entries
            .by_key
            .range((prefix.clone(), Family::Inet)..)
            .take_while(|((key, _), _)| key.starts_with(&prefix))
            .find(|(_, entry)| entry.endpoint.ip() == ip)
            .map(|(_, entry)| entry.endpoint.port());
        found
    }

    /// Up to `limit` (at most `MAX_SNAPSHOT`) entries, sorted by name, as the diagnosis
    /// shows them, and how long ago DNS last failed while that failure still counts as an
    /// outage. Reads only the entries it returns, so a full cache answers as fast as an
    /// empty one and cache hits wait microseconds, not a copy of every entry.
    pub fn snapshot(&self, limit: usize, now: Instant) -> Snapshot {
        let dns_failed_ago = match self.dns_failed_at.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(now.saturating_duration_since(self.epoch + Duration::from_nanos(nanos))),
        };
        let entries = self.read();
        let views = entries
            .by_key
            .iter()
            .take(limit.min(MAX_SNAPSHOT))
            .map(|((key, family), entry)| EntryView {
                node: key.clone(),
                family: *family,
                endpoint: entry.endpoint,
                fresh_for: entry.fresh_until.checked_duration_since(now),
                stale_for: if now < entry.fresh_until {
                    None
                } else {
                    entry.stale_until.checked_duration_since(now)
                },
                failed_ago: entry.failed_at.map(|at| now.saturating_duration_since(at)),
            })
            .collect();
        Snapshot {
            entries: views,
            total: entries.by_key.len(),
            dns_failed_ago,
        }
    }

    pub fn entry(&self, key: &str, family: Family) -> Option<Entry> {
        self.read().by_key.get(&(key.to_string(), family)).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> RwLockReadGuard<'_, Entries> {
        // A panic while holding the lock cannot leave a half-written entry behind (the two
        // indexes are updated together, with nothing that can panic in between), so a
        // poisoned lock is safe to keep using.
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn fresh_then_miss_then_stale_during_outage() {
        let cache = Cache::default();
        let t0 = Instant::now();
        cache.insert("a@h", Family::Inet, addr(1), 5 * SEC, 60 * SEC, t0);
        assert_eq!(
            cache.get("a@h", Family::Inet, 5 * SEC, t0),
            Cached::Fresh(addr(1))
        );
        assert_eq!(cache.get("a@h", Family::Inet6, 5 * SEC, t0), Cached::Miss);
        // Expired with no failure seen: ask DNS.
        assert_eq!(
            cache.get("a@h", Family::Inet, 5 * SEC, t0 + 6 * SEC),
            Cached::Miss
        );
        // The refresh failed: the stale endpoint is the fallback and is served at once.
        assert_eq!(cache.fail("a@h", Family::Inet, t0 + 6 * SEC), Some(addr(1)));
        assert_eq!(
            cache.get("a@h", Family::Inet, 5 * SEC, t0 + 7 * SEC),
            Cached::StaleDuringOutage(addr(1))
        );
        // Once the outage mark is old, DNS is asked again.
        assert_eq!(
            cache.get("a@h", Family::Inet, 5 * SEC, t0 + 12 * SEC),
            Cached::Miss
        );
        // Past the stale window nothing is served.
        assert_eq!(cache.fail("a@h", Family::Inet, t0 + 70 * SEC), None);
    }

    #[test]
    fn an_outage_seen_elsewhere_serves_stale_entries_at_once() {
        let cache = Cache::default();
        let t0 = Instant::now();
        cache.insert("a@h", Family::Inet, addr(1), SEC, 60 * SEC, t0);
        assert_eq!(
            cache.get("a@h", Family::Inet, 5 * SEC, t0 + 2 * SEC),
            Cached::Miss
        );
        cache.note_dns_failure(t0 + 2 * SEC);
        assert_eq!(
            cache.get("a@h", Family::Inet, 5 * SEC, t0 + 3 * SEC),
            Cached::StaleDuringOutage(addr(1))
        );
        cache.note_dns_answer();
        assert_eq!(
            cache.get("a@h", Family::Inet, 5 * SEC, t0 + 3 * SEC),
            Cached::Miss
        );
    }

    #[test]
    fn one_background_refresh_at_a_time() {
        let cache = Cache::default();
        let t0 = Instant::now();
        cache.insert("a@h", Family::Inet, addr(1), SEC, 60 * SEC, t0);
        assert!(cache.claim_refresh("a@h", Family::Inet, 3 * SEC, t0));
        assert!(!cache.claim_refresh("a@h", Family::Inet, 3 * SEC, t0 + SEC));
        // The refresh failed: the next one may start.
        cache.fail("a@h", Family::Inet, t0 + 2 * SEC);
        assert!(cache.claim_refresh("a@h", Family::Inet, 3 * SEC, t0 + 2 * SEC));
        // A refresh that never reported is retried after the window.
        assert!(cache.claim_refresh("a@h", Family::Inet, 3 * SEC, t0 + 6 * SEC));
        assert!(!cache.claim_refresh("b@h", Family::Inet, 3 * SEC, t0));
    }

    #[test]
    fn a_new_answer_clears_the_failure() {
        let cache = Cache::default();
        let t0 = Instant::now();
        cache.insert("a@h", Family::Inet, addr(1), SEC, 60 * SEC, t0);
        cache.fail("a@h", Family::Inet, t0 + 2 * SEC);
        cache.insert("a@h", Family::Inet, addr(2), SEC, 60 * SEC, t0 + 3 * SEC);
        assert_eq!(cache.entry("a@h", Family::Inet).unwrap().failed_at, None);
        assert_eq!(
            cache.get("a@h", Family::Inet, SEC, t0 + 3 * SEC),
            Cached::Fresh(addr(2))
        );
    }

    #[test]
    fn capacity_drops_dead_entries_first_and_never_grows_past_it() {
        let cache = Cache::with_capacity(2);
        let t0 = Instant::now();
        cache.insert("a@h", Family::Inet, addr(1), SEC, SEC, t0);
        cache.insert("b@h", Family::Inet, addr(2), SEC, SEC, t0);
        cache.insert("c@h", Family::Inet, addr(3), SEC, SEC, t0);
        assert_eq!(cache.len(), 2);
        assert!(cache.entry("c@h", Family::Inet).is_none());
        // Only as many dead entries go as make room for the new one.
        cache.insert("c@h", Family::Inet, addr(3), SEC, SEC, t0 + 3 * SEC);
        assert_eq!(cache.len(), 2);
        assert!(cache.entry("c@h", Family::Inet).is_some());
    }

    #[test]
    fn a_full_cache_still_refreshes_the_names_it_holds() {
        let cache = Cache::with_capacity(2);
        let t0 = Instant::now();
        cache.insert("a@h", Family::Inet, addr(1), SEC, 10 * SEC, t0);
        cache.insert("b@h", Family::Inet, addr(2), SEC, 10 * SEC, t0);
        // Both expired but still within their stale window: the cache stays full.
        let later = t0 + 2 * SEC;
        cache.insert("c@h", Family::Inet, addr(3), SEC, 10 * SEC, later);
        assert!(cache.entry("c@h", Family::Inet).is_none());
        cache.insert("a@h", Family::Inet, addr(4), SEC, 10 * SEC, later);
        assert_eq!(
            cache.get("a@h", Family::Inet, SEC, later),
            Cached::Fresh(addr(4))
        );
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn hold_caps_huge_ttls_but_honours_min_ttl() {
        assert_eq!(hold(u32::MAX, Duration::ZERO), MAX_TTL);
        assert_eq!(hold(30, 5 * SEC), 30 * SEC);
        assert_eq!(hold(0, 5 * SEC), 5 * SEC);
        assert_eq!(hold(u32::MAX, 2 * MAX_TTL), 2 * MAX_TTL);
    }

    #[test]
    fn port_for_matches_name_part_and_ip() {
        let cache = Cache::default();
        let t0 = Instant::now();
        cache.insert("app@h.x", Family::Inet, addr(4370), SEC, SEC, t0);
        assert_eq!(cache.port_for("APP", addr(0).ip()), Some(4370));
        assert_eq!(cache.port_for("ap", addr(0).ip()), None);
        assert_eq!(cache.port_for("app", "127.0.0.2".parse().unwrap()), None);
        // Names that sort next to it are not it.
        cache.insert("app1@h.x", Family::Inet, addr(4371), SEC, SEC, t0);
        cache.insert("ap@h.x", Family::Inet, addr(4372), SEC, SEC, t0);
        assert_eq!(cache.port_for("app", addr(0).ip()), Some(4370));
        assert_eq!(cache.port_for("app1", addr(0).ip()), Some(4371));
    }

    #[test]
    fn snapshot_shows_remaining_ttl_stale_window_and_failures() {
        let cache = Cache::default();
        let t0 = Instant::now();
        cache.insert("b@h", Family::Inet, addr(2), 10 * SEC, 60 * SEC, t0);
        cache.insert("a@h", Family::Inet6, addr(1), SEC, 60 * SEC, t0);
        cache.insert("c@h", Family::Inet, addr(3), SEC, SEC, t0);
        cache.fail("a@h", Family::Inet6, t0 + 2 * SEC);
        cache.note_dns_failure(t0 + 2 * SEC);
        let now = t0 + 4 * SEC;
        let snapshot = cache.snapshot(10, now);
        assert_eq!(snapshot.total, 3);
        assert_eq!(snapshot.dns_failed_ago, Some(2 * SEC));
        let [a, b, c] = &snapshot.entries[..] else {
            panic!("{snapshot:?}")
        };
        assert_eq!((a.node.as_str(), a.state()), ("a@h", "stale"));
        assert_eq!(a.stale_for, Some(57 * SEC));
        assert_eq!(a.failed_ago, Some(2 * SEC));
        assert_eq!((b.node.as_str(), b.state()), ("b@h", "fresh"));
        assert_eq!(b.fresh_for, Some(6 * SEC));
        assert_eq!(b.failed_ago, None);
        assert_eq!((c.node.as_str(), c.state()), ("c@h", "dead"));
        assert_eq!(cache.snapshot(1, now).entries.len(), 1);
        assert_eq!(cache.snapshot(1, now).total, 3);
        cache.note_dns_answer();
        assert_eq!(cache.snapshot(1, now).dns_failed_ago, None);
    }

    #[test]
    fn a_topology_never_redirects_a_node_someone_else_resolved() {
        let cache = Cache::default();
        let t0 = Instant::now();
        // The epmd module looked the node up itself.
        cache.insert(
            "app@h.legit.test",
            Family::Inet,
            addr(4370),
            SEC,
            60 * SEC,
            t0,
        );
        // Another service's answer names the same host with another address and port.
        let forged = SocketAddr::from(([127, 0, 0, 66], 9999));
        assert!(!cache.offer(
            7,
            "app@h.legit.test",
            Family::Inet,
            forged,
            86_400 * SEC,
            SEC,
            t0
        ));
        // Still refused once the looked-up entry has expired but may be served stale.
        assert!(!cache.offer(
            7,
            "app@h.legit.test",
            Family::Inet,
            forged,
            SEC,
            SEC,
            t0 + 2 * SEC
        ));
        // An answer that agrees is refused too: taking the entry over (and keeping it fresh
        // for its own TTL) would let the next answer move it.
        assert!(!cache.offer(
            7,
            "app@h.legit.test",
            Family::Inet,
            addr(4370),
            86_400 * SEC,
            SEC,
            t0
        ));
        let held = cache.entry("app@h.legit.test", Family::Inet).unwrap();
        assert_eq!((held.endpoint, held.source), (addr(4370), Source::Lookup));
        assert_eq!(held.fresh_until, t0 + SEC);
        // Nor may another topology's entry be redirected; its own entries a topology
        // updates freely.
        cache.offer(1, "b@h", Family::Inet, addr(1), SEC, SEC, t0);
        assert!(!cache.offer(2, "b@h", Family::Inet, addr(2), SEC, SEC, t0));
        assert!(!cache.offer(2, "b@h", Family::Inet, addr(1), SEC, SEC, t0));
        assert!(cache.offer(1, "b@h", Family::Inet, addr(3), SEC, SEC, t0));
        // The node's own lookup always wins: it asked for exactly this name.
        cache.insert("b@h", Family::Inet, addr(4), SEC, SEC, t0);
        assert_eq!(
            cache.entry("b@h", Family::Inet).unwrap().source,
            Source::Lookup
        );
        // A dead entry is anybody's.
        assert!(cache.offer(2, "b@h", Family::Inet, addr(5), SEC, SEC, t0 + 3 * SEC));
    }

    #[test]
    fn a_node_that_left_a_topology_is_no_longer_fresh_from_it() {
        let cache = Cache::default();
        let t0 = Instant::now();
        cache.offer(1, "a@h", Family::Inet, addr(1), 60 * SEC, 60 * SEC, t0);
        cache.offer(1, "a@h", Family::Inet6, addr(1), 60 * SEC, 60 * SEC, t0);
        cache.insert("b@h", Family::Inet, addr(2), 60 * SEC, 60 * SEC, t0);
        cache.expire(1, "a@h", t0 + SEC);
        cache.expire(1, "b@h", t0 + SEC);
        assert_eq!(cache.get("a@h", Family::Inet, SEC, t0 + SEC), Cached::Miss);
        assert_eq!(cache.get("a@h", Family::Inet6, SEC, t0 + SEC), Cached::Miss);
        // Still the fallback while DNS fails; and what it did not write is untouched.
        cache.note_dns_failure(t0 + SEC);
        assert_eq!(
            cache.get("a@h", Family::Inet, 5 * SEC, t0 + 2 * SEC),
            Cached::StaleDuringOutage(addr(1))
        );
        assert_eq!(
            cache.get("b@h", Family::Inet, SEC, t0 + SEC),
            Cached::Fresh(addr(2))
        );
    }

    #[test]
    fn a_full_cache_drops_the_soonest_dead_entries_without_a_scan() {
        let cache = Cache::with_capacity(3);
        let t0 = Instant::now();
        cache.insert("a@h", Family::Inet, addr(1), SEC, 5 * SEC, t0);
        cache.insert("b@h", Family::Inet, addr(2), SEC, SEC, t0);
        cache.insert("c@h", Family::Inet, addr(3), SEC, 50 * SEC, t0);
        // b died at 2 s, a at 6 s: only b makes room at 3 s.
        cache.insert("d@h", Family::Inet, addr(4), SEC, 50 * SEC, t0 + 3 * SEC);
        assert!(cache.entry("b@h", Family::Inet).is_none());
        assert!(cache.entry("a@h", Family::Inet).is_some());
        // A refreshed entry is indexed by its new window, not its old one.
        cache.insert("a@h", Family::Inet, addr(1), SEC, 50 * SEC, t0 + 4 * SEC);
        cache.insert("e@h", Family::Inet, addr(5), SEC, 50 * SEC, t0 + 7 * SEC);
        assert!(cache.entry("e@h", Family::Inet).is_none());
        assert_eq!(cache.len(), 3);
        let lock = cache.read();
        assert_eq!(lock.by_stale_until.len(), lock.by_key.len());
    }

    #[test]
    fn a_snapshot_returns_at_most_max_snapshot_entries() {
        let cache = Cache::default();
        let t0 = Instant::now();
        for i in 0..(MAX_SNAPSHOT + 10) {
            cache.insert(&format!("n{i:05}@h"), Family::Inet, addr(1), SEC, SEC, t0);
        }
        let snapshot = cache.snapshot(usize::MAX, t0);
        assert_eq!(snapshot.entries.len(), MAX_SNAPSHOT);
        assert_eq!(snapshot.total, MAX_SNAPSHOT + 10);
        assert_eq!(snapshot.entries[0].node, "n00000@h");
    }

    #[test]
    fn an_answer_that_changes_nothing_is_not_written_until_half_its_hold_is_gone() {
        let cache = Cache::default();
        let t0 = Instant::now();
        cache.offer(1, "a@h", Family::Inet, addr(1), 10 * SEC, SEC, t0);
        cache.offer(1, "a@h", Family::Inet, addr(1), 10 * SEC, SEC, t0 + 4 * SEC);
        assert_eq!(
            cache.entry("a@h", Family::Inet).unwrap().fresh_until,
            t0 + 10 * SEC
        );
        cache.offer(1, "a@h", Family::Inet, addr(1), 10 * SEC, SEC, t0 + 6 * SEC);
        assert_eq!(
            cache.entry("a@h", Family::Inet).unwrap().fresh_until,
            t0 + 16 * SEC
        );
        // A new address is written at once.
        cache.offer(1, "a@h", Family::Inet, addr(2), 10 * SEC, SEC, t0 + 7 * SEC);
        assert_eq!(cache.entry("a@h", Family::Inet).unwrap().endpoint, addr(2));
    }
}
