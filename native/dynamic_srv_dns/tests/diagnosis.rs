//! `Diagnoser` (diagnosis.rs) against a real dnsmasq: what `DynamicSrv.diagnose()` shows.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dynamic_srv_dns::diagnosis::Diagnoser;
use dynamic_srv_dns::{Cache, Config, Engine, Family, PortMode};
use support::Dnsmasq;

fn config(nameserver: SocketAddr) -> Config {
    support::config(nameserver, PortMode::Srv, Duration::from_millis(400))
}

fn diagnoser(server: &Dnsmasq) -> Diagnoser {
    Diagnoser::with_config(config(server.addr())).unwrap()
}

#[tokio::test]
async fn a_healthy_node_shows_its_records_and_no_problem() {
    let server = Dnsmasq::one_node(4999).start();
    let diagnoser = diagnoser(&server);
    let check = diagnoser
        .check_node("n1@dyn.test", Family::Inet, Some(4999))
        .await;
    assert_eq!(check.problems, vec![]);
    assert_eq!(check.endpoint, Some("127.0.0.5:4999".parse().unwrap()));
    let [probe] = &check.probes[..] else {
        panic!("{check:?}")
    };
    assert_eq!(
        (probe.name.as_str(), probe.record_type),
        ("n1.dyn.test", "SRV")
    );
    let lines = probe.outcome.as_ref().unwrap();
    assert!(
        lines[0].starts_with("t1.dyn.test:4999 (priority 0"),
        "{lines:?}"
    );
    assert!(lines[0].ends_with("127.0.0.5)"), "{lines:?}");
    println!("SRV probe took {:?}", probe.elapsed);
}

#[tokio::test]
async fn a_port_mismatch_between_dns_and_this_node_is_a_problem_with_its_fix() {
    let server = Dnsmasq::one_node(4370).start();
    let diagnoser = diagnoser(&server);
    let check = diagnoser
        .check_node("n1@dyn.test", Family::Inet, Some(4999))
        .await;
    let [problem] = &check.problems[..] else {
        panic!("{check:?}")
    };
    assert_eq!(
        problem.what,
        "DNS advertises port 4370 for this node (n1.dyn.test), but it listens on 4999: \
         peers will dial the wrong port"
    );
    assert!(
        problem.fix.contains("ERL_DIST_PORT (4999)"),
        "{}",
        problem.fix
    );
}

#[tokio::test]
async fn nxdomain_and_missing_aaaa_come_with_their_fixes() {
    let server = Dnsmasq::one_node(4370).start();
    let diagnoser = diagnoser(&server);
    let (probe, _) = diagnoser.probe_srv("ghost.dyn.test").await;
    let failure = probe.outcome.unwrap_err();
    assert_eq!(failure.reason, "nxdomain");
    assert!(failure.fix.contains("does not exist"), "{}", failure.fix);

    let check = diagnoser
        .check_node("n1@dyn.test", Family::Inet6, None)
        .await;
    assert_eq!(check.endpoint, None);
    assert_eq!(check.probes.len(), 2, "{check:?}");
    assert_eq!(check.probes[1].record_type, "AAAA");
    let [problem] = &check.problems[..] else {
        panic!("{check:?}")
    };
    assert!(
        problem.what.contains("has no IPv6 address"),
        "{}",
        problem.what
    );
    assert!(problem.fix.contains("inet6_tcp"), "{}", problem.fix);
}

#[tokio::test]
async fn refused_and_a_dead_server_name_the_server_and_the_fix() {
    // No --local domain: dnsmasq refuses names it does not serve.
    let server = Dnsmasq::builder()
        .srv("n1.dyn.test", "t1.dyn.test", 4370, 0, 0)
        .start();
    let diagnoser = diagnoser(&server);
    let (probe, _) = diagnoser.probe_srv("other.example").await;
    let failure = probe.outcome.unwrap_err();
    assert_eq!(failure.reason, "refused", "{failure:?}");
    assert!(
        failure.fix.contains("refused the query (REFUSED)"),
        "{}",
        failure.fix
    );

    let dead: SocketAddr = ([127, 0, 0, 1], support::dead_port()).into();
    let diagnoser = Diagnoser::with_config(config(dead)).unwrap();
    let (probe, _) = diagnoser.probe_srv("n1.dyn.test").await;
    let failure = probe.outcome.unwrap_err();
    println!("dead server: {failure:?} after {:?}", probe.elapsed);
    assert!(
        failure
            .fix
            .starts_with(&format!("nothing answered at {dead} within 400 ms"))
            || failure.fix.starts_with(&format!("cannot reach {dead}")),
        "{}",
        failure.fix
    );
}

#[tokio::test]
async fn diagnosing_never_touches_the_shared_cache() {
    let server = Dnsmasq::one_node(4370).start();
    let shared = Arc::new(Cache::default());
    let _engine = Engine::new(config(server.addr()), shared.clone()).unwrap();
    let diagnoser = diagnoser(&server);
    let check = diagnoser
        .check_node("n1@dyn.test", Family::Inet, None)
        .await;
    assert!(check.endpoint.is_some());
    assert!(shared.is_empty());
}

#[tokio::test]
async fn an_invalid_configuration_still_allows_looking_at_dns() {
    let server = Dnsmasq::one_node(4370).start();
    let nameserver = server.addr().to_string();
    // ERL_DIST_PORT unset: distribution would refuse to start, DNS can still be asked.
    let diagnoser =
        Diagnoser::new(|var| (var == "DYNAMIC_SRV_NAMESERVERS").then(|| nameserver.clone()))
            .unwrap();
    assert_eq!(diagnoser.config().dist_port, None);
    let check = diagnoser
        .check_node("n1@dyn.test", Family::Inet, None)
        .await;
    assert_eq!(check.endpoint, Some("127.0.0.5:4370".parse().unwrap()));
    assert!(Diagnoser::new(|var| (var == "DYNAMIC_SRV_NAMESERVERS").then(|| "x".into())).is_err());
}
