//! One polled service: its DNS queries, the mapping of answers to node names, the cache
//! filling that lets the epmd module connect without another query, and the membership.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::cache::Family;
use crate::config::PortMode;
use crate::engine::Engine;
use crate::error::LookupError;
use crate::membership::{Change, Completeness, Membership};
use crate::naming::{validate_dns_name, NodeName};
use crate::node_naming::{NodeNaming, Unmapped};
use crate::resolver::{AnswerSize, SrvAnswer, SrvRecord, Transport};

pub const DEFAULT_MAX_NODES: usize = 1024;

/// How many address lookups for SRV targets one poll runs at a time: an answer of a
/// thousand targets without addresses must not open a thousand sockets at once.
pub const TARGET_LOOKUPS_IN_FLIGHT: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyConfig {
    pub service: String,
    pub naming: NodeNaming,
    /// Which addresses `BasenameIp` asks for (A or AAAA), and which address of an SRV
    /// target `BasenamePortIp` puts in the node name.
    pub family: Family,
    pub max_nodes: usize,
    /// How long a node must be missing from complete answers before it counts as gone.
    pub removal_delay: Duration,
}

impl TopologyConfig {
    /// This topology as a writer of the shared address cache (`cache::Source`): the same
    /// for every start of the same service and naming, so a restarted poller updates what
    /// its predecessor cached instead of being locked out of it.
    pub fn cache_id(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        (self.service.to_ascii_lowercase(), &self.naming, self.family).hash(&mut hasher);
        hasher.finish()
    }

    pub fn validate(&self) -> Result<(), String> {
        validate_dns_name(&self.service).map_err(|e| format!("service: {e}"))?;
        self.naming.validate()?;
        if self.max_nodes == 0 {
            return Err("max_nodes must be at least 1".into());
        }
        Ok(())
    }
}

/// The result of one poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Poll {
    pub change: Change,
    /// Targets that did not map to a node name, with the reason.
    pub unmapped: Vec<(String, String)>,
    /// How many SRV (or A/AAAA) records the answer held.
    pub records: usize,
    /// The warning for the first possibly partial answer that lacked known members; again
    /// only after a complete answer.
    pub partial_warning: Option<String>,
    /// True when DNS gave no usable answer: the membership is the last good one.
    pub failed: bool,
    /// The DNS lookups this poll started: the service query, plus one per SRV target whose
    /// address it had to ask for.
    pub queries: usize,
    /// Set when DNS said the service itself is absent.
    pub absent: Option<Absent>,
}

/// DNS answered that the polled service does not exist, or has no records of the type asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Absent {
    /// `nxdomain` or `no_records` (`LookupError::reason`).
    pub reason: &'static str,
    /// The servers asked, as an operator reads them (`Dns::servers_text`).
    pub servers: String,
}

pub struct Topology {
    /// This topology as a writer of the shared address cache (`cache::Source`).
    id: u64,
    config: TopologyConfig,
    engine: Arc<Engine>,
    /// Addresses looked up for SRV targets, reused while fresh instead of asked every poll;
    /// only the targets of the last answer are kept.
    target_addresses: Mutex<HashMap<String, TargetAddresses>>,
    membership: Mutex<Membership>,
    /// True from a partial-answer warning until the next complete answer.
    warned_partial: Mutex<bool>,
}

impl Topology {
    pub fn new(config: TopologyConfig, engine: Arc<Engine>) -> Result<Self, String> {
        config.validate()?;
        Ok(Self {
            id: config.cache_id(),
            target_addresses: Mutex::new(HashMap::new()),
            membership: Mutex::new(Membership::new(config.max_nodes, config.removal_delay)),
            warned_partial: Mutex::new(false),
            config,
            engine,
        })
    }

    pub fn config(&self) -> &TopologyConfig {
        &self.config
    }

    pub fn members(&self) -> Vec<String> {
        self.membership().members()
    }

    /// Queries DNS and applies the answer.
    pub async fn poll(&self) -> Poll {
        let service = &self.config.service;
        let dns = self.engine.dns();
        if self.config.naming.uses_srv() {
            let (poll, target_queries) = match self.engine.bounded(service, dns.srv(service)).await
            {
                Ok(mut answer) => match self.complete_addresses(&mut answer).await {
                    (queries, Ok(())) => (self.apply_srv(&answer), queries),
                    (queries, Err(error)) => (self.failure(&error), queries),
                },
                Err(error) if error.is_authoritative_absence() => (
                    self.absent(self.apply_srv(&SrvAnswer::default()), &error),
                    0,
                ),
                Err(error) => (self.failure(&error), 0),
            };
            Poll {
                queries: 1 + target_queries,
                ..poll
            }
        } else {
            let lookup = dns.sized_addresses(service, self.config.family);
            let poll = match self.engine.bounded(service, lookup).await {
                Ok((addresses, size)) => {
                    let nodes = addresses
                        .iter()
                        .filter_map(|(ip, _)| self.config.naming.node_for_ip(*ip))
                        .collect();
                    let partial = self.trimmed(Some(size), addresses.len());
                    self.apply_nodes(nodes, Vec::new(), addresses.len(), partial)
                }
                Err(error) if error.is_authoritative_absence() => {
                    self.absent(self.apply_nodes(Vec::new(), Vec::new(), 0, None), &error)
                }
                Err(error) => self.failure(&error),
            };
            Poll { queries: 1, ..poll }
        }
    }

    /// A failed poll, its reason naming the servers asked (the error alone names only the
    /// DNS name and what went wrong).
    fn failure(&self, error: &LookupError) -> Poll {
        let servers = self.engine.dns().servers_text();
        self.apply_failure(&format!("{error} (nameservers {servers})"))
    }

    /// A poll whose service DNS says does not exist (NXDOMAIN) or has no records (NODATA):
    /// which of the two, and the servers that said so, for the poller's warning.
    fn absent(&self, poll: Poll, error: &LookupError) -> Poll {
        Poll {
            absent: Some(Absent {
                reason: error.reason(),
                servers: self.engine.dns().servers_text(),
            }),
            ..poll
        }
    }

    /// For a naming that puts the target's address in the node name: finds the addresses
    /// the additional section lacks (Consul leaves them out for a service registered under
    /// a host name it cannot resolve), from an earlier poll while fresh, else by asking,
    /// `TARGET_LOOKUPS_IN_FLIGHT` at a time, all within one lookup timeout. A target that has
    /// no address (or none in time) stays unmapped and makes the answer partial; a failed
    /// lookup fails the whole poll, so a DNS problem never makes a node look deregistered.
    /// Returns how many lookups it started.
    async fn complete_addresses(&self, answer: &mut SrvAnswer) -> (usize, Result<(), LookupError>) {
        if !self.config.naming.needs_target_address() {
            return (0, Ok(()));
        }
        let family = self.config.family;
        let mut missing: Vec<String> = answer
            .records
            .iter()
            .filter(|r| r.target.parse::<IpAddr>().is_err())
            .filter(|r| answer.address_of(&r.target, family).is_none())
            .map(|r| r.target.to_ascii_lowercase())
            .collect();
        missing.sort();
        missing.dedup();
        missing.truncate(self.config.max_nodes);
        let now = Instant::now();
        let mut to_ask = Vec::new();
        {
            let mut known = self.targets();
            known.retain(|target, _| missing.binary_search(target).is_ok());
            for target in missing {
                match known.get(&target).and_then(|known| known.fresh(now)) {
                    Some(addresses) => answer
                        .addresses
                        .entry(target)
                        .or_default()
                        .extend(addresses),
                    None => to_ask.push(target),
                }
            }
        }
        let mut to_ask = to_ask.into_iter();
        let mut started = 0;
        let mut lookups = JoinSet::new();
        // The whole phase within one lookup budget: past it, the targets not yet found stay
        // without an address, which makes the answer partial (nobody is removed) instead of
        // holding the poll for targets / 8 lookups.
        let deadline = tokio::time::Instant::now() + self.engine.config().lookup_timeout;
        loop {
            while lookups.len() < TARGET_LOOKUPS_IN_FLIGHT {
                let Some(target) = to_ask.next() else { break };
                started += 1;
                let engine = Arc::clone(&self.engine);
                lookups.spawn(async move {
                    let found = engine
                        .bounded(&target, engine.dns().addresses(&target, family))
                        .await;
                    (target, found)
                });
            }
            let Ok(Some(joined)) = tokio::time::timeout_at(deadline, lookups.join_next()).await
            else {
                break;
            };
            let Ok((target, found)) = joined else {
                continue;
            };
            let mut addresses = match found {
                Ok(addresses) => addresses,
                // Remembered too, so a target without an address is not asked every poll.
                Err(error) if error.is_authoritative_absence() => Vec::new(),
                // Dropping the set cancels the lookups still running.
                Err(error) => return (started, Err(error)),
            };
            // Only the first is ever used (`SrvAnswer::address_of`): a target with thousands
            // of A records must not keep them all.
            addresses.truncate(1);
            let min_ttl = self.engine.config().min_ttl;
            let ttl = addresses.first().map_or(0, |(_, ttl)| *ttl);
            self.targets().insert(
                target.clone(),
                TargetAddresses {
                    addresses: addresses.clone(),
                    fresh_until: Instant::now() + crate::cache::hold(ttl, min_ttl),
                },
            );
            answer
                .addresses
                .entry(target)
                .or_default()
                .extend(addresses);
        }
        (started, Ok(()))
    }

    /// Applies an SRV answer: maps targets, fills the address cache, updates membership.
    pub fn apply_srv(&self, answer: &SrvAnswer) -> Poll {
        self.engine.cache().note_dns_answer();
        let mut nodes = Vec::new();
        let mut unmapped: Vec<(String, String)> = answer
            .rejected_targets
            .iter()
            .map(|t| (t.clone(), "not a valid host name".to_string()))
            .collect();
        let now = Instant::now();
        let mut mapped_records = Vec::new();
        let mut no_address = Vec::new();
        for record in &answer.records {
            let family = self.config.family;
            let address = answer.address_of(&record.target, family).map(|(ip, _)| ip);
            let mapped = self
                .config
                .naming
                .node_for_record(&self.config.service, &record.target, record.port, address)
                .map_err(|why| match why {
                    Unmapped::NoAddress { target, .. } => Unmapped::NoAddress {
                        target,
                        family: family.label(),
                    },
                    other => other,
                });
            match mapped {
                Ok(node) => {
                    mapped_records.push((node.clone(), record));
                    nodes.push(node);
                }
                Err(why) => {
                    if matches!(why, Unmapped::NoAddress { .. }) {
                        no_address.push(record.target.clone());
                    }
                    unmapped.push((record.target.clone(), why.to_string()));
                }
            }
        }
        let records = answer.records.len() + answer.rejected_targets.len();
        // A registered instance whose address is missing this time cannot be named: its node
        // may be among the members this answer seems to lack.
        let partial = self.trimmed(answer.size, records).or_else(|| {
            no_address.first().map(|first| {
                let family = self.config.family.label();
                (
                    format!(
                        "{} SRV targets have no {family} address in the answer, and DNS gave \
                         none within the poll's budget (e.g. {first}), so their nodes cannot \
                         be named",
                        no_address.len(),
                    ),
                    format!(
                        "publish an {family} address for every SRV target (Consul leaves a \
                         target out of the additional section when the address it was \
                         registered with does not resolve)"
                    ),
                )
            })
        });
        let poll = self.apply_nodes(nodes, unmapped, records, partial);
        for node in &poll.change.left {
            if let Ok(parsed) = NodeName::parse(node) {
                self.engine.cache().expire(self.id, &parsed.key(), now);
            }
        }
        // Only members get cached: a flood of names over max_nodes must not fill the address
        // cache that every connection shares.
        let members: HashSet<String> = poll
            .change
            .members
            .iter()
            .map(|member| member.to_ascii_lowercase())
            .collect();
        for (node, record) in mapped_records {
            if members.contains(&node.to_ascii_lowercase()) {
                self.remember_address(&node, record, answer, now);
            }
        }
        poll
    }

    /// Applies records from an injected resolver (no addresses, so nothing is cached).
    pub fn apply_records(&self, records: &[SrvRecord]) -> Poll {
        let answer = SrvAnswer {
            records: records.to_vec(),
            ..SrvAnswer::default()
        };
        self.apply_srv(&answer)
    }

    pub fn apply_failure(&self, reason: &str) -> Poll {
        self.engine.cache().note_dns_failure(Instant::now());
        Poll {
            change: self.membership().observe_failure(reason),
            failed: true,
            ..Poll::default()
        }
    }

    /// `partial`: why the answer may lack registered nodes, if it may, and the fix.
    fn apply_nodes(
        &self,
        nodes: Vec<String>,
        unmapped: Vec<(String, String)>,
        records: usize,
        partial: Option<(String, String)>,
    ) -> Poll {
        let completeness = match partial {
            Some(_) => Completeness::MaybePartial,
            None => Completeness::Complete,
        };
        let change = self
            .membership()
            .observe_answer(nodes, completeness, Instant::now());
        let suspicion = partial.or_else(|| {
            change.rotating.then(|| {
                (
                    format!(
                        "successive answers list different subsets of the members ({records} \
                         records this time): the server answers with part of the service, e.g. \
                         under a record-count cap (Route 53 multivalue answers hold 8)"
                    ),
                    "have the server return every instance (Consul does over TCP); a server \
                     that caps answers at a record count cannot list a larger service"
                        .to_string(),
                )
            })
        });
        let partial_warning = self.partial_warning(suspicion, &change, records);
        Poll {
            change,
            unmapped,
            records,
            partial_warning,
            failed: false,
            queries: 0,
            absent: None,
        }
    }

    /// Why an answer of `records` records may have been trimmed by its server, and the fix
    /// for the transport the poll uses; `None` for an answer known to be whole.
    fn trimmed(&self, size: Option<AnswerSize>, records: usize) -> Option<(String, String)> {
        let reason = size?.partial_reason(records)?;
        let fix = match self.engine.dns().transport() {
            Transport::Udp => {
                "poll over TCP (dns_transport: :tcp, the default), or have the server set the \
                 TC bit on trimmed answers (Consul: dns_config { enable_truncate = true })"
            }
            Transport::Tcp => {
                "the server caps TCP answers (Consul: 1024 records); keep the service under \
                 that size"
            }
        };
        Some((reason, fix.to_string()))
    }

    /// Once per run of suspect answers that lacked members: what was seen and the fix.
    fn partial_warning(
        &self,
        suspicion: Option<(String, String)>,
        change: &Change,
        records: usize,
    ) -> Option<String> {
        let mut warned = self
            .warned_partial
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some((reason, fix)) = suspicion else {
            *warned = false;
            return None;
        };
        if *warned || change.kept_missing == 0 {
            return None;
        }
        *warned = true;
        Some(format!(
            "the answer for {} from {} may be partial: {reason}. It lists {records} records and \
             lacks {} known members, which stay members until answers show they left (two \
             successive whole answers that agree); until then nobody is removed. Fix: {fix}",
            self.config.service,
            self.engine.dns().servers_text(),
            change.kept_missing,
        ))
    }

    /// Caches where a listed node is, so the epmd module connects without a query of its
    /// own: the target's address, and the port the epmd module would use for that node (in
    /// `srv` mode the port of a record named as the node's own SRV name; `static` and `name`
    /// modes never take it from SRV).
    fn remember_address(&self, node: &str, record: &SrvRecord, answer: &SrvAnswer, now: Instant) {
        let Ok(parsed) = NodeName::parse(node) else {
            return;
        };
        let config = self.engine.config();
        let port = match config.port_mode {
            // The epmd module asks the SRV record `name.host`: only a record of that name
            // (the `service_prefix` naming) has the port it would find.
            PortMode::Srv => match parsed.srv_name() {
                Ok(own) if own.eq_ignore_ascii_case(record.target.trim_end_matches('.')) => {
                    record.port
                }
                _ => return,
            },
            PortMode::Static => match config.dist_port {
                Some(port) => port,
                None => return,
            },
            PortMode::Name => match parsed.port_from_name() {
                Ok(port) => port,
                Err(_) => return,
            },
        };
        for family in [Family::Inet, Family::Inet6] {
            if let Some((ip, address_ttl)) = answer.address_of(&record.target, family) {
                let ttl = record.ttl.min(address_ttl);
                let hold = crate::cache::hold(ttl, config.min_ttl);
                self.engine.cache().offer(
                    self.id,
                    &parsed.key(),
                    family,
                    SocketAddr::new(ip, port),
                    hold,
                    config.max_stale,
                    now,
                );
            }
        }
    }

    fn targets(&self) -> std::sync::MutexGuard<'_, HashMap<String, TargetAddresses>> {
        self.target_addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `nodes` as members before any answer (see `Membership::seed`), those that are
    /// node names a peer could be dialed by (a valid name part, an IP or DNS host); returns
    /// the ones taken.
    pub fn seed(&self, nodes: Vec<String>) -> Vec<String> {
        // `Name` mode: the host must be an IP or a DNS name, without srv mode's `name.host`.
        let valid = nodes.into_iter().filter(|node| {
            crate::node_naming::validate_node_name(node).is_ok()
                && NodeName::parse(node).is_ok_and(|n| n.check_resolvable(PortMode::Name).is_ok())
        });
        self.membership().seed(valid)
    }

    fn membership(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.membership.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A target's addresses from a lookup of an earlier poll.
struct TargetAddresses {
    addresses: Vec<(IpAddr, u32)>,
    fresh_until: Instant,
}

impl TargetAddresses {
    /// The addresses while fresh, their TTLs cut to what is left.
    fn fresh(&self, now: Instant) -> Option<Vec<(IpAddr, u32)>> {
        if now >= self.fresh_until {
            return None;
        }
        let left = u32::try_from((self.fresh_until - now).as_secs()).unwrap_or(u32::MAX);
        Some(
            self.addresses
                .iter()
                .map(|(ip, ttl)| (*ip, (*ttl).min(left)))
                .collect(),
        )
    }
}
