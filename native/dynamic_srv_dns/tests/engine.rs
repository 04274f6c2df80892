//! `Engine` (engine.rs) against a real dnsmasq: what `DynamicSrv.Epmd` gets for a peer.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamic_srv_dns::{Cache, Cached, Config, Engine, Family, LookupError, PortMode};
use support::{Dnsmasq, DIST_PORT};

fn config(nameserver: SocketAddr, port_mode: PortMode) -> Config {
    support::config(nameserver, port_mode, Duration::from_millis(1500))
}

fn engine(config: Config) -> Engine {
    Engine::new(config, Arc::new(Cache::default())).unwrap()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// A loopback address where no DNS server listens.
fn dead_nameserver() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], support::dead_port()))
}

#[tokio::test]
async fn srv_mode_takes_ip_and_port_from_one_srv_answer_then_answers_from_cache() {
    let server = Dnsmasq::one_node(4370).start();
    let engine = engine(config(server.addr(), PortMode::Srv));

    assert_eq!(
        engine.cached("n1@dyn.test", Family::Inet).unwrap(),
        Cached::Miss
    );
    let endpoint = engine.resolve("n1@dyn.test", Family::Inet).await.unwrap();
    assert_eq!(endpoint, addr("127.0.0.5:4370"));
    // The address came from the additional section: no A query.
    assert_eq!(
        server.all_queries(),
        vec![("SRV".to_string(), "n1.dyn.test".to_string())]
    );

    assert_eq!(
        engine.cached("n1@dyn.test", Family::Inet).unwrap(),
        Cached::Fresh(endpoint)
    );
    // Case-insensitive: the same entry.
    assert_eq!(
        engine.cached("N1@Dyn.Test", Family::Inet).unwrap(),
        Cached::Fresh(endpoint)
    );
    assert_eq!(
        engine.cached("n1@dyn.test", Family::Inet6).unwrap(),
        Cached::Miss
    );
    assert_eq!(server.all_queries().len(), 1, "cached() must not query DNS");

    // What port_please gets: the name part and the IP from address_please.
    assert_eq!(engine.port_please("n1", endpoint.ip()), Some(4370));
    assert_eq!(engine.port_please("n2", endpoint.ip()), None);
}

#[tokio::test]
async fn inet6_uses_the_aaaa_record_of_the_target() {
    let server = Dnsmasq::builder()
        .local_domain("dyn.test")
        .srv("n6.dyn.test", "t6.dyn.test", 4372, 0, 0)
        .host("t6.dyn.test", &["127.0.0.6", "fd00::6"])
        // The Fly.io shape: IPv6 only.
        .srv("fly.dyn.test", "v6only.dyn.test", 4373, 0, 0)
        .host("v6only.dyn.test", &["fd00::7"])
        .start();
    let engine = engine(config(server.addr(), PortMode::Srv));

    let v6 = engine.resolve("n6@dyn.test", Family::Inet6).await.unwrap();
    assert_eq!(v6, addr("[fd00::6]:4372"));
    let v4 = engine.resolve("n6@dyn.test", Family::Inet).await.unwrap();
    assert_eq!(v4, addr("127.0.0.6:4372"));
    assert_eq!(
        engine.cached("n6@dyn.test", Family::Inet6).unwrap(),
        Cached::Fresh(v6)
    );
    assert_eq!(
        engine.cached("n6@dyn.test", Family::Inet).unwrap(),
        Cached::Fresh(v4)
    );
    assert_eq!(server.queries("AAAA", "t6.dyn.test"), 0);
    assert_eq!(server.queries("A", "t6.dyn.test"), 0);

    assert_eq!(
        engine.resolve("fly@dyn.test", Family::Inet6).await.unwrap(),
        addr("[fd00::7]:4373")
    );
    // IPv4 asked of an IPv6-only target: the A fallback finds nothing.
    let error = engine
        .resolve("fly@dyn.test", Family::Inet)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        LookupError::NoAddress {
            name: "fly.dyn.test".into(),
            target: "v6only.dyn.test".into(),
            family: "IPv4",
        }
    );
    assert_eq!(error.reason(), "no_address");
    assert_eq!(server.queries("A", "v6only.dyn.test"), 1);
}

#[tokio::test]
async fn falls_back_to_an_address_query_when_the_additional_section_lacks_the_target() {
    // dnsmasq adds --host-record addresses to SRV answers, but not --address=/domain/ ones.
    let server = Dnsmasq::builder()
        .local_domain("dyn.test")
        .address("ext.test", "127.0.0.9")
        .srv("n2.dyn.test", "x.ext.test", 4371, 0, 0)
        .start();
    let engine = engine(config(server.addr(), PortMode::Srv));

    let answer = engine.dns().srv("n2.dyn.test").await.unwrap();
    assert!(answer.addresses.is_empty(), "{answer:?}");

    let endpoint = engine.resolve("n2@dyn.test", Family::Inet).await.unwrap();
    assert_eq!(endpoint, addr("127.0.0.9:4371"));
    assert_eq!(server.queries("SRV", "n2.dyn.test"), 2);
    assert_eq!(server.queries("A", "x.ext.test"), 1);
    assert_eq!(
        engine.cached("n2@dyn.test", Family::Inet).unwrap(),
        Cached::Fresh(endpoint)
    );
}

#[tokio::test]
async fn the_lowest_priority_always_wins() {
    let server = Dnsmasq::builder()
        .local_domain("dyn.test")
        // The losing record carries all the weight, so ignoring priority would pick it.
        .srv("prio.dyn.test", "a.dyn.test", 5001, 10, 1)
        .srv("prio.dyn.test", "b.dyn.test", 5002, 20, 1000)
        .host("a.dyn.test", &["127.0.0.11"])
        .host("b.dyn.test", &["127.0.0.12"])
        .start();
    let mut config = config(server.addr(), PortMode::Srv);
    config.min_ttl = Duration::ZERO;
    let engine = engine(config);

    const ROUNDS: usize = 12;
    for _ in 0..ROUNDS {
        let endpoint = engine.resolve("prio@dyn.test", Family::Inet).await.unwrap();
        assert_eq!(endpoint, addr("127.0.0.11:5001"));
    }
    // Every resolve asked DNS again (TTL 0 and min_ttl 0: nothing is held).
    assert_eq!(server.queries("SRV", "prio.dyn.test"), ROUNDS);
    assert_eq!(
        engine.cached("prio@dyn.test", Family::Inet).unwrap(),
        Cached::Miss
    );
}

#[tokio::test]
async fn equal_priorities_share_by_weight() {
    let server = Dnsmasq::builder()
        .local_domain("dyn.test")
        .srv("pair.dyn.test", "a.dyn.test", 5001, 10, 50)
        .srv("pair.dyn.test", "b.dyn.test", 5002, 10, 50)
        .host("a.dyn.test", &["127.0.0.11"])
        .host("b.dyn.test", &["127.0.0.12"])
        .start();
    let engine = engine(config(server.addr(), PortMode::Srv));

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        seen.insert(engine.resolve("pair@dyn.test", Family::Inet).await.unwrap());
    }
    // Each of the 40 picks is a coin toss: missing one side has probability 2^-39.
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![addr("127.0.0.11:5001"), addr("127.0.0.12:5002")]
    );
}

#[tokio::test]
async fn absent_names_are_errors_not_endpoints() {
    let server = Dnsmasq::builder()
        .local_domain("dyn.test")
        .host("h.dyn.test", &["127.0.0.7"])
        .start();
    let engine = engine(config(server.addr(), PortMode::Srv));

    let error = engine
        .resolve("ghost@dyn.test", Family::Inet)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        LookupError::NxDomain {
            name: "ghost.dyn.test".into()
        }
    );
    assert_eq!(error.reason(), "nxdomain");

    // `h@dyn.test` asks SRV for h.dyn.test, which only has an A record.
    let error = engine
        .resolve("h@dyn.test", Family::Inet)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        LookupError::NoRecords {
            name: "h.dyn.test".into(),
            record_type: "SRV"
        }
    );
    assert_eq!(error.reason(), "no_records");
    assert_eq!(
        engine.cached("h@dyn.test", Family::Inet).unwrap(),
        Cached::Miss
    );
}

#[tokio::test]
async fn a_dead_nameserver_fails_within_the_lookup_timeout() {
    let mut config = config(dead_nameserver(), PortMode::Srv);
    config.lookup_timeout = Duration::from_millis(300);
    let engine = engine(config);

    let started = Instant::now();
    let error = engine
        .resolve("n1@dyn.test", Family::Inet)
        .await
        .unwrap_err();
    match &error {
        // Reported against the whole budget, not one attempt's share of it.
        LookupError::Timeout { name, after } => {
            assert_eq!(name, "n1.dyn.test");
            assert_eq!(*after, Duration::from_millis(300));
        }
        LookupError::Unreachable { .. } => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(!error.is_authoritative_absence());
    // Generous: only catches a lookup that ignores the budget altogether.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Nothing to fall back on.
    assert_eq!(
        engine.cached("n1@dyn.test", Family::Inet).unwrap(),
        Cached::Miss
    );
}

#[tokio::test]
async fn serves_the_last_answer_while_dns_is_down_and_recovers_after() {
    let records = || {
        Dnsmasq::builder()
            .local_domain("dyn.test")
            .host("t1.dyn.test", &["127.0.0.5"])
    };
    let mut server = records()
        .srv("n1.dyn.test", "t1.dyn.test", 4370, 0, 0)
        .start();
    let mut config = config(server.addr(), PortMode::Srv);
    config.min_ttl = Duration::from_millis(200);
    config.lookup_timeout = Duration::from_millis(300);
    let min_ttl = config.min_ttl;
    let engine = engine(config);

    let endpoint = engine.resolve("n1@dyn.test", Family::Inet).await.unwrap();
    assert_eq!(endpoint, addr("127.0.0.5:4370"));
    assert_eq!(
        engine.cached("n1@dyn.test", Family::Inet).unwrap(),
        Cached::Fresh(endpoint)
    );

    server.stop();
    tokio::time::sleep(min_ttl + Duration::from_millis(50)).await;
    // Expired, and no failure seen yet: the caller has to ask DNS.
    assert_eq!(
        engine.cached("n1@dyn.test", Family::Inet).unwrap(),
        Cached::Miss
    );
    // DNS is down: the last known endpoint is the answer...
    assert_eq!(
        engine.resolve("n1@dyn.test", Family::Inet).await.unwrap(),
        endpoint
    );
    // ... and for a while it is served from memory without waiting on the dead server.
    assert_eq!(
        engine.cached("n1@dyn.test", Family::Inet).unwrap(),
        Cached::StaleDuringOutage(endpoint)
    );

    // DNS is back with a new port for the node: the new answer replaces the stale one.
    server.restart_with(records().srv("n1.dyn.test", "t1.dyn.test", 4380, 0, 0));
    let moved = engine.resolve("n1@dyn.test", Family::Inet).await.unwrap();
    assert_eq!(moved, addr("127.0.0.5:4380"));
    assert_eq!(
        engine.cached("n1@dyn.test", Family::Inet).unwrap(),
        Cached::Fresh(moved)
    );

    // The node is deregistered: DNS says so, and no stale answer is served for it.
    server.restart_with(records());
    let error = engine
        .resolve("n1@dyn.test", Family::Inet)
        .await
        .unwrap_err();
    assert!(matches!(error, LookupError::NxDomain { .. }), "{error:?}");
    assert_eq!(
        engine.cached("n1@dyn.test", Family::Inet).unwrap(),
        Cached::Miss
    );
    server.stop();
    let error = engine
        .resolve("n1@dyn.test", Family::Inet)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            LookupError::Timeout { .. } | LookupError::Unreachable { .. }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn name_mode_takes_the_port_from_the_node_name_and_the_ip_from_the_host() {
    let server = Dnsmasq::builder()
        .local_domain("dyn.test")
        .host("h.dyn.test", &["127.0.0.7", "fd00::7"])
        .start();
    let mut config = config(server.addr(), PortMode::Name);
    config.dist_port = None;
    let engine = engine(config);

    let endpoint = engine
        .resolve("app-4370@h.dyn.test", Family::Inet)
        .await
        .unwrap();
    assert_eq!(endpoint, addr("127.0.0.7:4370"));
    assert_eq!(
        engine
            .resolve("app-4371@h.dyn.test", Family::Inet6)
            .await
            .unwrap(),
        addr("[fd00::7]:4371")
    );
    assert_eq!(
        engine.cached("app-4370@h.dyn.test", Family::Inet).unwrap(),
        Cached::Fresh(endpoint)
    );
    assert_eq!(
        server.all_queries(),
        vec![
            ("A".to_string(), "h.dyn.test".to_string()),
            ("AAAA".to_string(), "h.dyn.test".to_string()),
        ]
    );
    assert_eq!(engine.port_please("app-4370", endpoint.ip()), Some(4370));

    let error = engine
        .resolve("app@h.dyn.test", Family::Inet)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "invalid_node_name");
}

#[tokio::test]
async fn static_mode_uses_the_dist_port_and_the_host_address() {
    let server = Dnsmasq::builder()
        .local_domain("dyn.test")
        .host("h.dyn.test", &["127.0.0.7"])
        .start();
    let engine = engine(config(server.addr(), PortMode::Static));

    let endpoint = engine
        .resolve("app@h.dyn.test", Family::Inet)
        .await
        .unwrap();
    assert_eq!(endpoint, SocketAddr::from(([127, 0, 0, 7], DIST_PORT)));
    assert_eq!(
        engine.cached("app@h.dyn.test", Family::Inet).unwrap(),
        Cached::Fresh(endpoint)
    );
    assert_eq!(
        server.all_queries(),
        vec![("A".to_string(), "h.dyn.test".to_string())]
    );
}

#[tokio::test]
async fn ip_literal_hosts_need_no_dns() {
    let mut config = config(dead_nameserver(), PortMode::Name);
    config.dist_port = None;
    let named = engine(config.clone());
    assert_eq!(
        named.cached("app-4370@127.0.0.1", Family::Inet).unwrap(),
        Cached::Fresh(addr("127.0.0.1:4370"))
    );
    assert_eq!(
        named.cached("app-4371@::1", Family::Inet6).unwrap(),
        Cached::Fresh(addr("[::1]:4371"))
    );
    assert_eq!(
        named
            .resolve("app-4370@127.0.0.1", Family::Inet)
            .await
            .unwrap(),
        addr("127.0.0.1:4370")
    );
    // A DNS name with the same dead nameserver does need DNS.
    assert_eq!(
        named.cached("app-4370@h.dyn.test", Family::Inet).unwrap(),
        Cached::Miss
    );

    config.port_mode = PortMode::Static;
    config.dist_port = Some(DIST_PORT);
    let fixed = engine(config);
    assert_eq!(
        fixed.cached("app@127.0.0.1", Family::Inet).unwrap(),
        Cached::Fresh(SocketAddr::from(([127, 0, 0, 1], DIST_PORT)))
    );
}

#[tokio::test]
async fn release_helper_reaches_its_node_over_loopback_on_the_dist_port_without_dns() {
    let records = || {
        Dnsmasq::builder()
            .local_domain("dyn.test")
            // The host names the whole service (every instance), not the helper's machine.
            .host("h.dyn.test", &["127.0.0.7"])
            // If the helper asked SRV it would get this port instead of ERL_DIST_PORT.
            .srv("main.h.dyn.test", "h.dyn.test", 5555, 0, 0)
    };
    let server = records().start();

    let helper = engine(config(server.addr(), PortMode::Srv));
    assert_eq!(helper.listen_port("rpc-1a2b-main@h.dyn.test").unwrap(), 0);
    let endpoint = helper
        .resolve("main@h.dyn.test", Family::Inet)
        .await
        .unwrap();
    assert_eq!(endpoint, SocketAddr::from(([127, 0, 0, 1], DIST_PORT)));
    assert_eq!(
        helper.cached("main@h.dyn.test", Family::Inet).unwrap(),
        Cached::Fresh(endpoint)
    );
    assert_eq!(
        helper.cached("main@h.dyn.test", Family::Inet6).unwrap(),
        Cached::Fresh(SocketAddr::new(
            std::net::Ipv6Addr::LOCALHOST.into(),
            DIST_PORT
        ))
    );
    assert_eq!(server.queries("SRV", "main.h.dyn.test"), 0);
    assert_eq!(server.queries("A", "h.dyn.test"), 0);

    // Nobody dials a helper (after `bin/app remote` quits, OTP on the served node tries):
    // answered at once, without DNS, in every port mode.
    for mode in [PortMode::Srv, PortMode::Name, PortMode::Static] {
        let served = engine(config(server.addr(), mode));
        for helper in ["rem-00ff-main@h.dyn.test", "rpc-1a2b-main-4370@h.dyn.test"] {
            let error = served.cached(helper, Family::Inet).unwrap_err();
            assert_eq!(error.reason(), "release_helper", "{mode:?} {helper}");
            let error = served.resolve(helper, Family::Inet).await.unwrap_err();
            assert_eq!(error.reason(), "release_helper", "{mode:?} {helper}");
        }
    }
    assert_eq!(server.all_queries(), vec![]);

    // Any other node, including one whose name merely starts with "rpc-", uses SRV.
    let other = engine(config(server.addr(), PortMode::Srv));
    assert_eq!(
        other.listen_port("rpc-gateway@h.dyn.test").unwrap(),
        DIST_PORT
    );
    assert_eq!(
        other
            .resolve("main@h.dyn.test", Family::Inet)
            .await
            .unwrap(),
        addr("127.0.0.7:5555")
    );
    assert_eq!(server.queries("SRV", "main.h.dyn.test"), 1);
}

/// Regression (./scripts/fuzz, node_names): OTP's port_please/2 hands over any name; one ending
/// in a multi-byte character panicked in name mode. Also every entry point with hostile names.
#[tokio::test]
async fn hostile_node_names_get_errors_not_panics() {
    let ip = "127.0.0.1".parse().unwrap();
    for mode in [PortMode::Srv, PortMode::Name, PortMode::Static] {
        let engine = engine(config(dead_nameserver(), mode));
        // Only static mode has a port for a name without digits.
        let expected = (mode == PortMode::Static).then_some(DIST_PORT);
        assert_eq!(engine.port_please("\u{5bf}", ip), expected);
        for node in [
            "app\u{e9}4370@h",
            "\u{5bf}@h",
            "a@\u{5bf}",
            "@",
            "a@b@c",
            "",
            "a@",
            "a@-.x",
        ] {
            let _ = engine.listen_port(node);
            let _ = engine.cached(node, Family::Inet);
            let _ = engine.cached(node, Family::Inet6);
        }
    }
    let engine = engine(config(dead_nameserver(), PortMode::Name));
    assert_eq!(engine.port_please("app\u{e9}4370", ip), Some(4370));
    assert_eq!(
        engine
            .cached("app\u{e9}4370@127.0.0.1", Family::Inet)
            .unwrap(),
        Cached::Fresh(addr("127.0.0.1:4370"))
    );
}
