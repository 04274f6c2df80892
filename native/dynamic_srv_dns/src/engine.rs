//! What `DynamicSrv.Epmd` asks: which port to listen on, and where a peer node is.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::cache::{Cache, Cached, Family};
use crate::config::{Config, PortMode};
use crate::error::{ConfigError, LookupError, NameError};
use crate::naming::NodeName;
use crate::outage::{OutageTracker, Transition};
use crate::resolver::{Dns, Transport};
use crate::srv;

/// How a peer's endpoint is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Known without DNS: an IP-literal host and a port from the name or the config.
    Direct(SocketAddr),
    /// SRV query on this name; port and (usually) address from its answer.
    Srv(String),
    /// A/AAAA query on the host; the port is already known.
    Host(String, u16),
}

pub struct Engine {
    config: Config,
    dns: Dns,
    cache: Arc<Cache>,
    /// When this node is a release helper, the node it serves; set once at listen time so
    /// the cache-hit path only compares names.
    served_by_helper: RwLock<Option<NodeName>>,
    /// So a DNS outage is logged once, not once per failing lookup.
    outage: OutageTracker,
}

impl Engine {
    /// Must be called inside a tokio runtime context (the resolver binds to it).
    pub fn new(config: Config, cache: Arc<Cache>) -> Result<Self, ConfigError> {
        Self::with_transport(config, cache, Transport::Udp)
    }

    /// Like `new`, asking DNS over `transport`.
    pub fn with_transport(
        config: Config,
        cache: Arc<Cache>,
        transport: Transport,
    ) -> Result<Self, ConfigError> {
        // Two thirds of the budget for a lookup's SRV query (two attempts of a third over
        // UDP, one of two thirds over TCP), and whatever remains bounds the address query; a
        // poll's SRV query may take it all. `bounded` enforces the whole budget.
        let attempt_timeout = config.srv_attempt_timeout();
        let dns = Dns::with_transport(&config.nameservers, attempt_timeout, transport)?;
        Ok(Self {
            config,
            dns,
            cache,
            served_by_helper: RwLock::new(None),
            outage: OutageTracker::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    pub fn dns(&self) -> &Dns {
        &self.dns
    }

    /// The port this node listens on; 0 (any free port) for release helper nodes, which must
    /// not take the port of the node they serve. For a helper, remembers which node it serves.
    pub fn listen_port(&self, node: &str) -> Result<u16, NameError> {
        let node = NodeName::parse(node)?;
        node.check_resolvable(self.config.port_mode)?;
        let port = if node.is_helper() {
            0
        } else {
            match self.config.port_mode {
                PortMode::Name => node.port_from_name()?,
                PortMode::Srv | PortMode::Static => self.config.dist_port.unwrap_or(0),
            }
        };
        *self
            .served_by_helper
            .write()
            .unwrap_or_else(|p| p.into_inner()) = node.helper_target();
        Ok(port)
    }

    /// Answers from memory only; never waits on DNS.
    pub fn cached(&self, node: &str, family: Family) -> Result<Cached, LookupError> {
        let node = NodeName::parse(node)?;
        if let Plan::Direct(endpoint) = self.plan(&node, family)? {
            return Ok(Cached::Fresh(endpoint));
        }
        Ok(self
            .cache
            .get(&node.key(), family, self.outage_window(), Instant::now()))
    }

    /// For a `StaleDuringOutage` answer: true if this caller should start the background
    /// refresh (only one runs at a time per entry).
    pub fn claim_refresh(&self, node: &str, family: Family) -> bool {
        NodeName::parse(node).is_ok_and(|node| {
            self.cache.claim_refresh(
                &node.key(),
                family,
                self.config.lookup_timeout,
                Instant::now(),
            )
        })
    }

    /// Asks DNS (bounded by the lookup timeout) and caches the answer. When DNS fails and an
    /// expired answer is still within its stale window, that answer is returned instead.
    pub async fn resolve(&self, node: &str, family: Family) -> Result<SocketAddr, LookupError> {
        let node = NodeName::parse(node)?;
        let key = node.key();
        let found = match self.plan(&node, family)? {
            Plan::Direct(endpoint) => return Ok(endpoint),
            Plan::Srv(name) => self.bounded(&name, self.srv_endpoint(&name, family)).await,
            Plan::Host(host, port) => {
                let lookup = async {
                    let (ip, ttl) = self.first_address(&host, family).await?;
                    Ok((SocketAddr::new(ip, port), ttl))
                };
                self.bounded(&host, lookup).await
            }
        };
        let now = Instant::now();
        match found {
            Ok((endpoint, ttl)) => {
                self.cache.note_dns_answer();
                self.log_answered(now);
                let hold = crate::cache::hold(ttl, self.config.min_ttl);
                self.cache
                    .insert(&key, family, endpoint, hold, self.config.max_stale, now);
                tracing::debug!(node = %node, %endpoint, ttl, "{node} resolved to {endpoint}");
                Ok(endpoint)
            }
            Err(error) if error.is_authoritative_absence() => {
                // DNS answered: whatever outage there was is over.
                self.log_answered(now);
                self.cache.remove(&key, family);
                tracing::debug!(node = %node, reason = error.reason(), "{node} is not in DNS: {error}");
                Err(error)
            }
            Err(error) => {
                self.cache.note_dns_failure(now);
                let stale = self.cache.fail(&key, family, now);
                self.log_failed(&node, &error, stale, now);
                stale.ok_or(error)
            }
        }
    }

    fn log_failed(
        &self,
        node: &NodeName,
        error: &LookupError,
        stale: Option<SocketAddr>,
        now: Instant,
    ) {
        let nameservers = self.dns.servers_text();
        let fallback = match stale {
            Some(endpoint) => format!("using the last known address {endpoint}"),
            None => "no cached address to fall back on".to_string(),
        };
        match self.outage.failed(now) {
            Transition::Started => tracing::warn!(
                node = %node,
                reason = error.reason(),
                %nameservers,
                "DNS lookups failing (nameservers {nameservers}): {error}; {fallback}. \
                 Further failures are logged at debug level until DNS answers again"
            ),
            Transition::Ongoing { failures } => tracing::debug!(
                node = %node,
                reason = error.reason(),
                failures,
                "DNS still failing ({failures} failed lookups): {error}; {fallback}"
            ),
            Transition::Healthy | Transition::Ended { .. } => {}
        }
    }

    fn log_answered(&self, now: Instant) {
        if let Transition::Ended { failures, lasted } = self.outage.answered(now) {
            let nameservers = self.dns.servers_text();
            tracing::info!(
                failures,
                lasted_ms = lasted.as_millis() as u64,
                %nameservers,
                "DNS answers again (nameservers {nameservers}) after {failures} failed {} over {:.1} s",
                if failures == 1 { "lookup" } else { "lookups" },
                lasted.as_secs_f64()
            );
        }
    }

    /// The port of node `name` at `ip`, for `port_please`, which OTP calls only with the
    /// name part and an address it got elsewhere.
    pub fn port_please(&self, name: &str, ip: IpAddr) -> Option<u16> {
        match self.config.port_mode {
            PortMode::Name => NodeName {
                name: name.to_string(),
                host: ip.to_string(),
            }
            .port_from_name()
            .ok(),
            PortMode::Static => self.config.dist_port,
            PortMode::Srv => self.cache.port_for(name, ip),
        }
    }

    pub fn plan(&self, node: &NodeName, family: Family) -> Result<Plan, NameError> {
        // A release helper dials out and is never dialed: it listens on a random port, and the
        // port its name or ERL_DIST_PORT suggests belongs to the node it serves. A node asks
        // for one only after it quit (OTP reconnecting after a `bin/app remote` session), so
        // answer at once instead of sending a doomed query from inside net_kernel.
        if node.is_helper() {
            return Err(NameError::ReleaseHelper {
                node: node.to_string(),
            });
        }
        let port = match (self.config.port_mode, self.config.dist_port) {
            // A release helper (`bin/app rpc`) runs on the machine of the node it serves, with
            // that node's environment: the node listens on ERL_DIST_PORT. In srv mode the host
            // part names the whole service, not this machine, so go over loopback.
            (PortMode::Srv, Some(port)) if self.serves_local_helper(node) => {
                return Ok(Plan::Direct(SocketAddr::new(family.loopback(), port)));
            }
            (PortMode::Static, Some(port)) if self.serves_local_helper(node) => port,
            (PortMode::Srv, _) => return Ok(Plan::Srv(node.srv_name()?)),
            (PortMode::Name, _) => node.port_from_name()?,
            (PortMode::Static, port) => port.unwrap_or(0),
        };
        match node.host_ip() {
            Some(ip) if family.matches(&ip) => Ok(Plan::Direct(SocketAddr::new(ip, port))),
            Some(_) => Err(NameError::InvalidDnsName {
                name: node.host.clone(),
                why: "it is an IP address of the other family",
            }),
            None => {
                crate::naming::validate_dns_name(&node.host)?;
                Ok(Plan::Host(node.host.clone(), port))
            }
        }
    }

    /// How long after a failed refresh stale answers are served without asking DNS first;
    /// at least a second, so `min_ttl = 0` still shields net_kernel from a dead server.
    fn outage_window(&self) -> Duration {
        self.config.min_ttl.max(Duration::from_secs(1))
    }

    fn serves_local_helper(&self, node: &NodeName) -> bool {
        let served = self
            .served_by_helper
            .read()
            .unwrap_or_else(|p| p.into_inner());
        served.as_ref().is_some_and(|served| {
            served.name.eq_ignore_ascii_case(&node.name)
                && served.host.eq_ignore_ascii_case(&node.host)
        })
    }

    async fn srv_endpoint(
        &self,
        name: &str,
        family: Family,
    ) -> Result<(SocketAddr, u32), LookupError> {
        let answer = self.dns.srv(name).await?;
        let record =
            srv::select(&answer.records, rand::random()).ok_or_else(|| LookupError::NoRecords {
                name: name.to_string(),
                record_type: "SRV",
            })?;
        let (ip, address_ttl) = match answer.address_of(&record.target, family) {
            Some(found) => found,
            None => {
                self.first_address(&record.target, family)
                    .await
                    .map_err(|error| match error {
                        LookupError::NxDomain { .. } | LookupError::NoRecords { .. } => {
                            LookupError::NoAddress {
                                name: name.to_string(),
                                target: record.target.clone(),
                                family: family.label(),
                            }
                        }
                        other => other,
                    })?
            }
        };
        Ok((
            SocketAddr::new(ip, record.port),
            record.ttl.min(address_ttl),
        ))
    }

    async fn first_address(
        &self,
        host: &str,
        family: Family,
    ) -> Result<(IpAddr, u32), LookupError> {
        let addresses = self.dns.addresses(host, family).await?;
        Ok(addresses[0])
    }

    /// Runs `lookup` within the lookup timeout; a timeout names the whole budget.
    pub(crate) async fn bounded<T>(
        &self,
        name: &str,
        lookup: impl Future<Output = Result<T, LookupError>>,
    ) -> Result<T, LookupError> {
        let budget = self.config.lookup_timeout;
        match tokio::time::timeout(budget, lookup).await {
            Ok(Err(LookupError::Timeout { name, .. })) => Err(LookupError::Timeout {
                name,
                after: budget,
            }),
            Ok(result) => result,
            Err(_) => Err(LookupError::Timeout {
                name: name.to_string(),
                after: budget,
            }),
        }
    }
}
