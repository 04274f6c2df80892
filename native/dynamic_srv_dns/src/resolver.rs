//! DNS queries through hickory-resolver, mapped to this crate's types and errors.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;

use crate::cache::Family;
use crate::error::{ConfigError, LookupError};
use crate::naming::{query_form, validate_dns_name};

/// One SRV record, its target as DNS spelled it, without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
    pub ttl: u32,
}

/// How queries reach the nameservers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// UDP, retried over TCP when the server sets the TC bit.
    #[default]
    Udp,
    /// TCP only: no server trims a TCP answer to fit a packet.
    Tcp,
}

/// The EDNS0 payload size hickory advertises on UDP queries (its `DEFAULT_MAX_PAYLOAD_LEN`).
pub const EDNS_PAYLOAD: usize = 1232;
/// The size a UDP answer may have when the server does not do EDNS0 (RFC 1035).
pub const PLAIN_UDP_PAYLOAD: usize = 512;
/// Consul's default `udp_answer_limit`: a UDP answer to a query without EDNS0 holds at most
/// this many records, and no TC bit says so.
pub const CONSUL_UDP_ANSWER_LIMIT: usize = 3;
/// Consul caps TCP answers at this many records (`maxServiceResponses` in agent/dns.go)...
pub const CONSUL_TCP_RECORD_CAP: usize = 1024;
/// ...and at this many bytes.
pub const CONSUL_TCP_BYTE_CAP: usize = 65_523;

/// What an answer's size says about whether the server may have left records out. A server
/// that trims an answer should set the TC bit; Consul does not by default, and other servers
/// cut answers to a record count. So an answer too close to what its transport can carry may
/// be partial even without TC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswerSize {
    pub transport: Transport,
    /// The answer re-encoded (with name compression, as servers send it).
    pub bytes: usize,
    pub truncated: bool,
    /// False when the answer carried no EDNS0 OPT record, so the server held it to 512 bytes.
    pub edns: bool,
}

impl AnswerSize {
    fn of(message: &Message, transport: Transport) -> Self {
        Self {
            transport,
            bytes: message.to_vec().map_or(0, |bytes| bytes.len()),
            truncated: message.metadata.truncation,
            edns: message.edns.is_some(),
        }
    }

    /// Why `records` SRV records in this answer may not be all there are, or `None`.
    pub fn partial_reason(&self, records: usize) -> Option<String> {
        if self.truncated {
            return Some("the TC (truncated) bit is set".into());
        }
        if records == 0 {
            return None;
        }
        // Servers trim by dropping whole records until the rest fits: if one more record of
        // this answer's average size would not have fit, records may have been dropped.
        let per_record = self.bytes.div_ceil(records);
        let tcp_cap = || {
            (records >= CONSUL_TCP_RECORD_CAP || self.bytes + per_record > CONSUL_TCP_BYTE_CAP)
                .then(|| {
                    format!(
                        "a TCP answer of {} bytes with {records} records is at the size a server caps TCP answers to",
                        self.bytes
                    )
                })
        };
        match self.transport {
            // Over the EDNS0 size, the answer came over TCP after a TC retry.
            Transport::Udp if self.bytes > EDNS_PAYLOAD.max(PLAIN_UDP_PAYLOAD) => tcp_cap(),
            Transport::Udp if !self.edns && records == CONSUL_UDP_ANSWER_LIMIT => Some(format!(
                "a UDP answer without EDNS0 holds exactly {records} records, Consul's udp_answer_limit"
            )),
            Transport::Udp => {
                // Consul drops the OPT record when it trims an EDNS0 answer: an answer over
                // 512 bytes was still held to the size we advertised.
                let limit = if self.edns || self.bytes > PLAIN_UDP_PAYLOAD {
                    EDNS_PAYLOAD
                } else {
                    PLAIN_UDP_PAYLOAD
                };
                (self.bytes + per_record > limit).then(|| {
                    format!(
                        "a UDP answer of {} bytes with {records} records fills the {limit}-byte packet, without the TC bit",
                        self.bytes
                    )
                })
            }
            Transport::Tcp => tcp_cap(),
        }
    }
}

/// An SRV answer plus the addresses of its targets found in the additional section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SrvAnswer {
    pub records: Vec<SrvRecord>,
    /// Lowercased target name -> (address, ttl).
    pub addresses: HashMap<String, Vec<(IpAddr, u32)>>,
    /// SRV records dropped because their target is not a usable host name.
    pub rejected_targets: Vec<String>,
    /// `None` for records that did not come from DNS (an injected resolver).
    pub size: Option<AnswerSize>,
}

impl SrvAnswer {
    pub fn address_of(&self, target: &str, family: Family) -> Option<(IpAddr, u32)> {
        self.addresses
            .get(&target.to_ascii_lowercase())?
            .iter()
            .find(|(ip, _)| family.matches(ip))
            .copied()
    }
}

pub struct Dns {
    resolver: TokioResolver,
    /// What `resolver` was built from, for the TCP transport's resolver per query.
    settings: (ResolverConfig, ResolverOpts),
    /// The servers asked, for messages: "nothing answered at 127.0.0.1:8600".
    servers: Vec<SocketAddr>,
    /// True when `servers` came from /etc/resolv.conf rather than DYNAMIC_SRV_NAMESERVERS.
    from_system: bool,
    transport: Transport,
}

impl Dns {
    /// Builds a resolver for `nameservers`, or from /etc/resolv.conf when the list is empty.
    /// Must be called inside a tokio runtime context.
    pub fn new(nameservers: &[SocketAddr], attempt_timeout: Duration) -> Result<Self, ConfigError> {
        Self::with_transport(nameservers, attempt_timeout, Transport::Udp)
    }

    /// Like `new`, asking over `transport`.
    pub fn with_transport(
        nameservers: &[SocketAddr],
        attempt_timeout: Duration,
        transport: Transport,
    ) -> Result<Self, ConfigError> {
        let (config, mut opts) = if nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                ConfigError::SystemResolver {
                    detail: e.to_string(),
                }
            })?
        } else {
            let servers = nameservers.iter().map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            });
            (
                ResolverConfig::from_parts(None, Vec::new(), servers.collect()),
                ResolverOpts::default(),
            )
        };
        // Over UDP a query or its answer can be lost, so hickory asks twice. Over TCP the
        // kernel already retransmits: a second attempt only asks the same server again,
        // doubling a slow server's load, and a server slower than one attempt failed every
        // lookup. One attempt gets the time both would have had.
        let (config, attempts, timeout) = match transport {
            Transport::Udp => (config, 1, attempt_timeout),
            Transport::Tcp => (tcp_only(config), 0, attempt_timeout * 2),
        };
        opts.timeout = timeout;
        opts.attempts = attempts;
        opts.edns0 = true;
        opts.use_hosts_file = ResolveHosts::Always;
        let servers = config
            .name_servers()
            .iter()
            .flat_map(|server| {
                server
                    .connections
                    .first()
                    .map(|c| SocketAddr::new(server.ip, c.port))
            })
            .collect();
        let resolver = build_resolver(config.clone(), opts.clone())?;
        Ok(Self {
            resolver,
            settings: (config, opts),
            servers,
            from_system: nameservers.is_empty(),
            transport,
        })
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// True when the servers come from /etc/resolv.conf.
    pub fn from_system_config(&self) -> bool {
        self.from_system
    }

    /// The servers as an operator reads them: `127.0.0.1:8600, [::1]:53`.
    pub fn servers_text(&self) -> String {
        let list: Vec<String> = self.servers.iter().map(ToString::to_string).collect();
        match (list.is_empty(), self.from_system) {
            (true, _) => "no nameserver (resolv.conf lists none)".to_string(),
            (false, true) => format!("{} (from /etc/resolv.conf)", list.join(", ")),
            (false, false) => list.join(", "),
        }
    }

    pub async fn srv(&self, name: &str) -> Result<SrvAnswer, LookupError> {
        let lookup = self
            .lookup(name, RecordType::SRV)
            .await
            .map_err(|e| map_error(name, "SRV", e))?;
        let mut answer = SrvAnswer {
            size: Some(AnswerSize::of(lookup.message(), self.transport)),
            ..SrvAnswer::default()
        };
        let owners = owners(name, &lookup);
        for record in lookup.answers() {
            if !owners.contains(&dotless_lowercase(&record.name)) {
                continue;
            }
            if let RData::SRV(srv) = &record.data {
                let target = without_root(&srv.target.to_ascii()).to_string();
                // "." means "no service here" (RFC 2782).
                if target.is_empty() {
                    continue;
                }
                if validate_dns_name(&target).is_err() {
                    answer.rejected_targets.push(target);
                    continue;
                }
                answer.records.push(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    port: srv.port,
                    target,
                    ttl: record.ttl,
                });
            }
        }
        // Only the addresses of this answer's own targets: an additional section may carry
        // any name, and an address for a name nobody asked about must go nowhere.
        let targets: HashSet<String> = answer
            .records
            .iter()
            .map(|r| r.target.to_ascii_lowercase())
            .collect();
        for record in lookup.additionals() {
            let ip = match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                _ => continue,
            };
            let owner = dotless_lowercase(&record.name);
            if targets.contains(&owner) {
                answer
                    .addresses
                    .entry(owner)
                    .or_default()
                    .push((ip, record.ttl));
            }
        }
        if answer.records.is_empty() && !answer.rejected_targets.is_empty() {
            return Err(LookupError::Malformed {
                name: name.to_string(),
                detail: format!(
                    "no SRV target is a valid host name (e.g. {:?})",
                    answer.rejected_targets[0]
                ),
            });
        }
        if answer.records.is_empty() {
            return Err(LookupError::NoRecords {
                name: name.to_string(),
                record_type: "SRV",
            });
        }
        Ok(answer)
    }

    /// The A (`Inet`) or AAAA (`Inet6`) addresses of `host` with their TTLs.
    pub async fn addresses(
        &self,
        host: &str,
        family: Family,
    ) -> Result<Vec<(IpAddr, u32)>, LookupError> {
        Ok(self.sized_addresses(host, family).await?.0)
    }

    /// `addresses`, plus the answer's size, for callers that must tell a trimmed answer.
    pub async fn sized_addresses(
        &self,
        host: &str,
        family: Family,
    ) -> Result<(Vec<(IpAddr, u32)>, AnswerSize), LookupError> {
        let (record_type, label) = match family {
            Family::Inet => (RecordType::A, "A"),
            Family::Inet6 => (RecordType::AAAA, "AAAA"),
        };
        let lookup = self
            .lookup(host, record_type)
            .await
            .map_err(|e| map_error(host, label, e))?;
        let owners = owners(host, &lookup);
        let addresses: Vec<_> = lookup
            .answers()
            .iter()
            .filter(|record| owners.contains(&dotless_lowercase(&record.name)))
            .filter_map(|record| match &record.data {
                RData::A(a) => Some((IpAddr::V4(a.0), record.ttl)),
                RData::AAAA(aaaa) => Some((IpAddr::V6(aaaa.0), record.ttl)),
                _ => None,
            })
            .filter(|(ip, _)| family.matches(ip))
            .collect();
        if addresses.is_empty() {
            return Err(LookupError::NoRecords {
                name: host.to_string(),
                record_type: label,
            });
        }
        Ok((addresses, AnswerSize::of(lookup.message(), self.transport)))
    }

    async fn lookup(&self, name: &str, record_type: RecordType) -> Result<Lookup, NetError> {
        match self.transport {
            Transport::Udp => self.resolver.lookup(query_form(name), record_type).await,
            // A resolver of its own per query, so its TCP connection closes with the answer.
            // A connection held open between polls ties up a server process: dnsmasq serves
            // TCP inline without forking under --no-daemon, and forks at most 20 children.
            Transport::Tcp => {
                let (config, opts) = self.settings.clone();
                let resolver =
                    build_resolver(config, opts).map_err(|e| NetError::from(e.to_string()))?;
                resolver.lookup(query_form(name), record_type).await
            }
        }
    }
}

fn build_resolver(
    config: ResolverConfig,
    opts: ResolverOpts,
) -> Result<TokioResolver, ConfigError> {
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| ConfigError::SystemResolver {
            detail: e.to_string(),
        })
}

/// The same servers, each asked over TCP only (on the port it had for UDP).
fn tcp_only(config: ResolverConfig) -> ResolverConfig {
    let (domain, search, servers) = config.into_parts();
    let servers = servers
        .into_iter()
        .map(|server| {
            let port = server.connections.first().map_or(53, |c| c.port);
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = port;
            NameServerConfig::new(server.ip, server.trust_negative_responses, vec![tcp])
        })
        .collect();
    ResolverConfig::from_parts(domain, search, servers)
}

/// The names whose records answer the question `asked`: that name and the CNAME targets
/// chained from it within the answer. A record owned by any other name is not an answer,
/// whatever section the server put it in. Not the name hickory last queried: an answer that
/// holds only an SRV record of another name makes hickory ask that record's target, and
/// the records of that second answer are not about `asked`.
fn owners(asked: &str, lookup: &Lookup) -> HashSet<String> {
    let asked = without_root(asked).to_ascii_lowercase();
    let queried = dotless_lowercase(lookup.query().name());
    // A single-label name goes through resolv.conf's search list: the answer is for the
    // name with a search domain appended.
    let start = if !asked.contains('.') && queried.starts_with(&format!("{asked}.")) {
        queried
    } else {
        asked
    };
    let mut owners = HashSet::from([start]);
    // Each pass follows the chain one link further; a loop or a long chain just stops.
    for _ in 0..MAX_CNAME_CHAIN {
        let before = owners.len();
        for record in lookup.answers() {
            if let RData::CNAME(alias) = &record.data {
                if owners.contains(&dotless_lowercase(&record.name)) {
                    owners.insert(dotless_lowercase(&alias.0));
                }
            }
        }
        if owners.len() == before {
            break;
        }
    }
    owners
}

/// How many CNAME links an answer is followed through (unbound's default is 11; a
/// service record needs one at most).
const MAX_CNAME_CHAIN: usize = 8;

fn dotless_lowercase(name: &Name) -> String {
    without_root(&name.to_ascii()).to_ascii_lowercase()
}

fn without_root(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

fn map_error(name: &str, record_type: &'static str, error: NetError) -> LookupError {
    let name = name.to_string();
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => {
            if no_records.response_code == ResponseCode::NXDomain {
                LookupError::NxDomain { name }
            } else {
                LookupError::NoRecords { name, record_type }
            }
        }
        NetError::Dns(DnsError::ResponseCode(code)) => LookupError::ServerFailure {
            name,
            code: code.to_str().to_string(),
            reason: match code {
                ResponseCode::ServFail => "servfail",
                ResponseCode::Refused => "refused",
                _ => "server_failure",
            },
        },
        NetError::Timeout => LookupError::Timeout {
            name,
            after: Duration::ZERO,
        },
        NetError::Proto(e) => LookupError::Malformed {
            name,
            detail: e.to_string(),
        },
        // hickory's words when every connection to every server failed (refused, unreachable).
        other if other.to_string().contains("no connections available") => {
            LookupError::Unreachable {
                name,
                detail: "no server accepted the query (connection refused or unreachable)".into(),
            }
        }
        other => LookupError::Unreachable {
            name,
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(bytes: usize, edns: bool) -> AnswerSize {
        AnswerSize {
            transport: Transport::Udp,
            bytes,
            truncated: false,
            edns,
        }
    }

    #[test]
    fn a_udp_answer_that_fills_its_packet_may_be_partial() {
        // Consul at hickory's 1232 bytes: 19 instances of ~60 bytes, and its OPT record gone.
        assert!(udp(1176, false).partial_reason(19).is_some());
        assert!(udp(1176, true).partial_reason(19).is_some());
        // Room for several more records: whole.
        assert_eq!(udp(400, true).partial_reason(6), None);
        assert_eq!(udp(1000, true).partial_reason(16), None);
        // Over 1232 bytes it came over TCP after a TC retry: whole unless at the TCP cap.
        assert_eq!(udp(5000, true).partial_reason(80), None);
        assert!(udp(45_000, true).partial_reason(1024).is_some());
    }

    #[test]
    fn without_edns_512_bytes_or_consuls_three_records_is_the_limit() {
        assert!(udp(500, false).partial_reason(8).is_some());
        assert!(udp(200, false).partial_reason(3).is_some());
        assert_eq!(udp(140, false).partial_reason(2), None);
        // With EDNS, 3 records is just 3 records.
        assert_eq!(udp(200, true).partial_reason(3), None);
    }

    #[test]
    fn the_tc_bit_always_means_partial() {
        let size = AnswerSize {
            truncated: true,
            ..udp(100, true)
        };
        assert!(size.partial_reason(1).is_some());
        assert!(size.partial_reason(0).is_some());
    }

    #[test]
    fn a_tcp_answer_at_consuls_cap_may_be_partial() {
        let tcp = |bytes| AnswerSize {
            transport: Transport::Tcp,
            bytes,
            truncated: false,
            edns: true,
        };
        assert_eq!(tcp(1500).partial_reason(24), None);
        assert_eq!(tcp(40_000).partial_reason(1000), None);
        assert!(tcp(45_000).partial_reason(1024).is_some());
        assert!(tcp(65_500).partial_reason(997).is_some());
        assert_eq!(tcp(0).partial_reason(0), None);
    }
}
