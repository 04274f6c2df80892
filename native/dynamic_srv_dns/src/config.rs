//! Configuration read from environment variables when distribution starts.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::error::ConfigError;
use crate::naming::validate_dns_name;

pub const ERL_DIST_PORT: &str = "ERL_DIST_PORT";
pub const NAMESERVERS: &str = "DYNAMIC_SRV_NAMESERVERS";
pub const PORT_MODE: &str = "DYNAMIC_SRV_PORT_MODE";
pub const LOOKUP_TIMEOUT_MS: &str = "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS";
pub const MIN_TTL_MS: &str = "DYNAMIC_SRV_MIN_TTL_MS";
pub const MAX_STALE_S: &str = "DYNAMIC_SRV_MAX_STALE_S";

/// Every variable this library reads, so callers can pass just these across the NIF boundary.
pub const VARIABLES: [&str; 6] = [
    ERL_DIST_PORT,
    NAMESERVERS,
    PORT_MODE,
    LOOKUP_TIMEOUT_MS,
    MIN_TTL_MS,
    MAX_STALE_S,
];

/// How the distribution port of a peer is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMode {
    /// From the SRV record `name.host` of node `name@host`.
    Srv,
    /// From the trailing digits of the node name: `app-4370@host` listens on 4370.
    Name,
    /// Every node listens on `ERL_DIST_PORT`.
    Static,
}

impl fmt::Display for PortMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Srv => "srv",
            Self::Name => "name",
            Self::Static => "static",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's listen port. Required in `srv` and `static` modes.
    pub dist_port: Option<u16>,
    /// Empty means the system resolver configuration.
    pub nameservers: Vec<SocketAddr>,
    pub port_mode: PortMode,
    /// Upper bound for one whole lookup (SRV plus, when needed, the address query).
    pub lookup_timeout: Duration,
    /// Answers are kept fresh at least this long, whatever their TTL: Consul and dnsmasq
    /// answer with TTL 0 by default, and a cache that only honoured TTLs would never hit.
    pub min_ttl: Duration,
    /// How long past expiry an answer is still served while DNS is failing.
    pub max_stale: Duration,
    /// Set by `for_polls`: the SRV query may take the whole `lookup_timeout`. A connection
    /// setup's takes two thirds, leaving the rest for the address query; a poll's target
    /// addresses have a budget of their own (`Topology::complete_addresses`).
    pub srv_takes_whole_budget: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dist_port: None,
            nameservers: Vec::new(),
            port_mode: PortMode::Srv,
            lookup_timeout: Duration::from_millis(3000),
            min_ttl: Duration::from_millis(5000),
            max_stale: Duration::from_secs(3600),
            srv_takes_whole_budget: false,
        }
    }
}

impl Config {
    /// Reads and validates the configuration. `get` returns a variable's value, `None` if unset.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let port_mode = match get(PORT_MODE) {
            None => PortMode::Srv,
            Some(value) => parse_port_mode(&value)?,
        };
        let dist_port = get(ERL_DIST_PORT)
            .map(|value| parse_port(ERL_DIST_PORT, &value))
            .transpose()?;
        if dist_port.is_none() && port_mode != PortMode::Name {
            return Err(ConfigError::MissingPort {
                var: ERL_DIST_PORT,
                mode: port_mode,
            });
        }
        Ok(Self {
            dist_port,
            port_mode,
            ..Self::discovery_from_env(get)?
        })
    }

    /// Only the resolver settings (nameservers, timeouts, cache), for the membership poller,
    /// which also runs on nodes that do not use the epmd module and have no ERL_DIST_PORT.
    pub fn discovery_from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let nameservers = match get(NAMESERVERS) {
            None => Vec::new(),
            Some(value) => parse_nameservers(NAMESERVERS, &value)?,
        };
        let lookup_timeout = get(LOOKUP_TIMEOUT_MS)
            .map(|v| {
                parse_bounded(
                    LOOKUP_TIMEOUT_MS,
                    &v,
                    10,
                    60_000,
                    "milliseconds from 10 to 60000",
                )
            })
            .transpose()?
            .map_or(defaults.lookup_timeout, Duration::from_millis);
        let min_ttl = get(MIN_TTL_MS)
            .map(|v| {
                parse_bounded(
                    MIN_TTL_MS,
                    &v,
                    0,
                    86_400_000,
                    "milliseconds from 0 to 86400000",
                )
            })
            .transpose()?
            .map_or(defaults.min_ttl, Duration::from_millis);
        let max_stale = get(MAX_STALE_S)
            .map(|v| parse_bounded(MAX_STALE_S, &v, 0, 31_536_000, "seconds from 0 to 31536000"))
            .transpose()?
            .map_or(defaults.max_stale, Duration::from_secs);
        Ok(Self {
            nameservers,
            lookup_timeout,
            min_ttl,
            max_stale,
            ..defaults
        })
    }

    /// The settings a membership poller asks with. The lookup timeout bounds what a
    /// connection setup waits on, but nothing waits on a poll, and a late answer is still
    /// the newest membership: a poll's budget is its polling interval when that is longer,
    /// up to `MAX_POLL_BUDGET`. On two saturated cores
    /// a 100-node cluster's polls were answered in 1.3–7.6 s and, bounded by the 3 s lookup
    /// timeout, all failed: new nodes were never listed.
    ///
    /// And the SRV query may take that whole budget: a server answering 100 nodes' polls in
    /// 3.5 s failed every poll whose one TCP attempt had two thirds of 5 s.
    pub fn for_polls(self, polling_interval: Duration) -> Self {
        Self {
            lookup_timeout: polling_interval
                .min(MAX_POLL_BUDGET)
                .max(self.lookup_timeout),
            srv_takes_whole_budget: true,
            ..self
        }
    }

    /// How long one attempt of the SRV query may take: over UDP there are two (a lost
    /// datagram is asked again), over TCP one of twice this.
    pub fn srv_attempt_timeout(&self) -> Duration {
        let share = if self.srv_takes_whole_budget { 2 } else { 3 };
        (self.lookup_timeout / share).max(Duration::from_millis(10))
    }
}

/// Past this a slow answer is a failure for polls too, whatever the polling interval: with
/// the default lookup timeout a failed poll takes under `poll_now/2`'s default 30 s (the
/// budget for the SRV query, the budget again for target addresses: at most 20 s).
const MAX_POLL_BUDGET: Duration = Duration::from_secs(10);

/// Where a setting's effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The environment variable was set (and is shown with its raw value).
    Env,
    /// The variable was unset; the built-in default applies.
    Default,
}

/// One variable as the diagnosis shows it: raw value, effective value or why it is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub var: &'static str,
    /// The variable's value exactly as set, `None` when unset.
    pub raw: Option<String>,
    /// The value in effect, in words (`"3000 ms"`), or the message distribution refuses
    /// to start with.
    pub effective: Result<String, String>,
}

impl Setting {
    pub fn source(&self) -> Source {
        if self.raw.is_some() {
            Source::Env
        } else {
            Source::Default
        }
    }
}

/// Every variable with its source and effective value. Unlike `Config::from_env` this never
/// fails: each variable is judged on its own, so one bad value does not hide the others.
pub fn settings(get: impl Fn(&str) -> Option<String>) -> Vec<Setting> {
    let mode = get(PORT_MODE).map_or(Ok(PortMode::Srv), |v| parse_port_mode(&v));
    VARIABLES
        .iter()
        .map(|&var| {
            let raw = get(var);
            let only_this = |k: &str| (k == var).then(|| raw.clone()).flatten();
            let effective = match var {
                ERL_DIST_PORT => match (&raw, mode.clone()) {
                    (Some(value), _) => parse_port(var, value).map(|port| port.to_string()),
                    (None, Ok(PortMode::Name)) => {
                        Ok("not needed (DYNAMIC_SRV_PORT_MODE=name)".to_string())
                    }
                    (None, Ok(mode)) => Err(ConfigError::MissingPort { var, mode }),
                    (None, Err(_)) => Ok("not set".to_string()),
                },
                PORT_MODE => mode.clone().map(|mode| mode.to_string()),
                _ => Config::discovery_from_env(only_this).map(|config| match var {
                    NAMESERVERS if config.nameservers.is_empty() => {
                        "the system resolver (/etc/resolv.conf)".to_string()
                    }
                    NAMESERVERS => config
                        .nameservers
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    LOOKUP_TIMEOUT_MS => format!("{} ms", config.lookup_timeout.as_millis()),
                    MIN_TTL_MS => format!("{} ms", config.min_ttl.as_millis()),
                    _ => format!("{} s", config.max_stale.as_secs()),
                }),
            };
            Setting {
                var,
                raw,
                effective: effective.map_err(|e| e.to_string()),
            }
        })
        .collect()
}

/// At most this many entries in `DYNAMIC_SRV_NAMESERVERS` (resolv.conf itself takes three).
pub const MAX_NAMESERVERS: usize = 16;

pub fn parse_port(var: &'static str, value: &str) -> Result<u16, ConfigError> {
    match parse_digits(value) {
        Some(port @ 1..=65535) => Ok(port as u16),
        _ => Err(ConfigError::InvalidPort {
            var,
            value: value.into(),
        }),
    }
}

pub fn parse_port_mode(value: &str) -> Result<PortMode, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "srv" => Ok(PortMode::Srv),
        "name" => Ok(PortMode::Name),
        "static" => Ok(PortMode::Static),
        _ => Err(ConfigError::InvalidPortMode {
            var: PORT_MODE,
            value: value.into(),
        }),
    }
}

/// Parses `ip:port[,ip:port...]`; IPv6 in brackets, `[v6]:port`. A bare IP (`10.0.0.2`,
/// `[::1]`) means port 53. Duplicates are dropped.
pub fn parse_nameservers(var: &'static str, value: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    let count = value.split(',').count();
    if count > MAX_NAMESERVERS {
        return Err(ConfigError::TooManyNameservers {
            var,
            value: value.into(),
            count,
            max: MAX_NAMESERVERS,
        });
    }
    let mut servers = Vec::new();
    for entry in value.split(',') {
        let addr = parse_nameserver(entry.trim()).map_err(|kind| kind.error(var, value, entry))?;
        if !servers.contains(&addr) {
            servers.push(addr);
        }
    }
    Ok(servers)
}

/// What is wrong with one nameserver entry.
enum BadEntry {
    Empty,
    Unbracketed,
    HostName,
    Invalid,
}

impl BadEntry {
    fn error(self, var: &'static str, value: &str, entry: &str) -> ConfigError {
        let (value, entry) = (value.into(), entry.trim().into());
        match self {
            Self::Empty => ConfigError::EmptyNameserverEntry { var, value },
            Self::Unbracketed => ConfigError::UnbracketedIpv6 { var, value, entry },
            Self::HostName => ConfigError::NameserverHostName { var, value, entry },
            Self::Invalid => ConfigError::InvalidNameserver { var, value, entry },
        }
    }
}

fn parse_nameserver(entry: &str) -> Result<SocketAddr, BadEntry> {
    if entry.is_empty() {
        return Err(BadEntry::Empty);
    }
    let bracketed_ip = || {
        let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
        inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    };
    if let Some(ip) = entry
        .parse::<Ipv4Addr>()
        .ok()
        .map(IpAddr::V4)
        .or_else(bracketed_ip)
    {
        return Ok(SocketAddr::new(ip, 53));
    }
    // `::1:53` is a valid IPv6 address, but most likely meant [::1]:53: never guess.
    if entry.parse::<Ipv6Addr>().is_ok() {
        return Err(BadEntry::Unbracketed);
    }
    match entry.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 && port_is_plain_digits(entry) => Ok(addr),
        Ok(_) => Err(BadEntry::Invalid),
        Err(_) => {
            let host = entry.rsplit_once(':').map_or(entry, |(host, _)| host);
            let named =
                validate_dns_name(host).is_ok() && host.bytes().any(|b| b.is_ascii_alphabetic());
            Err(if named {
                BadEntry::HostName
            } else {
                BadEntry::Invalid
            })
        }
    }
}

fn port_is_plain_digits(entry: &str) -> bool {
    entry
        .rsplit_once(':')
        .is_some_and(|(_, port)| parse_digits(port).is_some())
}

/// A non-negative decimal integer of ASCII digits only: no sign, space, `0x` or `_`, which
/// Rust's own parser would partly accept (`+5`). `None` also when it overflows a u64.
fn parse_digits(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn parse_bounded(
    var: &'static str,
    value: &str,
    min: u64,
    max: u64,
    expected: &'static str,
) -> Result<u64, ConfigError> {
    match parse_digits(value) {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::InvalidNumber {
            var,
            value: value.into(),
            expected,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EnvValue;
    use std::collections::HashMap;

    #[test]
    fn a_poll_waits_up_to_its_interval_never_less_than_the_lookup_timeout_nor_over_10_s() {
        let budget = |interval_ms, timeout_ms| {
            let config = Config {
                lookup_timeout: Duration::from_millis(timeout_ms),
                ..Config::default()
            };
            config
                .for_polls(Duration::from_millis(interval_ms))
                .lookup_timeout
                .as_millis()
        };
        assert_eq!(budget(5_000, 3_000), 5_000);
        assert_eq!(budget(1_000, 3_000), 3_000);
        assert_eq!(budget(3_600_000, 3_000), 10_000);
        assert_eq!(budget(1_000, 60_000), 60_000);
    }

    #[test]
    fn a_polls_srv_query_may_take_its_whole_budget_a_lookups_two_thirds() {
        let lookup = Config::default();
        assert_eq!(lookup.srv_attempt_timeout(), Duration::from_millis(1000));
        let poll = lookup.for_polls(Duration::from_millis(5_000));
        assert_eq!(poll.srv_attempt_timeout(), Duration::from_millis(2_500));
    }

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env(|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_to_srv_mode_with_the_system_resolver() {
        let config = from(&[(ERL_DIST_PORT, "4370")]).unwrap();
        assert_eq!(config.port_mode, PortMode::Srv);
        assert_eq!(config.dist_port, Some(4370));
        assert!(config.nameservers.is_empty());
        assert_eq!(config.min_ttl, Duration::from_secs(5));
    }

    #[test]
    fn rejects_bad_ports_naming_variable_and_value() {
        for bad in ["abc", "0", "70000", "-1", "", " 4370", "4370x", "+4370"] {
            let err = from(&[(ERL_DIST_PORT, bad)]).unwrap_err();
            assert_eq!(
                err,
                ConfigError::InvalidPort {
                    var: ERL_DIST_PORT,
                    value: bad.into()
                }
            );
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("ERL_DIST_PORT={bad:?}")),
                "{message}"
            );
            assert!(message.contains("1 to 65535"), "{message}");
        }
    }

    #[test]
    fn missing_port_is_an_error_except_in_name_mode() {
        let err = from(&[]).unwrap_err();
        assert!(
            err.to_string().contains("ERL_DIST_PORT is not set"),
            "{err}"
        );
        assert!(matches!(
            from(&[(PORT_MODE, "static")]),
            Err(ConfigError::MissingPort { .. })
        ));
        let config = from(&[(PORT_MODE, "name")]).unwrap();
        assert_eq!(config.dist_port, None);
    }

    #[test]
    fn parses_nameservers() {
        let config = from(&[
            (ERL_DIST_PORT, "1"),
            (NAMESERVERS, "127.0.0.1:8600, [::1]:53,10.0.0.2"),
        ])
        .unwrap();
        assert_eq!(
            config.nameservers,
            vec![
                "127.0.0.1:8600".parse().unwrap(),
                "[::1]:53".parse().unwrap(),
                "10.0.0.2:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn rejects_bad_nameservers() {
        let generic = |value: &str, entry: &str| ConfigError::InvalidNameserver {
            var: NAMESERVERS,
            value: value.into(),
            entry: entry.into(),
        };
        let host = |value: &str, entry: &str| ConfigError::NameserverHostName {
            var: NAMESERVERS,
            value: value.into(),
            entry: entry.into(),
        };
        let unbracketed = |value: &str, entry: &str| ConfigError::UnbracketedIpv6 {
            var: NAMESERVERS,
            value: value.into(),
            entry: entry.into(),
        };
        let empty = |value: &str| ConfigError::EmptyNameserverEntry {
            var: NAMESERVERS,
            value: value.into(),
        };
        for (bad, expected) in [
            ("localhost:53", host("localhost:53", "localhost:53")),
            ("dns.example", host("dns.example", "dns.example")),
            (
                "127.0.0.1:99999",
                generic("127.0.0.1:99999", "127.0.0.1:99999"),
            ),
            ("127.0.0.1:0", generic("127.0.0.1:0", "127.0.0.1:0")),
            ("127.0.0.1:+53", generic("127.0.0.1:+53", "127.0.0.1:+53")),
            ("127.0.0.1:-53", generic("127.0.0.1:-53", "127.0.0.1:-53")),
            (
                "127.0.0.1:0x35",
                generic("127.0.0.1:0x35", "127.0.0.1:0x35"),
            ),
            ("127.1:53", generic("127.1:53", "127.1:53")),
            ("127.000.0.1", generic("127.000.0.1", "127.000.0.1")),
            ("::1:53", unbracketed("::1:53", "::1:53")),
            ("::1", unbracketed("::1", "::1")),
            ("fd00::1", unbracketed("fd00::1", "fd00::1")),
            ("::1:53:x", generic("::1:53:x", "::1:53:x")),
            ("[::1]:0", generic("[::1]:0", "[::1]:0")),
            (
                "[127.0.0.1]:53",
                generic("[127.0.0.1]:53", "[127.0.0.1]:53"),
            ),
            ("127.0.0.1:53,", empty("127.0.0.1:53,")),
            (
                "127.0.0.1:53,,127.0.0.2:53",
                empty("127.0.0.1:53,,127.0.0.2:53"),
            ),
            (",127.0.0.1:53", empty(",127.0.0.1:53")),
            ("", empty("")),
            ("   ", empty("   ")),
            (
                "127.0.0.1;127.0.0.2",
                generic("127.0.0.1;127.0.0.2", "127.0.0.1;127.0.0.2"),
            ),
            (
                "\u{661}27.0.0.1",
                generic("\u{661}27.0.0.1", "\u{661}27.0.0.1"),
            ),
            (
                "127.0.0.1\n:53",
                generic("127.0.0.1\n:53", "127.0.0.1\n:53"),
            ),
        ] {
            let err = from(&[(ERL_DIST_PORT, "1"), (NAMESERVERS, bad)]).unwrap_err();
            assert_eq!(err, expected, "{bad:?}");
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("DYNAMIC_SRV_NAMESERVERS={bad:?}")),
                "{message}"
            );
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn names_each_kind_of_bad_nameserver_clearly() {
        let message = |value: &str| {
            from(&[(ERL_DIST_PORT, "1"), (NAMESERVERS, value)])
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            message("::1:53"),
            "DYNAMIC_SRV_NAMESERVERS=\"::1:53\": \"::1:53\" is an IPv6 address without \
             brackets: write [address]:port, e.g. [::1]:53 or [fd00::1]:8600"
        );
        assert_eq!(
            message("consul:8600"),
            "DYNAMIC_SRV_NAMESERVERS=\"consul:8600\": \"consul:8600\" is a host name: \
             nameservers must be IP addresses, e.g. 127.0.0.1:8600 or [::1]:53 \
             (unset it to use /etc/resolv.conf)"
        );
        assert_eq!(
            message("127.0.0.1,,"),
            "DYNAMIC_SRV_NAMESERVERS=\"127.0.0.1,,\" has an empty entry: expected a \
             comma-separated list of ip:port with no empty items, e.g. 127.0.0.1:8600,[::1]:53 \
             (unset it to use /etc/resolv.conf)"
        );
        let many = vec!["127.0.0.1:53"; MAX_NAMESERVERS + 1].join(",");
        assert!(
            message(&many).ends_with("lists 17 nameservers: at most 16 are allowed"),
            "{}",
            message(&many)
        );
    }

    #[test]
    fn bracketed_ipv6_without_port_means_53_and_duplicates_collapse() {
        let config = from(&[
            (ERL_DIST_PORT, "1"),
            (NAMESERVERS, "[::1],[::1]:53,127.0.0.1,127.0.0.1:53"),
        ])
        .unwrap();
        assert_eq!(
            config.nameservers,
            vec![
                "[::1]:53".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:53".parse().unwrap()
            ]
        );
        let max = vec!["127.0.0.1:53"; MAX_NAMESERVERS].join(",");
        assert!(from(&[(ERL_DIST_PORT, "1"), (NAMESERVERS, &max)]).is_ok());
    }

    #[test]
    fn numbers_are_plain_decimal_digits() {
        for var in [LOOKUP_TIMEOUT_MS, MIN_TTL_MS, MAX_STALE_S] {
            for bad in [
                "",
                " ",
                "+100",
                "-0",
                " 100",
                "100 ",
                "0x64",
                "1e3",
                "1_000",
                "100ms",
                "1.5",
                "\u{661}\u{660}\u{660}",
                "\u{ff11}\u{ff10}\u{ff10}",
                "100\u{0}",
                "18446744073709551616",
                "99999999999999999999999999",
            ] {
                let err = from(&[(ERL_DIST_PORT, "1"), (var, bad)]).unwrap_err();
                assert!(
                    matches!(&err, ConfigError::InvalidNumber { var: v, value, .. }
                        if *v == var && value.0 == bad),
                    "{var}={bad:?}: {err}"
                );
            }
        }
        let config = from(&[(ERL_DIST_PORT, "1"), (MIN_TTL_MS, "000100")]).unwrap();
        assert_eq!(config.min_ttl, Duration::from_millis(100));
    }

    #[test]
    fn ports_are_plain_decimal_digits() {
        for bad in [
            "\u{ff14}\u{ff13}\u{ff17}\u{ff10}",
            "0x1112",
            "4370\n",
            "\t4370",
            "4 370",
            "18446744073709551616",
            "65536",
            "4370.0",
        ] {
            assert!(
                matches!(
                    from(&[(ERL_DIST_PORT, bad)]),
                    Err(ConfigError::InvalidPort { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            from(&[(ERL_DIST_PORT, "065535")]).unwrap().dist_port,
            Some(65535)
        );
    }

    #[test]
    fn messages_stay_one_short_line_whatever_the_value() {
        let long = "9".repeat(100_000);
        let message = from(&[(ERL_DIST_PORT, &long)]).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "ERL_DIST_PORT=\"{}\"... (100000 bytes) is not a valid port: expected an \
                 integer from 1 to 65535",
                "9".repeat(EnvValue::SHOWN_CHARS)
            )
        );
        let control = "43\u{1b}[2J\r\n70\u{7f}";
        let message = from(&[(ERL_DIST_PORT, control)]).unwrap_err().to_string();
        assert!(
            message.starts_with("ERL_DIST_PORT=\"43\\u{1b}[2J\\r\\n70\\u{7f}\" is not"),
            "{message}"
        );
        assert!(!message.chars().any(char::is_control), "{message}");
        // Cut on a character, never inside one.
        let wide = "\u{e9}".repeat(100);
        let message = from(&[(PORT_MODE, &wide)]).unwrap_err().to_string();
        assert!(message.contains("... (200 bytes)"), "{message}");
    }

    #[test]
    fn parses_and_rejects_port_modes() {
        for (text, mode) in [
            ("srv", PortMode::Srv),
            ("NAME", PortMode::Name),
            ("static", PortMode::Static),
        ] {
            assert_eq!(parse_port_mode(text).unwrap(), mode);
        }
        let err = from(&[(ERL_DIST_PORT, "1"), (PORT_MODE, "dynamic")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "DYNAMIC_SRV_PORT_MODE=\"dynamic\" is not a port mode: expected srv, name or static"
        );
    }

    #[test]
    fn discovery_needs_no_dist_port() {
        let config =
            Config::discovery_from_env(|k| (k == NAMESERVERS).then(|| "127.0.0.1:53".into()))
                .unwrap();
        assert_eq!(config.dist_port, None);
        assert_eq!(config.nameservers.len(), 1);
        assert!(Config::discovery_from_env(|k| (k == NAMESERVERS).then(|| "x".into())).is_err());
    }

    #[test]
    fn parses_and_bounds_timings() {
        let config = from(&[
            (ERL_DIST_PORT, "1"),
            (LOOKUP_TIMEOUT_MS, "250"),
            (MIN_TTL_MS, "0"),
            (MAX_STALE_S, "60"),
        ])
        .unwrap();
        assert_eq!(config.lookup_timeout, Duration::from_millis(250));
        assert_eq!(config.min_ttl, Duration::ZERO);
        assert_eq!(config.max_stale, Duration::from_secs(60));
        let err = from(&[(ERL_DIST_PORT, "1"), (LOOKUP_TIMEOUT_MS, "5")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("DYNAMIC_SRV_LOOKUP_TIMEOUT_MS=\"5\""),
            "{err}"
        );
    }

    fn setting<'a>(settings: &'a [Setting], var: &str) -> &'a Setting {
        settings.iter().find(|s| s.var == var).unwrap()
    }

    #[test]
    fn settings_name_source_raw_and_effective_values() {
        let env: HashMap<&str, &str> = [
            (ERL_DIST_PORT, "4370"),
            (NAMESERVERS, "127.0.0.1:8600"),
            (LOOKUP_TIMEOUT_MS, "250"),
        ]
        .into();
        let all = settings(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(all.len(), VARIABLES.len());
        let port = setting(&all, ERL_DIST_PORT);
        assert_eq!(port.source(), Source::Env);
        assert_eq!(port.raw.as_deref(), Some("4370"));
        assert_eq!(port.effective, Ok("4370".to_string()));
        let timeout = setting(&all, LOOKUP_TIMEOUT_MS);
        assert_eq!(timeout.effective, Ok("250 ms".to_string()));
        let mode = setting(&all, PORT_MODE);
        assert_eq!(mode.source(), Source::Default);
        assert_eq!(mode.effective, Ok("srv".to_string()));
        assert_eq!(
            setting(&all, MAX_STALE_S).effective,
            Ok("3600 s".to_string())
        );
        assert_eq!(
            setting(&all, NAMESERVERS).effective,
            Ok("127.0.0.1:8600".to_string())
        );
    }

    #[test]
    fn settings_judge_each_variable_alone() {
        let env: HashMap<&str, &str> = [(MIN_TTL_MS, "soon"), (NAMESERVERS, "x")].into();
        let all = settings(|k| env.get(k).map(|v| v.to_string()));
        let port = setting(&all, ERL_DIST_PORT);
        assert!(
            port.effective
                .as_ref()
                .unwrap_err()
                .contains("ERL_DIST_PORT is not set"),
            "{port:?}"
        );
        assert!(setting(&all, MIN_TTL_MS)
            .effective
            .as_ref()
            .unwrap_err()
            .contains("DYNAMIC_SRV_MIN_TTL_MS=\"soon\""));
        assert!(setting(&all, NAMESERVERS).effective.is_err());
        // The bad values do not hide the good defaults.
        assert_eq!(
            setting(&all, LOOKUP_TIMEOUT_MS).effective,
            Ok("3000 ms".to_string())
        );
        let name_mode = settings(|k| (k == PORT_MODE).then(|| "name".to_string()));
        assert!(setting(&name_mode, ERL_DIST_PORT)
            .effective
            .as_ref()
            .unwrap()
            .contains("not needed"));
    }
}
