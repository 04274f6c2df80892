//! `Dns` (resolver.rs) against a real dnsmasq.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dynamic_srv_dns::resolver::{Dns, SrvRecord, Transport};
use dynamic_srv_dns::{Family, LookupError};
use support::{slow_tcp_relay, Dnsmasq};

const ATTEMPT: Duration = Duration::from_millis(500);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn sorted(mut records: Vec<SrvRecord>) -> Vec<SrvRecord> {
    records.sort_by_key(|r| r.port);
    records
}

#[tokio::test]
async fn srv_answer_carries_records_and_additional_addresses() {
    let server = Dnsmasq::builder()
        .local_domain("dyn.test")
        .local_ttl(30)
        .srv("svc.dyn.test", "t1.dyn.test", 4370, 10, 5)
        .srv("svc.dyn.test", "T2.dyn.test", 4371, 20, 7)
        .host("t1.dyn.test", &["127.0.0.5", "fd00::5"])
        .host("t2.dyn.test", &["127.0.0.6"])
        .start();
    let dns = Dns::new(&[server.addr()], ATTEMPT).unwrap();

    let answer = dns.srv("svc.dyn.test").await.unwrap();
    assert_eq!(
        sorted(answer.records.clone()),
        vec![
            SrvRecord {
                priority: 10,
                weight: 5,
                port: 4370,
                target: "t1.dyn.test".into(),
                ttl: 30,
            },
            SrvRecord {
                priority: 20,
                weight: 7,
                port: 4371,
                // Lowercased, no trailing dot, whatever case the server used.
                target: "t2.dyn.test".into(),
                ttl: 30,
            },
        ]
    );
    assert!(answer.rejected_targets.is_empty());

    let mut t1 = answer.addresses["t1.dyn.test"].clone();
    t1.sort();
    assert_eq!(t1, vec![(ip("127.0.0.5"), 30), (ip("fd00::5"), 30)]);
    assert_eq!(answer.addresses["t2.dyn.test"], vec![(ip("127.0.0.6"), 30)]);
    assert_eq!(answer.addresses.len(), 2);

    assert_eq!(
        answer.address_of("t1.dyn.test", Family::Inet),
        Some((ip("127.0.0.5"), 30))
    );
    assert_eq!(
        answer.address_of("t1.dyn.test", Family::Inet6),
        Some((ip("fd00::5"), 30))
    );
    assert_eq!(
        answer.address_of("t2.dyn.test", Family::Inet),
        Some((ip("127.0.0.6"), 30))
    );
    assert_eq!(answer.address_of("t2.dyn.test", Family::Inet6), None);
    assert_eq!(answer.address_of("t3.dyn.test", Family::Inet), None);

    // One query answered everything.
    assert_eq!(server.queries("SRV", "svc.dyn.test"), 1);
    assert!(server.queries("A", "t1.dyn.test") + server.queries("AAAA", "t1.dyn.test") == 0);
}

#[tokio::test]
async fn addresses_per_family() {
    let server = Dnsmasq::builder()
        .local_domain("dyn.test")
        .host("h.dyn.test", &["127.0.0.7", "fd00::7"])
        .host("v6only.dyn.test", &["fd00::8"])
        .start();
    let dns = Dns::new(&[server.addr()], ATTEMPT).unwrap();

    assert_eq!(
        dns.addresses("h.dyn.test", Family::Inet).await.unwrap(),
        vec![(ip("127.0.0.7"), 0)]
    );
    assert_eq!(
        dns.addresses("h.dyn.test", Family::Inet6).await.unwrap(),
        vec![(ip("fd00::7"), 0)]
    );
    // Exists, but has no A record: NODATA.
    let error = dns
        .addresses("v6only.dyn.test", Family::Inet)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            LookupError::NoRecords {
                record_type: "A",
                ..
            }
        ),
        "{error:?}"
    );
    let error = dns
        .addresses("nope.dyn.test", Family::Inet6)
        .await
        .unwrap_err();
    assert!(matches!(error, LookupError::NxDomain { .. }), "{error:?}");
    assert_eq!(error.reason(), "nxdomain");
}

#[tokio::test]
async fn nxdomain_and_nodata_for_srv() {
    let server = Dnsmasq::builder()
        .local_domain("dyn.test")
        .host("h.dyn.test", &["127.0.0.7"])
        .srv("other.dyn.test", "h.dyn.test", 1, 0, 0)
        .start();
    let dns = Dns::new(&[server.addr()], ATTEMPT).unwrap();

    let error = dns.srv("nope.dyn.test").await.unwrap_err();
    assert_eq!(
        error,
        LookupError::NxDomain {
            name: "nope.dyn.test".into()
        }
    );
    assert_eq!(error.reason(), "nxdomain");

    let error = dns.srv("h.dyn.test").await.unwrap_err();
    assert_eq!(
        error,
        LookupError::NoRecords {
            name: "h.dyn.test".into(),
            record_type: "SRV"
        }
    );
    assert_eq!(error.reason(), "no_records");
    assert!(error.is_authoritative_absence());
}

#[tokio::test]
async fn refused_outside_the_local_domain_is_a_server_failure() {
    // With no upstream server and no --local for the domain, dnsmasq answers REFUSED: that is
    // DNS failing, not an answer that the name is gone.
    let server = Dnsmasq::builder().local_domain("dyn.test").start();
    let dns = Dns::new(&[server.addr()], ATTEMPT).unwrap();
    let error = dns.srv("elsewhere.example").await.unwrap_err();
    assert!(
        matches!(
            error,
            LookupError::ServerFailure {
                reason: "refused",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_authoritative_absence());
}

#[tokio::test]
async fn large_answer_arrives_intact_over_tcp() {
    const COUNT: u16 = 300;
    let mut builder = Dnsmasq::builder().local_domain("dyn.test");
    for i in 0..COUNT {
        let target = format!("node-{i}.big.dyn.test");
        builder = builder
            .srv("big.dyn.test", &target, 20_000 + i, 1, 1)
            .host(&target, &[&format!("127.0.{}.{}", i / 200, i % 200 + 1)]);
    }
    let server = builder.start();
    let dns = Dns::new(&[server.addr()], Duration::from_secs(2)).unwrap();

    let answer = dns.srv("big.dyn.test").await.unwrap();
    // About 17 KB with the additional A records: far over any UDP payload dnsmasq sends
    // (EDNS 1232 bytes by default), so this came truncated over UDP and then over TCP.
    let mut ports: Vec<u16> = answer.records.iter().map(|r| r.port).collect();
    ports.sort_unstable();
    assert_eq!(ports, (20_000..20_000 + COUNT).collect::<Vec<_>>());
    for record in &answer.records {
        let i = record.port - 20_000;
        assert_eq!(record.target, format!("node-{i}.big.dyn.test"));
        assert_eq!((record.priority, record.weight), (1, 1));
        assert_eq!(
            answer.address_of(&record.target, Family::Inet),
            Some((ip(&format!("127.0.{}.{}", i / 200, i % 200 + 1)), 0)),
            "{record:?}"
        );
    }
    assert_eq!(answer.addresses.len(), usize::from(COUNT));
}

#[tokio::test]
async fn nothing_listening_is_a_timeout_or_unreachable() {
    let port = support::dead_port();
    let dns = Dns::new(&[([127, 0, 0, 1], port).into()], Duration::from_millis(100)).unwrap();
    let started = Instant::now();
    let error = dns.srv("n1.dyn.test").await.unwrap_err();
    assert!(
        matches!(
            error,
            LookupError::Timeout { .. } | LookupError::Unreachable { .. }
        ),
        "{error:?}"
    );
    assert!(!error.is_authoritative_absence());
    // A generous bound, only to catch a lookup that ignores its timeout altogether.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn silent_server_is_a_timeout() {
    // Bound sockets that never answer: the queries are accepted and then nothing comes back.
    let port = support::free_port();
    let _udp = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let _tcp = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let dns = Dns::new(&[([127, 0, 0, 1], port).into()], Duration::from_millis(100)).unwrap();
    let error = dns.srv("n1.dyn.test").await.unwrap_err();
    assert!(matches!(error, LookupError::Timeout { .. }), "{error:?}");
    assert_eq!(error.reason(), "timeout");
}

#[tokio::test]
async fn hickory_caches_answers_for_their_ttl_but_not_nxdomain() {
    let records = || {
        Dnsmasq::builder()
            .local_domain("dyn.test")
            .local_ttl(30)
            .srv("n1.dyn.test", "t1.dyn.test", 4370, 0, 0)
            .host("t1.dyn.test", &["127.0.0.5"])
    };
    let mut server = records().start();
    let dns = Dns::new(&[server.addr()], ATTEMPT).unwrap();

    let first = dns.srv("n1.dyn.test").await.unwrap();
    let second = dns.srv("n1.dyn.test").await.unwrap();
    // The second answer came from hickory's own cache, additional section included.
    assert_eq!(server.queries("SRV", "n1.dyn.test"), 1);
    assert_eq!(second.records, first.records);
    assert_eq!(
        second
            .address_of("t1.dyn.test", Family::Inet)
            .map(|(ip, _)| ip),
        Some(ip("127.0.0.5"))
    );

    // dnsmasq's NXDOMAIN carries no SOA, so hickory does not hold it: a node registered
    // just after a miss is found by the very next lookup.
    assert!(matches!(
        dns.srv("n2.dyn.test").await,
        Err(LookupError::NxDomain { .. })
    ));
    server.restart_with(records().srv("n2.dyn.test", "t1.dyn.test", 4371, 0, 0));
    let answer = dns.srv("n2.dyn.test").await.unwrap();
    assert_eq!(answer.records[0].port, 4371);
    assert_eq!(server.queries("SRV", "n2.dyn.test"), 2);
}

/// Client sockets of this machine connected to `port` on loopback (ESTABLISHED, state 01).
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3
                && fields[3] == "01"
                && fields[2].rsplit(':').next() == Some(&format!("{port:04X}"))
        })
        .count()
}

/// svc.dyn.test: one SRV record, to t1.dyn.test:4370 (127.0.0.5).
fn one_target_server() -> Dnsmasq {
    Dnsmasq::builder()
        .local_domain("dyn.test")
        .srv("svc.dyn.test", "t1.dyn.test", 4370, 0, 0)
        .host("t1.dyn.test", &["127.0.0.5"])
        .start()
}

#[tokio::test]
async fn tcp_lookups_close_their_connection_with_the_answer() {
    // --no-daemon dnsmasq serves TCP inline in its one process: a connection held open
    // between lookups would starve every other client.
    let server = one_target_server();
    let dns = Dns::with_transport(&[server.addr()], ATTEMPT, Transport::Tcp).unwrap();
    for _ in 0..20 {
        let answer = dns.srv("svc.dyn.test").await.unwrap();
        assert_eq!(answer.records.len(), 1);
        let size = answer.size.unwrap();
        assert_eq!(size.transport, Transport::Tcp);
        assert!(size.bytes > 40 && !size.truncated, "{size:?}");
        assert_eq!(size.partial_reason(1), None);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while established_to(server.port()) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        established_to(server.port()),
        0,
        "a TCP connection stayed open"
    );
    // Every TCP query reached the server (none answered from a resolver cache).
    assert_eq!(server.queries("SRV", "svc.dyn.test"), 20);
}

#[tokio::test]
async fn a_slow_server_over_tcp_is_asked_once_and_waited_for() {
    // Over TCP the kernel retransmits: a second attempt would only ask again. A server that
    // answers after one UDP attempt's time (but within the two attempts') is waited for.
    let server = one_target_server();
    let (relay, queries) = slow_tcp_relay(server.addr(), ATTEMPT + ATTEMPT / 2).await;
    let dns = Dns::with_transport(&[relay], ATTEMPT, Transport::Tcp).unwrap();

    let answer = dns.srv("svc.dyn.test").await.unwrap();
    assert_eq!(answer.records.len(), 1);
    assert_eq!(queries.load(std::sync::atomic::Ordering::SeqCst), 1);
}
