//! Node names and the DNS names and ports derived from them.

use std::net::IpAddr;

use crate::config::PortMode;
use crate::error::NameError;

const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// A node name `name@host`, as OTP hands it to the epmd module.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeName {
    pub name: String,
    pub host: String,
}

impl NodeName {
    pub fn parse(node: &str) -> Result<Self, NameError> {
        match node.split_once('@') {
            Some((name, host)) if !name.is_empty() && !host.is_empty() && !host.contains('@') => {
                Ok(Self {
                    name: name.to_string(),
                    host: host.to_string(),
                })
            }
            _ => Err(NameError::NotNodeName {
                node: node.to_string(),
            }),
        }
    }

    /// The SRV name announcing this node's port: `name.host`, the original library's
    /// convention (node `node-a@my-svc.service.consul` is found at
    /// `node-a.my-svc.service.consul`).
    pub fn srv_name(&self) -> Result<String, NameError> {
        let name = format!("{}.{}", self.name, self.host);
        validate_dns_name(&name)?;
        Ok(name)
    }

    /// The port in the trailing digits of the name part: `app-4370@host` -> 4370.
    pub fn port_from_name(&self) -> Result<u16, NameError> {
        // By byte: the digits are ASCII, so the byte after the last non-digit byte starts a
        // character even when that non-digit is the tail of a multi-byte one (`appé4370`).
        let digits_start = self
            .name
            .bytes()
            .rposition(|b| !b.is_ascii_digit())
            .map_or(0, |i| i + 1);
        let digits = &self.name[digits_start..];
        if digits.is_empty() {
            return Err(NameError::NoPortInName {
                node: self.to_string(),
            });
        }
        match digits.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(NameError::PortOutOfRange {
                node: self.to_string(),
                digits: digits.to_string(),
            }),
        }
    }

    /// Checks that peers can look this node up in `mode`: the host is an IP address or a
    /// valid DNS name, and in `srv` mode `name.host` is a valid DNS name too. OTP checks only
    /// the name part, and a node with a name nobody can resolve would start and stay alone.
    pub fn check_resolvable(&self, mode: PortMode) -> Result<(), NameError> {
        if self.host_ip().is_some() {
            return Ok(());
        }
        let unresolvable = |error: NameError| NameError::Unresolvable {
            node: self.to_string(),
            why: error.to_string(),
        };
        validate_dns_name(&self.host).map_err(unresolvable)?;
        if mode == PortMode::Srv {
            self.srv_name().map_err(unresolvable)?;
        }
        Ok(())
    }

    /// For a release helper node (`rpc-XXXX-<node>` or `rem-XXXX-<node>`, XXXX four lowercase
    /// hex digits, as `bin/app rpc|remote|stop|pid` name them), the node it serves.
    pub fn helper_target(&self) -> Option<NodeName> {
        let rest = self
            .name
            .strip_prefix("rpc-")
            .or_else(|| self.name.strip_prefix("rem-"))?;
        let (id, served) = rest.split_at_checked(4)?;
        let served = served.strip_prefix('-')?;
        let is_id = id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        (is_id && !served.is_empty()).then(|| NodeName {
            name: served.to_string(),
            host: self.host.clone(),
        })
    }

    pub fn is_helper(&self) -> bool {
        self.helper_target().is_some()
    }

    /// The host as an IP address when it is written as one (`app@10.0.0.4`).
    pub fn host_ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The cache key: DNS is case-insensitive, so `A@Host` and `a@host` are one entry.
    pub fn key(&self) -> String {
        self.to_string().to_ascii_lowercase()
    }
}

impl std::fmt::Display for NodeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.host)
    }
}

/// Checks that `name` is a hostname-like DNS name: labels of 1 to 63 letters, digits, `-` or
/// `_` (SRV owners such as `_4369._tcp` use it), not starting or ending in `-`, and at most 253
/// characters in all. A trailing dot is allowed.
pub fn validate_dns_name(name: &str) -> Result<(), NameError> {
    let invalid = |why| {
        Err(NameError::InvalidDnsName {
            name: name.to_string(),
            why,
        })
    };
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return invalid("it is empty");
    }
    if bare.len() > MAX_NAME_LEN {
        return invalid("it is longer than 253 characters");
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return invalid("it has an empty label");
        }
        if label.len() > MAX_LABEL_LEN {
            return invalid("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return invalid("only letters, digits, '-' and '_' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return invalid("a label starts or ends with '-'");
        }
    }
    Ok(())
}

/// The form to put on the wire: names with a dot are fully qualified (so `ndots` and search
/// domains from resolv.conf cannot multiply queries); single labels such as a docker compose
/// service name stay relative so the search list applies.
pub fn query_form(name: &str) -> String {
    if name.contains('.') && !name.ends_with('.') {
        format!("{name}.")
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> NodeName {
        NodeName::parse(s).unwrap()
    }

    #[test]
    fn parses_node_names() {
        assert_eq!(node("a@b.c").name, "a");
        assert_eq!(node("a@b.c").host, "b.c");
        for bad in ["nohost", "@host", "name@", "a@b@c", ""] {
            assert!(NodeName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn srv_name_follows_the_original_convention() {
        assert_eq!(
            node("node-a@my-svc.service.consul").srv_name().unwrap(),
            "node-a.my-svc.service.consul"
        );
        assert!(node("bad name@x.y").srv_name().is_err());
        assert!(node(&format!("{}@x.y", "a".repeat(64))).srv_name().is_err());
    }

    #[test]
    fn port_from_trailing_digits() {
        assert_eq!(node("app-4370@h").port_from_name().unwrap(), 4370);
        assert_eq!(node("app4370@h").port_from_name().unwrap(), 4370);
        assert_eq!(node("9000@h").port_from_name().unwrap(), 9000);
        assert_eq!(
            node("app@h").port_from_name().unwrap_err(),
            NameError::NoPortInName {
                node: "app@h".into()
            }
        );
        assert!(matches!(
            node("app-70000@h").port_from_name(),
            Err(NameError::PortOutOfRange { .. })
        ));
        assert!(matches!(
            node("app-0@h").port_from_name(),
            Err(NameError::PortOutOfRange { .. })
        ));
        assert!(node("app-4370@h").port_from_name().map(|_| ()).is_ok());
        let message = node("app@h").port_from_name().unwrap_err().to_string();
        assert!(message.contains("app-4370@host"), "{message}");
    }

    #[test]
    fn port_from_name_after_a_multibyte_character() {
        // Slicing at the byte after the last non-digit char panicked inside a multi-byte one.
        // Found by ./scripts/fuzz (node_names) through Engine::port_please, which OTP's
        // port_please/2 reaches with any name: a name of the single character U+05BF.
        assert!(matches!(
            NodeName {
                name: "\u{5bf}".into(),
                host: "0.0.0.0".into()
            }
            .port_from_name(),
            Err(NameError::NoPortInName { .. })
        ));
        assert_eq!(node("app\u{e9}4370@h").port_from_name().unwrap(), 4370);
        assert_eq!(node("\u{1f600}1@h").port_from_name().unwrap(), 1);
        assert!(matches!(
            node("app\u{e9}@h").port_from_name(),
            Err(NameError::NoPortInName { .. })
        ));
    }

    #[test]
    fn own_name_must_be_resolvable_for_the_mode() {
        for good in [
            "app@host",
            "app@ho_st.x",
            "a@127.0.0.1",
            "a@::1",
            "rpc-1a2b-app@h.x",
        ] {
            for mode in [PortMode::Srv, PortMode::Name, PortMode::Static] {
                assert_eq!(node(good).check_resolvable(mode), Ok(()), "{good} {mode}");
            }
        }
        let long_label = format!("{}@h.x", "a".repeat(64));
        for mode in [PortMode::Srv, PortMode::Name, PortMode::Static] {
            for bad in [
                "app@bad!host",
                "app@-host.x",
                "app@host..x",
                "app@h\u{e9}.x",
            ] {
                assert!(
                    matches!(
                        node(bad).check_resolvable(mode),
                        Err(NameError::Unresolvable { .. })
                    ),
                    "{bad} {mode}"
                );
            }
        }
        // Only the SRV name contains the name part.
        assert!(node(&long_label).check_resolvable(PortMode::Srv).is_err());
        assert!(node(&long_label).check_resolvable(PortMode::Static).is_ok());
        assert_eq!(
            node("app@bad!host")
                .check_resolvable(PortMode::Srv)
                .unwrap_err()
                .to_string(),
            "node name \"app@bad!host\" cannot be looked up by its peers: \"bad!host\" is not \
             a valid DNS name: only letters, digits, '-' and '_' are allowed"
        );
    }

    #[test]
    fn recognises_exactly_the_release_helper_shape() {
        assert_eq!(
            node("rpc-1a2b-myapp@host.x").helper_target(),
            Some(node("myapp@host.x"))
        );
        assert_eq!(
            node("rem-00ff-my-app@h").helper_target(),
            Some(node("my-app@h"))
        );
        for not_helper in [
            "rpc-gateway@h",
            "rpc-1a2b@h",
            "rpc-1a2b-@h",
            "rpc-1A2B-app@h",
            "rpc-1a2-app@h",
            "rpc-1a2bc-app@h",
            "rpcx1a2b-app@h",
            "rem-zzzz-app@h",
            "app@h",
        ] {
            assert_eq!(node(not_helper).helper_target(), None, "{not_helper}");
        }
    }

    #[test]
    fn validates_dns_names() {
        assert!(validate_dns_name("_4369._tcp.app.ns.svc.cluster.local").is_ok());
        assert!(validate_dns_name("a.b.").is_ok());
        assert!(validate_dns_name(&format!("{}.x", "a".repeat(63))).is_ok());
        for bad in ["", ".", "a..b", "-a.b", "a-.b", "a b", "a/b", "ä.b"] {
            assert!(validate_dns_name(bad).is_err(), "{bad}");
        }
        let long = vec!["a".repeat(60); 5].join(".");
        assert!(validate_dns_name(&long).is_err());
    }

    #[test]
    fn keys_are_case_insensitive() {
        assert_eq!(node("A@Host.X").key(), node("a@host.x").key());
    }

    #[test]
    fn query_form_qualifies_dotted_names_only() {
        assert_eq!(query_form("a.b"), "a.b.");
        assert_eq!(query_form("a.b."), "a.b.");
        assert_eq!(query_form("app"), "app");
    }
}
