//! How the membership poller turns an SRV target (or an address) into a node name.

use std::net::IpAddr;

use crate::naming::validate_dns_name;

/// Atoms hold at most 255 characters; a longer node name could not even be created.
const MAX_NODE_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeNaming {
    /// The original library's convention: target `node-a.my-svc.service.consul` under service
    /// `my-svc.service.consul` is node `node-a@my-svc.service.consul`.
    ServicePrefix,
    /// Caravan's convention: `basename-PORT@target`, the port from the SRV record.
    BasenamePort(String),
    /// `basename@target`.
    Basename(String),
    /// `basename-PORT@IP`: the SRV port, and the address of the target (from the answer's
    /// additional section, else an A/AAAA query). Whatever name DNS gives the target (Consul's
    /// `<hex-ip>.addr.<dc>.consul`, `<node>.node.<dc>.consul` or a registered host name), the
    /// node can name itself from what its scheduler tells it, e.g.
    /// `app-${NOMAD_PORT_dist}@${NOMAD_IP_dist}`.
    BasenamePortIp(String),
    /// Query the service for A/AAAA records and name nodes `basename@ip`, as libcluster's
    /// DNSPoll, dns_cluster and Peerage do.
    BasenameIp(String),
}

/// Why a target was not turned into a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmapped {
    #[error("target {target:?} is not under the service name {service:?}")]
    OutsideService { target: String, service: String },
    #[error("target {target:?} is not a valid host name: {why}")]
    InvalidTarget { target: String, why: String },
    #[error("node name {node:?} is not usable: {why}")]
    InvalidNodeName { node: String, why: &'static str },
    #[error("target {target:?} has no {family} address")]
    NoAddress {
        target: String,
        family: &'static str,
    },
}

impl NodeNaming {
    pub fn uses_srv(&self) -> bool {
        !matches!(self, Self::BasenameIp(_))
    }

    /// Validates the basename given in the configuration.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::ServicePrefix => Ok(()),
            Self::BasenamePort(base)
            | Self::Basename(base)
            | Self::BasenameIp(base)
            | Self::BasenamePortIp(base) => {
                if !base.is_empty() && base.bytes().all(is_name_byte) {
                    Ok(())
                } else {
                    Err(format!(
                        "basename {base:?} must be non-empty and use only letters, digits, '-', '_' and '.'"
                    ))
                }
            }
        }
    }

    /// Whether the node name holds the target's address, which must then be known.
    pub fn needs_target_address(&self) -> bool {
        matches!(self, Self::BasenamePortIp(_))
    }

    /// The node an SRV record stands for; `address` is the target's address, when known
    /// (only `BasenamePortIp` needs it; an IP-literal target is its own address).
    pub fn node_for_record(
        &self,
        service: &str,
        target: &str,
        port: u16,
        address: Option<IpAddr>,
    ) -> Result<String, Unmapped> {
        let Self::BasenamePortIp(base) = self else {
            return self.node_for_target(service, target, port);
        };
        let bare = target.strip_suffix('.').unwrap_or(target);
        let literal = bare.parse::<IpAddr>().ok();
        if literal.is_none() {
            validate_dns_name(bare).map_err(|e| Unmapped::InvalidTarget {
                target: bare.to_string(),
                why: e.to_string(),
            })?;
        }
        let ip = address.or(literal).ok_or_else(|| Unmapped::NoAddress {
            target: bare.to_string(),
            family: "IP",
        })?;
        let node = format!("{base}-{port}@{ip}");
        validate_node_name(&node)?;
        Ok(node)
    }

    /// The node an SRV record stands for, from the target's name alone. `BasenamePortIp`
    /// needs the address too: see `node_for_record`.
    pub fn node_for_target(
        &self,
        service: &str,
        target: &str,
        port: u16,
    ) -> Result<String, Unmapped> {
        let target = target.strip_suffix('.').unwrap_or(target);
        validate_dns_name(target).map_err(|e| Unmapped::InvalidTarget {
            target: target.to_string(),
            why: e.to_string(),
        })?;
        let node = match self {
            Self::ServicePrefix => {
                let service = service.strip_suffix('.').unwrap_or(service);
                let outside = || Unmapped::OutsideService {
                    target: target.to_string(),
                    service: service.to_string(),
                };
                // Compared literally and case-insensitively: the service name is not a pattern.
                let split = target
                    .len()
                    .checked_sub(service.len() + 1)
                    .ok_or_else(outside)?;
                let (prefix, rest) = target.split_at(split);
                if !rest.starts_with('.')
                    || !rest[1..].eq_ignore_ascii_case(service)
                    || prefix.is_empty()
                {
                    return Err(outside());
                }
                format!("{prefix}@{service}")
            }
            Self::BasenamePort(base) => format!("{base}-{port}@{target}"),
            Self::Basename(base) => format!("{base}@{target}"),
            Self::BasenameIp(base) => format!("{base}@{target}"),
            Self::BasenamePortIp(_) => {
                return self.node_for_record(service, target, port, None);
            }
        };
        validate_node_name(&node)?;
        Ok(node)
    }

    /// Only for `BasenameIp`.
    pub fn node_for_ip(&self, ip: IpAddr) -> Option<String> {
        match self {
            Self::BasenameIp(base) => Some(format!("{base}@{ip}")),
            _ => None,
        }
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

pub(crate) fn validate_node_name(node: &str) -> Result<(), Unmapped> {
    let invalid = |why| Unmapped::InvalidNodeName {
        node: node.to_string(),
        why,
    };
    if node.len() > MAX_NODE_NAME_LEN {
        return Err(invalid("longer than 255 characters"));
    }
    let (name, _host) = node.split_once('@').ok_or_else(|| invalid("no '@'"))?;
    if name.is_empty() || !name.bytes().all(is_name_byte) {
        return Err(invalid(
            "the name part may use only letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "my-svc.service.consul";

    #[test]
    fn service_prefix_is_the_original_convention() {
        let naming = NodeNaming::ServicePrefix;
        assert_eq!(
            naming
                .node_for_target(SERVICE, "node-a.my-svc.service.consul.", 1)
                .unwrap(),
            "node-a@my-svc.service.consul"
        );
        // Case-insensitive match, the node keeps DNS's spelling of its own label.
        assert_eq!(
            naming
                .node_for_target(SERVICE, "Node-A.MY-SVC.service.consul", 1)
                .unwrap(),
            "Node-A@my-svc.service.consul"
        );
    }

    #[test]
    fn service_name_is_matched_literally_not_as_a_pattern() {
        let naming = NodeNaming::ServicePrefix;
        // A regex would let '.' match any character.
        for target in [
            "node-a.myXsvc.service.consul",
            "node-a.my-svc.serviceXconsul",
            "my-svc.service.consul",
            "node-a.other.consul",
            "node-amy-svc.service.consul",
        ] {
            assert!(
                matches!(
                    naming.node_for_target(SERVICE, target, 1),
                    Err(Unmapped::OutsideService { .. })
                ),
                "{target}"
            );
        }
    }

    #[test]
    fn basename_conventions() {
        let target = "10-0-0-4.node.dc1.consul";
        assert_eq!(
            NodeNaming::BasenamePort("app".into())
                .node_for_target(SERVICE, target, 4370)
                .unwrap(),
            "app-4370@10-0-0-4.node.dc1.consul"
        );
        assert_eq!(
            NodeNaming::Basename("app".into())
                .node_for_target(SERVICE, target, 4370)
                .unwrap(),
            "app@10-0-0-4.node.dc1.consul"
        );
        assert_eq!(
            NodeNaming::BasenameIp("app".into())
                .node_for_ip("fdaa::3".parse().unwrap())
                .unwrap(),
            "app@fdaa::3"
        );
        assert!(NodeNaming::Basename("bad base".into()).validate().is_err());
        assert!(NodeNaming::Basename(String::new()).validate().is_err());
        assert!(NodeNaming::Basename("app".into()).validate().is_ok());
    }

    #[test]
    fn basename_port_ip_names_nodes_by_port_and_address_whatever_the_target_form() {
        let naming = NodeNaming::BasenamePortIp("app".into());
        assert!(naming.uses_srv());
        assert!(naming.needs_target_address());
        assert!(!NodeNaming::BasenamePort("app".into()).needs_target_address());
        let ip: IpAddr = "10.0.0.4".parse().unwrap();
        // Every target form Consul answers with, plus the one a user registered.
        for target in [
            "0a000004.addr.dc1.consul.",
            "worker-1.node.dc1.consul",
            "app-host.example.com",
        ] {
            assert_eq!(
                naming
                    .node_for_record(SERVICE, target, 23456, Some(ip))
                    .unwrap(),
                "app-23456@10.0.0.4",
                "{target}"
            );
        }
        // Two allocations on one host share Consul's target; their ports tell them apart.
        assert_eq!(
            naming
                .node_for_record(SERVICE, "0a000004.addr.dc1.consul", 23457, Some(ip))
                .unwrap(),
            "app-23457@10.0.0.4"
        );
        assert_eq!(
            naming
                .node_for_record(
                    SERVICE,
                    "x.dc1.consul",
                    4370,
                    Some("fdaa::3".parse().unwrap())
                )
                .unwrap(),
            "app-4370@fdaa::3"
        );
        // An IP-literal target is its own address (injected resolvers return those).
        assert_eq!(
            naming.node_for_target(SERVICE, "127.0.0.9", 4370).unwrap(),
            "app-4370@127.0.0.9"
        );
        assert_eq!(
            naming.node_for_target(SERVICE, "worker-1.node.dc1.consul", 4370),
            Err(Unmapped::NoAddress {
                target: "worker-1.node.dc1.consul".into(),
                family: "IP"
            })
        );
        assert!(matches!(
            naming.node_for_record(SERVICE, "bad name.consul", 4370, None),
            Err(Unmapped::InvalidTarget { .. })
        ));
        // Other conventions ignore the address.
        assert_eq!(
            NodeNaming::BasenamePort("app".into())
                .node_for_record(SERVICE, "t.consul", 4370, Some(ip))
                .unwrap(),
            "app-4370@t.consul"
        );
        assert!(NodeNaming::BasenamePortIp("bad base".into())
            .validate()
            .is_err());
    }

    #[test]
    fn hostile_targets_are_refused() {
        let naming = NodeNaming::ServicePrefix;
        let long_label = format!("{}.{SERVICE}", "a".repeat(64));
        let long_name = format!("{}.{SERVICE}", vec!["a".repeat(60); 4].join("."));
        for target in [
            "bad name.my-svc.service.consul",
            "a/b.my-svc.service.consul",
            "\u{e9}.my-svc.service.consul",
            "-x.my-svc.service.consul",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(
                naming.node_for_target(SERVICE, target, 1).is_err(),
                "{target}"
            );
        }
        // A node name over 255 characters could not be an atom.
        let base = "b".repeat(200);
        let target = format!("{}.x", "t".repeat(60));
        assert!(matches!(
            NodeNaming::Basename(base).node_for_target(SERVICE, &target, 1),
            Err(Unmapped::InvalidNodeName { .. })
        ));
    }
}
