//! What `DynamicSrv.diagnose()` and `mix dynamic_srv.doctor` ask DNS, and what each failure
//! means for the operator. Diagnostic queries are timed, bounded like every lookup, and never
//! read or write the shared address cache: a diagnosis shows what DNS answers *now*.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::{Cache, Family};
use crate::config::{Config, PortMode, ERL_DIST_PORT, NAMESERVERS};
use crate::engine::{Engine, Plan};
use crate::error::{ConfigError, LookupError};
use crate::naming::NodeName;
use crate::node_naming::NodeNaming;
use crate::resolver::{SrvAnswer, Transport};

/// SRV records shown per answer; a service of a thousand nodes need not print them all.
pub const MAX_RECORDS_SHOWN: usize = 20;

/// A problem found, in plain words, with the likely fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub fix: String,
}

/// One timed DNS query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub name: String,
    pub record_type: &'static str,
    pub elapsed: Duration,
    /// The answer, one line per record, or the failure with its fix.
    pub outcome: Result<Vec<String>, Failure>,
    /// Something wrong with an answer that did arrive (a trimmed one).
    pub problem: Option<Problem>,
    /// Set (instead of `problem`) when only a UDP poll suffers: the server trims UDP answers
    /// but answers TCP in full, which is how the membership poll asks by default.
    pub udp_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The atom `address_please` would return, e.g. `timeout`, `refused`, `nxdomain`.
    pub reason: &'static str,
    pub message: String,
    pub fix: String,
}

/// How a node is found, what DNS answered for it, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCheck {
    pub node: String,
    /// The lookup the epmd module makes for this node, in words.
    pub how: String,
    pub probes: Vec<Probe>,
    /// Where `address_please` would connect, if DNS gave an answer.
    pub endpoint: Option<SocketAddr>,
    pub problems: Vec<Problem>,
}

/// Queries DNS as the epmd module would, with its own empty cache.
pub struct Diagnoser {
    engine: Engine,
    /// The same servers over TCP, to tell whether a UDP answer was trimmed.
    tcp: Engine,
}

impl Diagnoser {
    /// Uses the full configuration when it is valid. When it is not (ERL_DIST_PORT missing,
    /// say), the resolver settings alone still allow looking at DNS, so the diagnosis can
    /// show both the bad variable and what DNS says. Must be called in a tokio context.
    pub fn new(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // An invalid timing variable is shown as such by `settings`; here it falls back to
        // its default so DNS can still be asked. Bad nameservers leave nothing to ask.
        let invalid: Vec<&str> = crate::config::settings(&get)
            .into_iter()
            .filter(|s| s.effective.is_err() && s.var != NAMESERVERS)
            .map(|s| s.var)
            .collect();
        let lenient = |var: &str| get(var).filter(|_| !invalid.contains(&var));
        let mut config = Config::discovery_from_env(lenient)?;
        if let Some(mode) =
            lenient(crate::config::PORT_MODE).and_then(|v| crate::config::parse_port_mode(&v).ok())
        {
            config.port_mode = mode;
        }
        config.dist_port =
            lenient(ERL_DIST_PORT).and_then(|v| crate::config::parse_port(ERL_DIST_PORT, &v).ok());
        Self::with_config(config)
    }

    pub fn with_config(config: Config) -> Result<Self, ConfigError> {
        // A private cache: a diagnosis must not change what the node answers from.
        let private = || Arc::new(Cache::with_capacity(1));
        let tcp = Engine::with_transport(config.clone(), private(), Transport::Tcp)?;
        let engine = Engine::new(config, private())?;
        Ok(Self { engine, tcp })
    }

    pub fn config(&self) -> &Config {
        self.engine.config()
    }

    /// The nameservers asked, in words.
    pub fn servers_text(&self) -> String {
        self.engine.dns().servers_text()
    }

    /// Marks this node as a release helper if `node` is one, as listening would.
    pub fn note_own_name(&self, node: &str) {
        let _ = self.engine.listen_port(node);
    }

    pub async fn probe_srv(&self, name: &str) -> (Probe, Option<SrvAnswer>) {
        let started = Instant::now();
        let result = self.engine.bounded(name, self.engine.dns().srv(name)).await;
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok(answer) => Ok(srv_lines(answer)),
            Err(error) => Err(self.failure(error, elapsed)),
        };
        let probe = Probe {
            name: name.to_string(),
            record_type: "SRV",
            elapsed,
            outcome,
            problem: None,
            udp_only: false,
        };
        (probe, result.ok())
    }

    /// Asks over TCP once more: a server that answers a different subset each time (a
    /// record-count cap, as Route 53's multivalue answers) shows as two whole-looking answers
    /// of one size that disagree.
    async fn rotating_subset(&self, name: &str, first: &SrvAnswer) -> Option<Problem> {
        let second = self
            .tcp
            .bounded(name, self.tcp.dns().srv(name))
            .await
            .ok()?;
        let set = |answer: &SrvAnswer| -> std::collections::BTreeSet<(String, u16)> {
            answer
                .records
                .iter()
                .map(|r| (r.target.to_ascii_lowercase(), r.port))
                .collect()
        };
        let (a, b) = (set(first), set(&second));
        if a == b || a.len() != b.len() {
            return None;
        }
        let seen = a.union(&b).count();
        Some(Problem {
            what: format!(
                "SRV {name}: {} answers a different subset of the service each time ({} \
                 records per answer, {seen} different ones in two answers): a record-count cap",
                self.servers_text(),
                a.len()
            ),
            fix: "have the server return every instance (Route 53 / Cloud Map multivalue \
                  answers hold at most 8 records); members join as answers show them and are \
                  removed only when two successive answers agree"
                .to_string(),
        })
    }

    /// `probe_srv` over UDP, as a resolver asks by default, checked against the same query
    /// over TCP: a server that trims UDP answers without the TC bit (Consul by default) shows
    /// as a UDP answer with fewer records, which is what a UDP poll would act on.
    pub async fn probe_service(&self, name: &str) -> Probe {
        self.probe_service_answer(name).await.0
    }

    /// `probe_service`, with the fullest answer seen (over TCP when that worked).
    async fn probe_service_answer(&self, name: &str) -> (Probe, Option<SrvAnswer>) {
        let (mut probe, udp) = self.probe_srv(name).await;
        let Some(udp) = udp else {
            return (probe, None);
        };
        let tcp = self.tcp.bounded(name, self.tcp.dns().srv(name)).await;
        let fullest = match &tcp {
            Ok(tcp) => tcp.clone(),
            Err(_) => udp.clone(),
        };
        let udp_records = udp.records.len() + udp.rejected_targets.len();
        let servers = self.servers_text();
        probe.problem = match tcp {
            Ok(tcp) => {
                let tcp_records = tcp.records.len() + tcp.rejected_targets.len();
                let tcp_partial = tcp.size.and_then(|size| size.partial_reason(tcp_records));
                if let Some(reason) = tcp_partial {
                    Some(Problem {
                        what: format!(
                            "SRV {name}: even the TCP answer may be partial ({reason}); \
                             members missing from it are never removed"
                        ),
                        fix: "keep the service under the server's TCP cap (Consul: 1024 \
                              instances), e.g. split it into several services"
                            .to_string(),
                    })
                } else if let Some(subset) = self.rotating_subset(name, &tcp).await {
                    Some(subset)
                } else if tcp_records > udp_records {
                    probe.udp_only = true;
                    let tc = udp.size.is_some_and(|size| size.truncated);
                    Some(Problem {
                        what: format!(
                            "SRV {name}: {servers} trims UDP answers{}: {udp_records} records \
                             over UDP, {tcp_records} over TCP",
                            if tc {
                                ""
                            } else {
                                " without setting the TC bit"
                            }
                        ),
                        fix: "a poll over TCP (dns_transport: :tcp, the default) is not \
                              affected; on Consul also set dns_config { enable_truncate = true } \
                              so every resolver retries trimmed answers over TCP"
                            .to_string(),
                    })
                } else {
                    None
                }
            }
            // A server that does not do TCP: fine for UDP polling only while answers fit.
            Err(error) => Some(Problem {
                what: format!("SRV {name} over TCP failed: {error}"),
                fix: format!(
                    "let {servers} answer over TCP (the membership poll uses it by default), \
                     or poll with dns_transport: :udp"
                ),
            }),
        };
        (probe, Some(fullest))
    }

    /// What a membership poll of `service` would list now: the answer (timed, checked as
    /// `probe_service` does) and the node names `naming` gives its records, or `None` when
    /// the lookup failed. A target whose address the naming needs and the answer lacks is
    /// looked up, as the poller does.
    pub async fn service_members(
        &self,
        service: &str,
        naming: &NodeNaming,
        family: Family,
    ) -> (Probe, Option<Vec<String>>) {
        if !naming.uses_srv() {
            let (probe, ips) = self.probe_all_addresses(service, family).await;
            let members = ips.map(|ips| {
                ips.into_iter()
                    .filter_map(|ip| naming.node_for_ip(ip))
                    .collect()
            });
            return (probe, members);
        }
        let (probe, answer) = self.probe_service_answer(service).await;
        let Some(answer) = answer else {
            return (probe, None);
        };
        let mut members = Vec::new();
        for record in &answer.records {
            let mut address = answer.address_of(&record.target, family).map(|(ip, _)| ip);
            if address.is_none()
                && naming.needs_target_address()
                && record.target.parse::<IpAddr>().is_err()
            {
                address = self.probe_addresses(&record.target, family).await.1;
            }
            if let Ok(node) = naming.node_for_record(service, &record.target, record.port, address)
            {
                members.push(node);
            }
        }
        members.sort();
        members.dedup();
        (probe, Some(members))
    }

    /// `probe_addresses` with every address, or `None` when the lookup failed. An
    /// authoritative "no such name / no records" is an empty list, as the poller takes it.
    async fn probe_all_addresses(
        &self,
        host: &str,
        family: Family,
    ) -> (Probe, Option<Vec<IpAddr>>) {
        let record_type = record_type(family);
        let started = Instant::now();
        let result = self
            .engine
            .bounded(host, self.engine.dns().addresses(host, family))
            .await;
        let elapsed = started.elapsed();
        let (outcome, ips) = match &result {
            Ok(addresses) => (
                Ok(addresses
                    .iter()
                    .map(|(ip, ttl)| format!("{ip} (ttl {ttl} s)"))
                    .collect()),
                Some(addresses.iter().map(|(ip, _)| *ip).collect()),
            ),
            Err(error) => (Err(self.failure(error, elapsed)), None),
        };
        let probe = Probe {
            name: host.to_string(),
            record_type,
            elapsed,
            outcome,
            problem: None,
            udp_only: false,
        };
        (probe, ips)
    }

    pub async fn probe_addresses(&self, host: &str, family: Family) -> (Probe, Option<IpAddr>) {
        let record_type = record_type(family);
        let started = Instant::now();
        let result = self
            .engine
            .bounded(host, self.engine.dns().addresses(host, family))
            .await;
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok(addresses) => Ok(addresses
                .iter()
                .map(|(ip, ttl)| format!("{ip} (ttl {ttl} s)"))
                .collect()),
            Err(error) => Err(self.failure(error, elapsed)),
        };
        let first = result.ok().and_then(|a| a.first().map(|(ip, _)| *ip));
        let probe = Probe {
            name: host.to_string(),
            record_type,
            elapsed,
            outcome,
            problem: None,
            udp_only: false,
        };
        (probe, first)
    }

    /// Looks a node up the way `address_please` does. With `listen_port` (this node's own
    /// port), also checks that DNS advertises the port the node listens on.
    pub async fn check_node(
        &self,
        node: &str,
        family: Family,
        listen_port: Option<u16>,
    ) -> NodeCheck {
        let mut check = NodeCheck {
            node: node.to_string(),
            how: String::new(),
            probes: Vec::new(),
            endpoint: None,
            problems: Vec::new(),
        };
        let plan = NodeName::parse(node)
            .map_err(LookupError::from)
            .and_then(|name| Ok(self.engine.plan(&name, family)?));
        let mode = self.config().port_mode;
        match plan {
            Err(error) => {
                check.how = "cannot be looked up".to_string();
                check.problems.push(Problem {
                    what: error.to_string(),
                    fix: advice(&error, self, mode),
                });
            }
            Ok(Plan::Direct(endpoint)) => {
                check.how = format!(
                    "no DNS query: the address is in the name or the node is served over \
                     loopback (DYNAMIC_SRV_PORT_MODE={mode})"
                );
                check.endpoint = Some(endpoint);
            }
            Ok(Plan::Host(host, port)) => {
                check.how = format!(
                    "{} record of {host}, port {port} ({})",
                    record_type(family),
                    port_origin(mode)
                );
                let (probe, ip) = self.probe_addresses(&host, family).await;
                check.probes.push(probe);
                check.endpoint = ip.map(|ip| SocketAddr::new(ip, port));
            }
            Ok(Plan::Srv(name)) => {
                // Asking would only add a REFUSED or NXDOMAIN whose fix (another server)
                // is wrong: the port mode is.
                if let Some(problem) = NodeName::parse(node)
                    .ok()
                    .and_then(|parsed| ip_host_in_srv_mode(&parsed))
                {
                    check.how = format!("not asked: SRV record {name} (DYNAMIC_SRV_PORT_MODE=srv)");
                    check.problems.push(problem);
                    return check;
                }
                check.how = format!(
                    "SRV record {name} for the port, then its target's {} record \
                     (DYNAMIC_SRV_PORT_MODE=srv)",
                    record_type(family)
                );
                let (probe, answer) = self.probe_srv(&name).await;
                check.probes.push(probe);
                if let Some(answer) = answer {
                    self.follow_srv(&name, &answer, family, listen_port, &mut check)
                        .await;
                }
            }
        }
        check
    }

    async fn follow_srv(
        &self,
        name: &str,
        answer: &SrvAnswer,
        family: Family,
        listen_port: Option<u16>,
        check: &mut NodeCheck,
    ) {
        let Some(record) = crate::srv::select(&answer.records, 0) else {
            return;
        };
        let ip = match answer.address_of(&record.target, family) {
            Some((ip, _)) => Some(ip),
            None => {
                let (probe, ip) = self.probe_addresses(&record.target, family).await;
                if probe.outcome.is_err() {
                    check.problems.push(Problem {
                        what: format!(
                            "SRV target {} has no {} address: neither in the SRV answer's \
                             additional section nor in its own {} query",
                            record.target,
                            family.label(),
                            record_type(family)
                        ),
                        fix: no_address_fix(family),
                    });
                }
                check.probes.push(probe);
                ip
            }
        };
        check.endpoint = ip.map(|ip| SocketAddr::new(ip, record.port));
        if let Some(listening) = listen_port {
            let advertised: Vec<u16> = answer.records.iter().map(|r| r.port).collect();
            if !advertised.contains(&listening) {
                let ports: Vec<String> = advertised.iter().map(u16::to_string).collect();
                check.problems.push(Problem {
                    what: format!(
                        "DNS advertises port {} for this node ({name}), but it listens on \
                         {listening}: peers will dial the wrong port",
                        ports.join(", ")
                    ),
                    fix: format!(
                        "register the SRV record {name} with the port in {ERL_DIST_PORT} \
                         ({listening}), or set {ERL_DIST_PORT} to the port the scheduler \
                         assigned (Nomad: ERL_DIST_PORT=${{NOMAD_PORT_dist}})"
                    ),
                });
            }
        }
    }

    fn failure(&self, error: &LookupError, elapsed: Duration) -> Failure {
        // The resolver gives up after two tries of a third of the budget each: say when it
        // actually gave up, not the whole budget.
        let message = match error {
            LookupError::Timeout { name, .. } => format!(
                "{name}: no answer (gave up after {} ms)",
                elapsed.as_millis()
            ),
            other => other.to_string(),
        };
        Failure {
            reason: error.reason(),
            message,
            fix: advice(error, self, self.config().port_mode),
        }
    }
}

/// A node named after an IP address cannot have an SRV record of its own under the name
/// `srv` mode asks for (`name.10.0.0.5` is not a name any DNS server holds): its port comes
/// from its name (`name` mode) or from ERL_DIST_PORT (`static` mode) instead.
pub fn ip_host_in_srv_mode(node: &NodeName) -> Option<Problem> {
    let ip = node.host_ip()?;
    let name = &node.name;
    let digits = &name[name.trim_end_matches(|c: char| c.is_ascii_digit()).len()..];
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
    let base = if base.is_empty() { "app" } else { base };
    Some(Problem {
        what: format!(
            "node {node} is named after an IP address, but DYNAMIC_SRV_PORT_MODE=srv looks \
             its port up in the SRV record {name}.{ip}, which no DNS server publishes"
        ),
        fix: if digits.is_empty() {
            format!(
                "name the node {base}-PORT@{ip} and set DYNAMIC_SRV_PORT_MODE=name (e.g. \
                 {base}-4370@{ip} listens on 4370), or set DYNAMIC_SRV_PORT_MODE=static if \
                 every node listens on ERL_DIST_PORT"
            )
        } else {
            format!(
                "set DYNAMIC_SRV_PORT_MODE=name: {node} then listens on {digits}, the digits \
                 of its name (the poller names nodes alike with node_naming: \
                 {{:basename_port_ip, \"{base}\"}})"
            )
        },
    })
}

fn record_type(family: Family) -> &'static str {
    match family {
        Family::Inet => "A",
        Family::Inet6 => "AAAA",
    }
}

fn port_origin(mode: PortMode) -> &'static str {
    match mode {
        PortMode::Name => "from the node name's digits, DYNAMIC_SRV_PORT_MODE=name",
        PortMode::Static => "ERL_DIST_PORT, DYNAMIC_SRV_PORT_MODE=static",
        PortMode::Srv => "ERL_DIST_PORT of the node this release helper serves",
    }
}

fn no_address_fix(family: Family) -> String {
    match family {
        Family::Inet => "publish an A record for the SRV target (Consul and dnsmasq send it in \
                         the SRV answer's additional section)"
            .to_string(),
        Family::Inet6 => "this node uses IPv6 distribution (-proto_dist inet6_tcp): publish an \
                          AAAA record for the target, or run IPv4 distribution"
            .to_string(),
    }
}

fn srv_lines(answer: &SrvAnswer) -> Vec<String> {
    let mut lines: Vec<String> = answer
        .records
        .iter()
        .take(MAX_RECORDS_SHOWN)
        .map(|r| {
            let addresses: Vec<String> = answer
                .addresses
                .get(&r.target.to_ascii_lowercase())
                .map(|list| list.iter().map(|(ip, _)| ip.to_string()).collect())
                .unwrap_or_default();
            let addresses = if addresses.is_empty() {
                "no address in the answer".to_string()
            } else {
                addresses.join(", ")
            };
            format!(
                "{}:{} (priority {}, weight {}, ttl {} s; {addresses})",
                r.target, r.port, r.priority, r.weight, r.ttl
            )
        })
        .collect();
    if answer.records.len() > MAX_RECORDS_SHOWN {
        lines.push(format!(
            "... and {} more records",
            answer.records.len() - MAX_RECORDS_SHOWN
        ));
    }
    for target in answer.rejected_targets.iter().take(5) {
        lines.push(format!(
            "ignored: target {target:?} is not a valid host name"
        ));
    }
    lines
}

/// What to do about a failed lookup, in words. `diagnoser` supplies which servers were
/// asked, whether they came from /etc/resolv.conf, and the timeout.
pub fn advice(error: &LookupError, diagnoser: &Diagnoser, mode: PortMode) -> String {
    let servers = diagnoser.servers_text();
    let system = diagnoser.engine.dns().from_system_config();
    let timeout = diagnoser.config().lookup_timeout.as_millis();
    advice_for(error, &servers, system, timeout, mode)
}

/// `advice` without a resolver, for tests and for callers that know the facts.
pub fn advice_for(
    error: &LookupError,
    servers: &str,
    system: bool,
    timeout_ms: u128,
    mode: PortMode,
) -> String {
    let zone_fix = if system {
        format!(
            "the resolv.conf nameservers ({servers}) do not serve this zone; set \
             {NAMESERVERS} to the server that does (e.g. the Consul agent, 127.0.0.1:8600)"
        )
    } else {
        format!("point {NAMESERVERS} at the server that serves this zone")
    };
    match error {
        LookupError::NxDomain { name } if system => format!(
            "the resolv.conf nameserver answered NXDOMAIN for {name}; set {NAMESERVERS} to \
             the DNS server that knows your service (e.g. the Consul agent, 127.0.0.1:8600)"
        ),
        LookupError::NxDomain { name } => format!(
            "{servers} says {name} does not exist: is the service (or this node) registered \
             under that name? {}",
            name_hint(mode)
        ),
        LookupError::NoRecords { name, record_type } if *record_type == "AAAA" => format!(
            "{name} has no AAAA record but this node uses IPv6 distribution \
             (-proto_dist inet6_tcp): publish AAAA records, or run IPv4 distribution"
        ),
        LookupError::NoRecords { name, record_type } => format!(
            "{name} exists but has no {record_type} records: register them{}",
            if *record_type == "SRV" {
                format!(" (an SRV record per node). {}", name_hint(mode))
            } else {
                String::new()
            }
        ),
        LookupError::ServerFailure { reason, .. } if *reason == "refused" => {
            format!("{servers} refused the query (REFUSED): {zone_fix}")
        }
        LookupError::ServerFailure { code, .. } => format!(
            "{servers} answered {code}: the server could not resolve the name (its upstream \
             or the zone is broken); check the DNS server's own logs"
        ),
        LookupError::Timeout { .. } => format!(
            "nothing answered at {servers} within {timeout_ms} ms: is the DNS server (the \
             Consul agent) running, and are the address and port right? If it is only slow, \
             raise DYNAMIC_SRV_LOOKUP_TIMEOUT_MS"
        ),
        LookupError::Unreachable { detail, .. } => format!(
            "cannot reach {servers} ({detail}): is the DNS server running and listening on \
             that address and port?"
        ),
        LookupError::Malformed { .. } => format!(
            "the answer from {servers} could not be used (malformed, truncated or an invalid \
             target); an answer over 64 KB can come out broken: publish fewer records per \
             name, or check the server"
        ),
        LookupError::NoAddress { target, family, .. } if *family == "IPv6" => format!(
            "the SRV target {target} has no AAAA record but this node uses IPv6 distribution: \
             publish AAAA records, or run IPv4 distribution"
        ),
        LookupError::NoAddress { target, .. } => {
            format!("publish an A record for the SRV target {target}")
        }
        LookupError::Name(_) => "use node names whose host part is a DNS name or an IP \
                                 address (name@my-app.service.consul)"
            .to_string(),
    }
}

fn name_hint(mode: PortMode) -> &'static str {
    match mode {
        PortMode::Srv => {
            "For node name@host the SRV record asked is name.host (node-a@my-app.service.consul \
             -> node-a.my-app.service.consul)"
        }
        PortMode::Name | PortMode::Static => "The host part of the node name must resolve",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nx() -> LookupError {
        LookupError::NxDomain {
            name: "n1.dyn.test".into(),
        }
    }

    #[test]
    fn nxdomain_from_resolv_conf_says_set_the_nameservers() {
        let text = advice_for(&nx(), "10.0.0.2:53", true, 3000, PortMode::Srv);
        assert!(
            text.starts_with("the resolv.conf nameserver answered NXDOMAIN"),
            "{text}"
        );
        assert!(text.contains("set DYNAMIC_SRV_NAMESERVERS"), "{text}");
        let text = advice_for(&nx(), "127.0.0.1:8600", false, 3000, PortMode::Srv);
        assert!(text.contains("127.0.0.1:8600 says n1.dyn.test does not exist"));
        assert!(text.contains("name.host"), "{text}");
    }

    #[test]
    fn timeout_names_the_server_and_the_budget() {
        let error = LookupError::Timeout {
            name: "x".into(),
            after: Duration::from_millis(300),
        };
        let text = advice_for(&error, "127.0.0.1:9", false, 300, PortMode::Srv);
        assert!(
            text.starts_with("nothing answered at 127.0.0.1:9 within 300 ms"),
            "{text}"
        );
        assert!(text.contains("Consul agent"), "{text}");
    }

    #[test]
    fn refused_servfail_malformed_unreachable() {
        let refused = LookupError::ServerFailure {
            name: "x".into(),
            code: "Query Refused".into(),
            reason: "refused",
        };
        let text = advice_for(
            &refused,
            "10.0.0.2:53 (from /etc/resolv.conf)",
            true,
            1,
            PortMode::Srv,
        );
        assert!(text.contains("refused the query (REFUSED)"), "{text}");
        assert!(text.contains("set DYNAMIC_SRV_NAMESERVERS"), "{text}");
        let servfail = LookupError::ServerFailure {
            name: "x".into(),
            code: "Server Failure".into(),
            reason: "servfail",
        };
        assert!(advice_for(&servfail, "s", false, 1, PortMode::Srv).contains("logs"));
        let malformed = LookupError::Malformed {
            name: "x".into(),
            detail: "bad".into(),
        };
        assert!(advice_for(&malformed, "s", false, 1, PortMode::Srv).contains("64 KB"));
        let unreachable = LookupError::Unreachable {
            name: "x".into(),
            detail: "connection refused".into(),
        };
        assert!(advice_for(&unreachable, "s", false, 1, PortMode::Srv)
            .contains("cannot reach s (connection refused)"));
    }

    #[test]
    fn missing_ipv6_records_point_at_inet6_distribution() {
        let no_aaaa = LookupError::NoRecords {
            name: "h".into(),
            record_type: "AAAA",
        };
        assert!(advice_for(&no_aaaa, "s", false, 1, PortMode::Name).contains("inet6_tcp"));
        let no_address = LookupError::NoAddress {
            name: "n".into(),
            target: "t".into(),
            family: "IPv6",
        };
        assert!(advice_for(&no_address, "s", false, 1, PortMode::Srv).contains("AAAA"));
    }

    #[test]
    fn ip_host_in_srv_mode_names_the_port_mode_to_use() {
        let named = NodeName::parse("app-4370@10.0.0.5").unwrap();
        let problem = ip_host_in_srv_mode(&named).unwrap();
        assert!(
            problem.what.contains("SRV record app-4370.10.0.0.5"),
            "{problem:?}"
        );
        assert!(
            problem.fix.starts_with(
                "set DYNAMIC_SRV_PORT_MODE=name: app-4370@10.0.0.5 then listens on 4370"
            ),
            "{problem:?}"
        );
        assert!(
            problem.fix.contains(r#"{:basename_port_ip, "app"}"#),
            "{problem:?}"
        );
        let bare = NodeName::parse("web@10.0.0.5").unwrap();
        let fix = ip_host_in_srv_mode(&bare).unwrap().fix;
        assert!(fix.starts_with("name the node web-PORT@10.0.0.5"), "{fix}");
        assert!(ip_host_in_srv_mode(&NodeName::parse("web@host.example").unwrap()).is_none());
    }
}
