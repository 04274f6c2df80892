//! `Topology` (topology.rs) against a real dnsmasq: the Consul shapes `BasenamePortIp` maps.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dynamic_srv_dns::resolver::Transport;
use dynamic_srv_dns::{
    Cache, Config, Engine, Family, NodeNaming, PortMode, Topology, TopologyConfig,
};
use support::{slow_tcp_relay, Builder, Dnsmasq};

const SERVICE: &str = "my-app.service.consul";

fn topology(nameserver: SocketAddr) -> Topology {
    topology_holding(nameserver, Duration::from_secs(5))
}

/// `min_ttl` also bounds how long a target's looked-up address is reused between polls.
fn topology_holding(nameserver: SocketAddr, min_ttl: Duration) -> Topology {
    let config = consul_config(nameserver, Duration::from_millis(1500), min_ttl);
    topology_over(config, Transport::Udp)
}

/// Consul's domain holding one instance, app-21001@127.0.0.11, its address in the answer.
fn one_instance() -> Builder {
    Dnsmasq::builder()
        .local_domain("consul")
        .srv(SERVICE, "7f00000b.addr.dc1.consul", 21001, 1, 1)
        .host("7f00000b.addr.dc1.consul", &["127.0.0.11"])
}

/// Name mode against one server, as the Consul recipe runs.
fn consul_config(nameserver: SocketAddr, lookup_timeout: Duration, min_ttl: Duration) -> Config {
    Config {
        dist_port: None,
        nameservers: vec![nameserver],
        port_mode: PortMode::Name,
        lookup_timeout,
        min_ttl,
        max_stale: Duration::from_secs(60),
        srv_takes_whole_budget: false,
    }
}

/// A topology of `SERVICE` named `{:basename_port_ip, "app"}`, asking over `transport`.
fn topology_over(config: Config, transport: Transport) -> Topology {
    let engine = Engine::with_transport(config, Arc::new(Cache::default()), transport).unwrap();
    let config = TopologyConfig {
        service: SERVICE.into(),
        naming: NodeNaming::BasenamePortIp("app".into()),
        family: Family::Inet,
        max_nodes: 64,
        removal_delay: Duration::ZERO,
    };
    Topology::new(config, Arc::new(engine)).unwrap()
}

#[tokio::test]
async fn basename_port_ip_maps_every_consul_target_form_to_port_and_address() {
    let server = Dnsmasq::builder()
        .local_domain("consul")
        // Consul >= 1.7 for a service registered with an IP: two allocations on one host.
        .srv(SERVICE, "7f00000b.addr.dc1.consul", 21001, 1, 1)
        .srv(SERVICE, "7f00000b.addr.dc1.consul", 21002, 1, 1)
        .host("7f00000b.addr.dc1.consul", &["127.0.0.11"])
        // A service registered without an address: the agent's node name.
        .srv(SERVICE, "worker-2.node.dc1.consul", 21003, 1, 1)
        .host("worker-2.node.dc1.consul", &["127.0.0.12"])
        // A service registered under a host name Consul does not add to the additional
        // section (dnsmasq leaves --address= records out of it too): one A query.
        .srv(SERVICE, "app-3.example.test", 21004, 1, 1)
        .address("example.test", "127.0.0.13")
        // A registered name with no address at all is no node.
        .srv(SERVICE, "ghost.example.nope", 21005, 1, 1)
        .local_domain("example.nope")
        .start();
    let topology = topology(server.addr());

    let poll = topology.poll().await;
    let mut members = poll.change.members.clone();
    members.sort();
    assert_eq!(
        members,
        [
            "app-21001@127.0.0.11",
            "app-21002@127.0.0.11",
            "app-21003@127.0.0.12",
            "app-21004@127.0.0.13",
        ]
    );
    assert_eq!(poll.records, 5);
    assert_eq!(poll.unmapped.len(), 1, "{:?}", poll.unmapped);
    assert_eq!(poll.unmapped[0].0, "ghost.example.nope");
    assert!(
        poll.unmapped[0].1.contains("no IPv4 address"),
        "{:?}",
        poll.unmapped
    );
    // Only the targets missing from the additional section were looked up.
    assert_eq!(server.queries("A", "app-3.example.test"), 1);
    assert_eq!(server.queries("A", "ghost.example.nope"), 1);
    assert_eq!(server.queries("A", "7f00000b.addr.dc1.consul"), 0);
    assert_eq!(server.queries("A", "worker-2.node.dc1.consul"), 0);
}

#[tokio::test]
async fn a_failed_address_lookup_fails_the_poll_instead_of_dropping_the_node() {
    // Names outside dnsmasq's local domains are REFUSED (no upstream): a server failure.
    let mut server = one_instance()
        .srv(SERVICE, "app-3.example.test", 21004, 1, 1)
        .address("example.test", "127.0.0.13")
        .start();
    // dnsmasq answers with TTL 0: with no minimum, every poll asks for the address again.
    let topology = topology_holding(server.addr(), Duration::ZERO);
    let first = topology.poll().await;
    assert_eq!(first.change.members.len(), 2, "{first:?}");

    let port = server.port();
    server.restart_with(
        one_instance()
            .port(port)
            .srv(SERVICE, "app-3.example.test", 21004, 1, 1),
    );
    for attempt in 0..3 {
        let poll = topology.poll().await;
        if attempt == 0 {
            let reason = poll.change.outage_started.clone().unwrap_or_default();
            assert!(reason.contains("app-3.example.test"), "{poll:?}");
        }
        let mut members = poll.change.members.clone();
        members.sort();
        assert_eq!(
            members,
            ["app-21001@127.0.0.11", "app-21004@127.0.0.13"],
            "{poll:?}"
        );
        assert!(poll.change.left.is_empty(), "{poll:?}");
    }
}

#[tokio::test]
async fn only_members_are_cached_when_an_answer_lists_more_than_max_nodes() {
    let server = Dnsmasq::builder()
        .local_domain("consul")
        .srv(SERVICE, "n1.addr.dc1.consul", 21001, 1, 1)
        .host("n1.addr.dc1.consul", &["127.0.0.11"])
        .srv(SERVICE, "n2.addr.dc1.consul", 21002, 1, 1)
        .host("n2.addr.dc1.consul", &["127.0.0.12"])
        .srv(SERVICE, "n3.addr.dc1.consul", 21003, 1, 1)
        .host("n3.addr.dc1.consul", &["127.0.0.13"])
        .start();
    let cache = Arc::new(Cache::default());
    let config = consul_config(
        server.addr(),
        Duration::from_millis(1500),
        Duration::from_secs(5),
    );
    let engine = Arc::new(Engine::new(config, cache.clone()).unwrap());
    let topology = Topology::new(
        TopologyConfig {
            service: SERVICE.into(),
            naming: NodeNaming::BasenamePortIp("app".into()),
            family: Family::Inet,
            max_nodes: 2,
            removal_delay: Duration::ZERO,
        },
        engine,
    )
    .unwrap();

    let poll = topology.poll().await;
    assert_eq!(poll.change.members.len(), 2);
    assert_eq!(poll.change.over_limit, 1);
    // The node left out by max_nodes takes no room in the cache every connection shares.
    assert_eq!(cache.len(), 2);
    for member in &poll.change.members {
        assert!(
            cache.entry(member, Family::Inet).is_some(),
            "{member} not cached"
        );
    }
}

/// A 300 ms lookup timeout, with `for_polls(interval)` or without.
fn polling_config(nameserver: SocketAddr, interval: Option<Duration>) -> Config {
    let config = consul_config(
        nameserver,
        Duration::from_millis(300),
        Duration::from_secs(5),
    );
    match interval {
        Some(interval) => config.for_polls(interval),
        None => config,
    }
}

/// A poll over TCP with a 300 ms lookup timeout, with `for_polls(interval)` or without.
fn polling_topology(nameserver: SocketAddr, interval: Option<Duration>) -> Topology {
    topology_over(polling_config(nameserver, interval), Transport::Tcp)
}

#[tokio::test]
async fn a_poll_waits_for_a_server_slower_than_the_lookup_timeout_until_its_next_is_due() {
    // Nothing waits on a poll: an answer 600 ms late, past a 300 ms lookup timeout but
    // before the next poll 1.5 s on, is still the newest membership.
    let server = one_instance().start();
    let (relay, queries) = slow_tcp_relay(server.addr(), Duration::from_millis(600)).await;

    let bounded_by_lookups = polling_topology(relay, None).poll().await;
    assert!(bounded_by_lookups.failed);
    assert!(bounded_by_lookups.change.members.is_empty());

    let poll = polling_topology(relay, Some(Duration::from_millis(1500)))
        .poll()
        .await;
    assert!(!poll.failed, "{poll:?}");
    assert_eq!(poll.change.members, ["app-21001@127.0.0.11"]);
    assert_eq!(queries.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_polls_srv_query_may_take_its_whole_budget() {
    // A connection setup's SRV query gets two thirds of the budget, the rest being for the
    // address; a poll's target addresses have a budget of their own, so its SRV query may
    // take it all: an answer 1.9 s late within a poll's 2.5 s is the membership (two
    // thirds, 1.67 s, is cut short: the relay waits 1.9 s before it even asks the server).
    let server = one_instance().start();
    let (relay, _queries) = slow_tcp_relay(server.addr(), Duration::from_millis(1900)).await;
    let budget = Some(Duration::from_millis(2500));

    let two_thirds = Config {
        srv_takes_whole_budget: false,
        ..polling_config(relay, budget)
    };
    let cut_short = topology_over(two_thirds, Transport::Tcp).poll().await;
    assert!(cut_short.failed, "{cut_short:?}");

    let poll = polling_topology(relay, budget).poll().await;
    assert!(!poll.failed, "{poll:?}");
    assert_eq!(poll.change.members, ["app-21001@127.0.0.11"]);
}
