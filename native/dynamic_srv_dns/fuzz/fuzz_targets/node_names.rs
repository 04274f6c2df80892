//! Node name <-> DNS name mapping, with any strings: the node names OTP hands the epmd module,
//! and the SRV targets DNS (or a spoofer) hands the membership poller. Invariants: nothing
//! panics; parsing round-trips; a node name the poller produces is an atom-sized, valid node
//! name that the epmd module maps back to the same SRV name (`service_prefix`) or port
//! (`basename_port`); the epmd entry points accept any string without touching the network.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use dynamic_srv_dns::naming::{query_form, validate_dns_name};
use dynamic_srv_dns::{Cache, Config, Engine, Family, NodeName, NodeNaming, PortMode};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    node: String,
    service: String,
    target: String,
    port: u16,
    basename: String,
    naming: u8,
    ip: [u8; 4],
}

fuzz_target!(|input: Input| {
    check_node_name(&input.node);
    check_dns_name(&input.node);
    check_dns_name(&input.target);
    check_target_mapping(&input);
    for engine in engines() {
        check_engine(engine, &input.node, &input);
    }
});

fn check_node_name(node: &str) {
    let Ok(parsed) = NodeName::parse(node) else {
        return;
    };
    assert_eq!(parsed.to_string(), node);
    assert!(!parsed.name.is_empty() && !parsed.host.is_empty() && !parsed.host.contains('@'));
    assert_eq!(parsed.key(), node.to_ascii_lowercase());
    if let Ok(port) = parsed.port_from_name() {
        assert!(port > 0);
        assert!(parsed.name.ends_with(|c: char| c.is_ascii_digit()));
        let trailing: String = parsed
            .name
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        assert_eq!(trailing.trim_start_matches('0'), port.to_string());
    }
    if let Ok(srv) = parsed.srv_name() {
        assert_eq!(srv, format!("{}.{}", parsed.name, parsed.host));
        assert!(validate_dns_name(&srv).is_ok());
    }
    for mode in [PortMode::Srv, PortMode::Name, PortMode::Static] {
        if parsed.check_resolvable(mode).is_ok() && parsed.host_ip().is_none() {
            assert!(validate_dns_name(&parsed.host).is_ok());
        }
    }
    if let Some(served) = parsed.helper_target() {
        assert_eq!(served.host, parsed.host);
        assert!(parsed.name.ends_with(&format!("-{}", served.name)));
        assert_eq!(parsed.name.len(), "rpc-1a2b-".len() + served.name.len());
    }
}

fn check_dns_name(name: &str) {
    if validate_dns_name(name).is_ok() {
        let bare = name.strip_suffix('.').unwrap_or(name);
        assert!(!bare.is_empty() && bare.len() <= 253);
        assert!(bare.split('.').all(|label| (1..=63).contains(&label.len())));
        assert!(bare.is_ascii());
        let wire = query_form(name);
        assert_eq!(query_form(&wire), wire);
    }
}

fn check_target_mapping(input: &Input) {
    let naming = match input.naming % 4 {
        0 => NodeNaming::ServicePrefix,
        1 => NodeNaming::BasenamePort(input.basename.clone()),
        2 => NodeNaming::Basename(input.basename.clone()),
        _ => NodeNaming::BasenameIp(input.basename.clone()),
    };
    if naming.validate().is_err() || validate_dns_name(&input.service).is_err() {
        return;
    }
    if let Some(node) = naming.node_for_ip(IpAddr::V4(Ipv4Addr::from(input.ip))) {
        assert!(NodeName::parse(&node).is_ok(), "{node:?}");
    }
    let Ok(node) = naming.node_for_target(&input.service, &input.target, input.port) else {
        return;
    };
    // Must become an atom: at most 255 characters.
    assert!(node.len() <= 255, "{node:?}");
    let parsed = NodeName::parse(&node).unwrap_or_else(|e| panic!("{node:?}: {e}"));
    assert!(parsed.host_ip().is_some() || validate_dns_name(&parsed.host).is_ok());
    assert!(parsed
        .name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
    let target = input.target.strip_suffix('.').unwrap_or(&input.target);
    match naming {
        // The epmd module looks the node up at exactly the target the poller saw.
        NodeNaming::ServicePrefix => {
            let srv = parsed.srv_name().expect("a mapped node has an SRV name");
            assert!(srv.eq_ignore_ascii_case(target), "{srv:?} vs {target:?}");
        }
        NodeNaming::BasenamePort(_) if input.port > 0 => {
            assert_eq!(parsed.port_from_name(), Ok(input.port));
            assert_eq!(parsed.host, target);
        }
        _ => assert_eq!(parsed.host, target),
    }
}

fn check_engine(engine: &Engine, node: &str, input: &Input) {
    let _ = engine.listen_port(node);
    for family in [Family::Inet, Family::Inet6] {
        // Memory only: must answer at once, whatever the string.
        let _ = engine.cached(node, family);
        let _ = engine.claim_refresh(node, family);
    }
    let _ = engine.port_please(&input.basename, IpAddr::V4(Ipv4Addr::from(input.ip)));
}

/// One engine per port mode, built once: building the resolver needs a tokio runtime, which
/// stays alive (unused: nothing here queries DNS) for the whole run.
fn engines() -> &'static [Engine] {
    static ENGINES: OnceLock<(tokio::runtime::Runtime, Vec<Engine>)> = OnceLock::new();
    &ENGINES
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let _context = runtime.enter();
            let engines = [PortMode::Srv, PortMode::Name, PortMode::Static]
                .into_iter()
                .map(|port_mode| {
                    let config = Config {
                        dist_port: Some(4370),
                        nameservers: vec!["127.0.0.1:9".parse().unwrap()],
                        port_mode,
                        ..Config::default()
                    };
                    Engine::new(config, Arc::new(Cache::default())).expect("engine")
                })
                .collect();
            (runtime, engines)
        })
        .1
}
