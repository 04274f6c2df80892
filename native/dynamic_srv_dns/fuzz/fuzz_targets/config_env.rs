//! Any values for the six environment variables. Invariants: nothing panics; an accepted
//! configuration is within every documented bound; a refusal is one short printable line that
//! starts with the variable it blames.
#![no_main]

use std::collections::HashSet;
use std::time::Duration;

use arbitrary::Arbitrary;
use dynamic_srv_dns::config::{
    parse_nameservers, parse_port, Config, PortMode, MAX_NAMESERVERS, NAMESERVERS, VARIABLES,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Env {
    /// One value per variable of `VARIABLES`, `None` for unset.
    values: [Option<String>; 6],
}

fuzz_target!(|env: Env| {
    let get = |var: &str| {
        let index = VARIABLES.iter().position(|v| *v == var)?;
        env.values[index].clone()
    };
    match Config::from_env(get) {
        Ok(config) => {
            if config.port_mode != PortMode::Name {
                assert!(config.dist_port.is_some());
            }
            check_accepted(&config);
        }
        Err(error) => check_message(&error.to_string()),
    }
    // The poller's subset never needs a port.
    match Config::discovery_from_env(get) {
        Ok(config) => check_accepted(&config),
        Err(error) => check_message(&error.to_string()),
    }

    for value in env.values.iter().flatten() {
        match parse_port("ERL_DIST_PORT", value) {
            Ok(port) => {
                assert!(port > 0);
                assert!(value.bytes().all(|b| b.is_ascii_digit()), "{value:?}");
                assert_eq!(value.trim_start_matches('0'), port.to_string());
            }
            Err(error) => check_message(&error.to_string()),
        }
        if let Ok(servers) = parse_nameservers(NAMESERVERS, value) {
            // Accepted text must be what an operator could have meant: only these characters.
            assert!(
                value
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || ":.[],".contains(c) || c.is_whitespace()),
                "{value:?}"
            );
            assert!(!servers.is_empty() && servers.len() <= MAX_NAMESERVERS);
        }
    }
});

fn check_accepted(config: &Config) {
    assert_ne!(config.dist_port, Some(0));
    assert!(config.nameservers.len() <= MAX_NAMESERVERS);
    assert!(config.nameservers.iter().all(|s| s.port() != 0));
    let unique: HashSet<_> = config.nameservers.iter().collect();
    assert_eq!(unique.len(), config.nameservers.len());
    assert!((Duration::from_millis(10)..=Duration::from_secs(60)).contains(&config.lookup_timeout));
    assert!(config.min_ttl <= Duration::from_millis(86_400_000));
    assert!(config.max_stale <= Duration::from_secs(31_536_000));
}

/// Shown verbatim on stderr at boot: one line, no control characters, bounded length, naming
/// one of our variables (or the system resolver, which is not read here).
fn check_message(message: &str) {
    assert!(!message.chars().any(char::is_control), "{message:?}");
    // Two values of at most 64 characters, each escaped to at most 10 bytes, plus the text.
    assert!(message.len() < 2 * 64 * 10 + 400, "{} bytes", message.len());
    assert!(
        VARIABLES.iter().any(|var| message.starts_with(var)),
        "{message:?}"
    );
}
