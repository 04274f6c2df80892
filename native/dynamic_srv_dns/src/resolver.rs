//! DNS queries through hickory-resolver, mapped to this crate's types and errors.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
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

/// An SRV answer plus the addresses of its targets found in the additional section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SrvAnswer {
    pub records: Vec<SrvRecord>,
    /// Lowercased target name -> (address, ttl).
    pub addresses: HashMap<String, Vec<(IpAddr, u32)>>,
    /// SRV records dropped because their target is not a usable host name.
    pub rejected_targets: Vec<String>,
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
}

impl Dns {
    /// Builds a resolver for `nameservers`, or from /etc/resolv.conf when the list is empty.
    /// Must be called inside a tokio runtime context.
    pub fn new(nameservers: &[SocketAddr], attempt_timeout: Duration) -> Result<Self, ConfigError> {
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
        opts.timeout = attempt_timeout;
        opts.attempts = 1;
        opts.edns0 = true;
        opts.use_hosts_file = ResolveHosts::Always;
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| ConfigError::SystemResolver {
                detail: e.to_string(),
            })?;
        Ok(Self { resolver })
    }

    pub async fn srv(&self, name: &str) -> Result<SrvAnswer, LookupError> {
        let lookup = self
            .resolver
            .lookup(query_form(name), RecordType::SRV)
            .await
            .map_err(|e| map_error(name, "SRV", e))?;
        let mut answer = SrvAnswer::default();
        for record in lookup.answers() {
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
        for record in lookup.additionals() {
            let ip = match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                _ => continue,
            };
            answer
                .addresses
                .entry(without_root(&record.name.to_ascii()).to_ascii_lowercase())
                .or_default()
                .push((ip, record.ttl));
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
        let (record_type, label) = match family {
            Family::Inet => (RecordType::A, "A"),
            Family::Inet6 => (RecordType::AAAA, "AAAA"),
        };
        let lookup = self
            .resolver
            .lookup(query_form(host), record_type)
            .await
            .map_err(|e| map_error(host, label, e))?;
        let addresses: Vec<_> = lookup
            .answers()
            .iter()
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
        Ok(addresses)
    }
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
        other => LookupError::Unreachable {
            name,
            detail: other.to_string(),
        },
    }
}
