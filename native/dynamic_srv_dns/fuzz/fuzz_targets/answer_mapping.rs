//! A sequence of SRV answers (any records, targets and additional addresses, as a spoofer could
//! send) and DNS failures, applied to one topology. Invariants after every poll: nothing
//! panics; members are valid node names, sorted, unique and at most `max_nodes`; a failure
//! changes nothing; nobody in the answer leaves; only former members leave; every mapped node
//! is a member or counted over the limit; the cache holds what the answer said for each node.
#![no_main]

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use dynamic_srv_dns::resolver::{SrvAnswer, SrvRecord};
use dynamic_srv_dns::{
    srv, Cache, Config, Engine, Family, NodeName, NodeNaming, Topology, TopologyConfig,
};
use libfuzzer_sys::fuzz_target;

const SERVICES: [&str; 3] = ["my-svc.service.consul", "app.internal.", "a"];

#[derive(Debug, Arbitrary)]
struct Input {
    service: u8,
    naming: u8,
    basename: String,
    max_nodes: u8,
    polls: Vec<PollInput>,
}

#[derive(Debug, Arbitrary)]
enum PollInput {
    Failure,
    Answer {
        records: Vec<Record>,
        addresses: Vec<(Target, Address, u32)>,
        rejected: Vec<String>,
    },
}

#[derive(Debug, Arbitrary)]
struct Record {
    priority: u16,
    weight: u16,
    port: u16,
    target: Target,
    ttl: u32,
}

#[derive(Debug, Clone, Arbitrary)]
enum Target {
    /// `label.service`: the shape that maps, so the fuzzer reaches the membership code.
    Under(String),
    Raw(String),
}

#[derive(Debug, Arbitrary)]
enum Address {
    V4([u8; 4]),
    V6([u16; 8]),
}

fuzz_target!(|input: Input| {
    let service = SERVICES[usize::from(input.service) % SERVICES.len()];
    let naming = match input.naming % 3 {
        0 => NodeNaming::ServicePrefix,
        1 => NodeNaming::BasenamePort(input.basename.clone()),
        _ => NodeNaming::Basename(input.basename.clone()),
    };
    let max_nodes = usize::from(input.max_nodes % 8) + 1;
    let config = TopologyConfig {
        service: service.to_string(),
        naming: naming.clone(),
        family: Family::Inet,
        max_nodes,
        removal_delay: std::time::Duration::ZERO,
    };
    let engine = engine();
    let Ok(topology) = Topology::new(config, engine.clone()) else {
        assert!(naming.validate().is_err());
        return;
    };
    let mut members: Vec<String> = Vec::new();
    for poll in input.polls.iter().take(16) {
        match poll {
            PollInput::Failure => {
                let result = topology.apply_failure("timeout");
                assert_eq!(result.change.members, members);
                assert!(result.change.joined.is_empty() && result.change.left.is_empty());
            }
            PollInput::Answer {
                records,
                addresses,
                rejected,
            } => {
                let answer = build_answer(service, records, addresses, rejected);
                let result = topology.apply_srv(&answer);
                assert_eq!(result.records, answer.records.len() + rejected.len());
                let change = &result.change;

                let mapped: BTreeSet<String> = answer
                    .records
                    .iter()
                    .filter_map(|r| naming.node_for_target(service, &r.target, r.port).ok())
                    .collect();
                let before: BTreeSet<&String> = members.iter().collect();
                let after: BTreeSet<&String> = change.members.iter().collect();
                assert!(
                    change.members.windows(2).all(|w| w[0] < w[1]),
                    "sorted, unique"
                );
                assert!(change.members.len() <= max_nodes);
                for node in &change.members {
                    assert!(
                        node.len() <= 255 && NodeName::parse(node).is_ok(),
                        "{node:?}"
                    );
                }
                for node in &change.joined {
                    assert!(
                        after.contains(node) && !before.contains(node) && mapped.contains(node)
                    );
                }
                for node in &change.left {
                    assert!(before.contains(node) && !after.contains(node));
                    assert!(!mapped.contains(node), "{node} is in the answer but left");
                }
                let new = mapped.iter().filter(|n| !before.contains(n)).count();
                assert_eq!(new, change.joined.len() + change.over_limit);
                check_cache(engine.cache(), service, &naming, &answer);
                if let Some(chosen) = srv::select(&answer.records, u32::from(input.max_nodes)) {
                    let best = answer.records.iter().map(|r| r.priority).min();
                    assert_eq!(Some(chosen.priority), best);
                } else {
                    assert!(answer.records.is_empty());
                }
            }
        }
        members = topology.members();
    }
});

fn build_answer(
    service: &str,
    records: &[Record],
    addresses: &[(Target, Address, u32)],
    rejected: &[String],
) -> SrvAnswer {
    let name = |target: &Target| match target {
        Target::Under(label) => format!("{label}.{}", service.trim_end_matches('.')),
        Target::Raw(raw) => raw.clone(),
    };
    let mut by_target: HashMap<String, Vec<(IpAddr, u32)>> = HashMap::new();
    for (target, address, ttl) in addresses.iter().take(64) {
        let ip = match address {
            Address::V4(octets) => IpAddr::V4(Ipv4Addr::from(*octets)),
            Address::V6(segments) => IpAddr::V6(Ipv6Addr::from(*segments)),
        };
        by_target
            .entry(name(target).to_ascii_lowercase())
            .or_default()
            .push((ip, *ttl));
    }
    SrvAnswer {
        records: records
            .iter()
            .take(64)
            .map(|r| SrvRecord {
                priority: r.priority,
                weight: r.weight,
                port: r.port,
                target: name(&r.target),
                ttl: r.ttl,
            })
            .collect(),
        addresses: by_target,
        rejected_targets: rejected.to_vec(),
    }
}

/// Each mapped node whose target has an IPv4 address in the answer is cached at that address,
/// on the port of one of its records (the last one wins when a node has several).
fn check_cache(cache: &Cache, service: &str, naming: &NodeNaming, answer: &SrvAnswer) {
    let node_of = |record: &SrvRecord| naming.node_for_target(service, &record.target, record.port);
    for record in &answer.records {
        let Ok(node) = node_of(record) else {
            continue;
        };
        if answer.address_of(&record.target, Family::Inet).is_none() {
            continue;
        }
        let key = NodeName::parse(&node).unwrap().key();
        let entry = cache
            .entry(&key, Family::Inet)
            .unwrap_or_else(|| panic!("{node} not cached"));
        let said: Vec<SocketAddr> = answer
            .records
            .iter()
            .filter(|r| node_of(r).is_ok_and(|n| n.eq_ignore_ascii_case(&node)))
            .filter_map(|r| {
                let (ip, _) = answer.address_of(&r.target, Family::Inet)?;
                Some(SocketAddr::new(ip, r.port))
            })
            .collect();
        assert!(
            said.contains(&entry.endpoint),
            "{node}: {entry:?} not in {said:?}"
        );
    }
}

/// A fresh engine and cache per input, so entries from earlier inputs cannot satisfy the
/// checks. Building the resolver needs a tokio runtime context; nothing here queries DNS.
fn engine() -> Arc<Engine> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    });
    let _context = runtime.enter();
    let config = Config {
        nameservers: vec!["127.0.0.1:9".parse().unwrap()],
        ..Config::default()
    };
    Arc::new(Engine::new(config, Arc::new(Cache::default())).expect("engine"))
}
