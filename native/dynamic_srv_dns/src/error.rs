//! Error types. Every message names the offending value and what was expected, because these
//! strings are shown verbatim to operators when distribution refuses to start.

use std::fmt;
use std::time::Duration;

use crate::config::PortMode;

/// A bad environment variable. Distribution refuses to start with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}={value:?} is not a valid port: expected an integer from 1 to 65535")]
    InvalidPort { var: &'static str, value: EnvValue },

    #[error(
        "{var} is not set: DYNAMIC_SRV_PORT_MODE={mode} needs this node's listen port, \
         an integer from 1 to 65535 (or use DYNAMIC_SRV_PORT_MODE=name)"
    )]
    MissingPort { var: &'static str, mode: PortMode },

    #[error(
        "{var}={value:?}: {entry:?} is not a nameserver address: expected a comma-separated \
         list of ip:port, e.g. 127.0.0.1:8600 or [::1]:53 (unset it to use /etc/resolv.conf)"
    )]
    InvalidNameserver {
        var: &'static str,
        value: EnvValue,
        entry: EnvValue,
    },

    #[error(
        "{var}={value:?}: {entry:?} is a host name: nameservers must be IP addresses, \
         e.g. 127.0.0.1:8600 or [::1]:53 (unset it to use /etc/resolv.conf)"
    )]
    NameserverHostName {
        var: &'static str,
        value: EnvValue,
        entry: EnvValue,
    },

    #[error(
        "{var}={value:?}: {entry:?} is an IPv6 address without brackets: write [address]:port, \
         e.g. [::1]:53 or [fd00::1]:8600"
    )]
    UnbracketedIpv6 {
        var: &'static str,
        value: EnvValue,
        entry: EnvValue,
    },

    #[error(
        "{var}={value:?} has an empty entry: expected a comma-separated list of ip:port \
         with no empty items, e.g. 127.0.0.1:8600,[::1]:53 (unset it to use /etc/resolv.conf)"
    )]
    EmptyNameserverEntry { var: &'static str, value: EnvValue },

    #[error("{var}={value:?} lists {count} nameservers: at most {max} are allowed")]
    TooManyNameservers {
        var: &'static str,
        value: EnvValue,
        count: usize,
        max: usize,
    },

    #[error("{var}={value:?} is not a port mode: expected srv, name or static")]
    InvalidPortMode { var: &'static str, value: EnvValue },

    #[error("{var}={value:?} is not valid: expected {expected}")]
    InvalidNumber {
        var: &'static str,
        value: EnvValue,
        expected: &'static str,
    },

    #[error(
        "cannot read the system resolver configuration ({detail}); set DYNAMIC_SRV_NAMESERVERS"
    )]
    SystemResolver { detail: String },
}

/// A value from the environment as an error message shows it: quoted and escaped (so control
/// characters cannot break the one-line message or the terminal), and cut after
/// `EnvValue::SHOWN_CHARS` characters, so a runaway value does not bury the message.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvValue(pub String);

impl EnvValue {
    pub const SHOWN_CHARS: usize = 64;
}

impl From<&str> for EnvValue {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(Self::SHOWN_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}... ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

/// A node name that cannot be mapped to DNS or to a port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("node name {node:?} is not of the form name@host")]
    NotNodeName { node: String },

    #[error("{name:?} is not a valid DNS name: {why}")]
    InvalidDnsName { name: String, why: &'static str },

    #[error(
        "node name {node:?} does not end in a port number: DYNAMIC_SRV_PORT_MODE=name expects \
         names like app-4370@host"
    )]
    NoPortInName { node: String },

    #[error("node name {node:?} ends in {digits}, which is not a port from 1 to 65535")]
    PortOutOfRange { node: String, digits: String },

    #[error(
        "node {node:?} is a release helper (bin/app rpc|remote): it listens on a random port \
         that no record announces, so it is never dialed"
    )]
    ReleaseHelper { node: String },

    #[error("node name {node:?} cannot be looked up by its peers: {why}")]
    Unresolvable { node: String, why: String },
}

/// A lookup that produced no usable address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("{name}: no such domain (NXDOMAIN)")]
    NxDomain { name: String },

    #[error("{name}: the name exists but has no {record_type} records")]
    NoRecords {
        name: String,
        record_type: &'static str,
    },

    #[error("{name}: the DNS server answered {code}")]
    ServerFailure {
        name: String,
        code: String,
        reason: &'static str,
    },

    #[error("{name}: no answer within {after:?}")]
    Timeout { name: String, after: Duration },

    #[error("{name}: cannot reach the DNS server: {detail}")]
    Unreachable { name: String, detail: String },

    #[error("{name}: malformed or unusable answer: {detail}")]
    Malformed { name: String, detail: String },

    #[error("{name}: SRV target {target} has no {family} address")]
    NoAddress {
        name: String,
        target: String,
        family: &'static str,
    },

    #[error(transparent)]
    Name(#[from] NameError),
}

impl LookupError {
    /// A short machine-readable reason, used as the atom callers see.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NxDomain { .. } => "nxdomain",
            Self::NoRecords { .. } => "no_records",
            Self::ServerFailure { reason, .. } => reason,
            Self::Timeout { .. } => "timeout",
            Self::Unreachable { .. } => "unreachable",
            Self::Malformed { .. } => "malformed_answer",
            Self::NoAddress { .. } => "no_address",
            Self::Name(NameError::ReleaseHelper { .. }) => "release_helper",
            Self::Name(_) => "invalid_node_name",
        }
    }

    /// True when DNS answered authoritatively that the name is gone. Anything else is a
    /// failure of DNS itself, during which the last good answer keeps being served.
    pub fn is_authoritative_absence(&self) -> bool {
        matches!(
            self,
            Self::NxDomain { .. } | Self::NoRecords { .. } | Self::NoAddress { .. }
        )
    }
}
