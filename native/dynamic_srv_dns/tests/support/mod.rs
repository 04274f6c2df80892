//! A real dnsmasq per test, on its own loopback port, killed by its child PID on drop.
//!
//! ```ignore
//! let dns = Dnsmasq::builder()
//!     .local_domain("dyn.test")
//!     .srv("n1.dyn.test", "t1.dyn.test", 4370, 10, 5)
//!     .host("t1.dyn.test", &["127.0.0.5", "::5"])
//!     .start();
//! // ... point a resolver at dns.addr() ...
//! assert_eq!(dns.queries("SRV", "n1.dyn.test"), 1);
//! ```

// Each test binary uses a different part of this helper.
#![allow(dead_code)]

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dynamic_srv_dns::{Config, PortMode};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// How long dnsmasq gets to start answering, and a log line to appear.
const PATIENCE: Duration = Duration::from_secs(10);
/// Start attempts on fresh ports when dnsmasq cannot bind the one picked.
const PORT_ATTEMPTS: usize = 5;

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

fn unique() -> u32 {
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

/// The dnsmasq binary, or a failure telling how to get it. Tests never skip silently.
pub fn dnsmasq_binary() -> &'static Path {
    let path = Path::new(DNSMASQ);
    assert!(
        path.is_file(),
        "{DNSMASQ} not found: these integration tests run a real DNS server; \
         install it with `apt-get install dnsmasq-base`"
    );
    path
}

/// A loopback port that is free for both UDP and TCP right now.
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let udp =
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a UDP socket on 127.0.0.1");
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// A loopback port where nothing listens, for "the DNS server is down" tests. It is taken
/// below the kernel's ephemeral range, so no `free_port` (and so no concurrently started
/// dnsmasq) and no client socket of another test can land on it while the test runs.
pub fn dead_port() -> u16 {
    let low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let span = low.saturating_sub(10_000).max(1);
    let start = (std::process::id() ^ unique().wrapping_mul(7919)) % u32::from(span);
    for step in 0..u32::from(span) {
        let port = low - 1 - ((start + step) % u32::from(span)) as u16;
        let udp_free = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
        if udp_free && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below {low}");
}

#[derive(Debug, Clone, Default)]
pub struct Builder {
    records: Vec<String>,
    port: Option<u16>,
}

impl Builder {
    /// `--srv-host=NAME,TARGET,PORT,PRIORITY,WEIGHT`.
    pub fn srv(mut self, name: &str, target: &str, port: u16, priority: u16, weight: u16) -> Self {
        self.records.push(format!(
            "--srv-host={name},{target},{port},{priority},{weight}"
        ));
        self
    }

    /// `--host-record=NAME,IP[,IP]`: A and/or AAAA records, which dnsmasq also puts in the
    /// additional section of SRV answers naming this host.
    pub fn host(mut self, name: &str, ips: &[&str]) -> Self {
        self.records
            .push(format!("--host-record={name},{}", ips.join(",")));
        self
    }

    /// `--address=/DOMAIN/IP`: answers A (or AAAA) queries for the domain and every name under
    /// it; dnsmasq does not put these in the additional section of SRV answers.
    pub fn address(mut self, domain: &str, ip: &str) -> Self {
        self.records.push(format!("--address=/{domain}/{ip}"));
        self
    }

    /// `--local=/DOMAIN/`: answer names under the domain from local data only, so unknown names
    /// get NXDOMAIN and known names without the asked type get NODATA. Without it dnsmasq
    /// (having no upstream server) answers REFUSED for anything it does not know.
    pub fn local_domain(mut self, domain: &str) -> Self {
        self.records.push(format!("--local=/{domain}/"));
        self
    }

    /// `--local-ttl=S`; dnsmasq answers local records with TTL 0 otherwise.
    pub fn local_ttl(mut self, seconds: u32) -> Self {
        self.records.push(format!("--local-ttl={seconds}"));
        self
    }

    /// Listens on this port instead of a free one picked at start.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn start(self) -> Dnsmasq {
        let binary = dnsmasq_binary();
        let dir = TempDir::new();
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = self.port.unwrap_or_else(free_port);
            match spawn(binary, &dir, port, &self.records) {
                Ok(process) => return Dnsmasq { process, port, dir },
                Err(failure) => failures.push(format!("port {port}: {failure}")),
            }
            if self.port.is_some() {
                // The port was asked for: it may still be held briefly by a dnsmasq just killed.
                thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("dnsmasq did not start:\n{}", failures.join("\n"));
    }
}

/// Starts dnsmasq and waits until it answers; on failure the process is gone again.
fn spawn(binary: &Path, dir: &TempDir, port: u16, records: &[String]) -> Result<Process, String> {
    let log = dir.path().join("log");
    let stderr = dir.path().join(format!("stderr-{port}"));
    let child = Command::new(binary)
        // --no-daemon stays in the foreground (so the PID is our child), does not change user
        // id and does not write the pid file; the pid file is named anyway so that nothing
        // under /run is touched should that ever change.
        .arg("--no-daemon")
        .arg(format!("--port={port}"))
        .arg("--listen-address=127.0.0.1")
        .arg("--bind-interfaces")
        .arg("--no-resolv")
        .arg("--no-hosts")
        .arg(format!("--pid-file={}", dir.path().join("pid").display()))
        .arg("--log-queries")
        .arg(format!("--log-facility={}", log.display()))
        .args(records)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // In --no-daemon mode dnsmasq logs to stderr as well: to a file, never an unread pipe.
        .stderr(fs::File::create(&stderr).map_err(|e| format!("create {}: {e}", stderr.display()))?)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    // From here on the process is killed if we return early or panic.
    let mut process = Process(Some(child));
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = process.try_wait()? {
            let output = fs::read_to_string(&stderr).unwrap_or_default();
            return Err(format!("dnsmasq exited with {status}: {}", output.trim()));
        }
        if probe(port, "ready.probe.invalid", Duration::from_millis(100)) {
            return Ok(process);
        }
        if Instant::now() > deadline {
            return Err(format!("no answer within {PATIENCE:?}"));
        }
    }
}

/// Our dnsmasq child, killed by its PID (never by name) and reaped when dropped.
struct Process(Option<Child>);

impl Process {
    fn is_running(&self) -> bool {
        self.0.is_some()
    }

    fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>, String> {
        match &mut self.0 {
            Some(child) => child.try_wait().map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running dnsmasq. Dropping it kills the process (by its PID, as our child) and removes
/// its files.
pub struct Dnsmasq {
    // Declared before `dir`: fields drop in order, so the process dies before its files go.
    process: Process,
    port: u16,
    dir: TempDir,
}

impl Dnsmasq {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The one-node zone most engine and diagnosis tests ask about: `n1@dyn.test` is the
    /// SRV record `n1.dyn.test` -> `t1.dyn.test:port`, whose A record is 127.0.0.5; other
    /// dyn.test names are NXDOMAIN.
    pub fn one_node(port: u16) -> Builder {
        Self::builder()
            .local_domain("dyn.test")
            .srv("n1.dyn.test", "t1.dyn.test", port, 0, 0)
            .host("t1.dyn.test", &["127.0.0.5"])
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server; its port then has nothing listening.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Stops this server and starts one with `builder`'s records on the same port (dnsmasq
    /// reads SRV records only at start). The new process appends to the same query log.
    pub fn restart_with(&mut self, builder: Builder) {
        self.stop();
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            match spawn(dnsmasq_binary(), &self.dir, self.port, &builder.records) {
                Ok(process) => {
                    self.process = process;
                    return;
                }
                Err(failure) => failures.push(failure),
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "dnsmasq did not restart on port {}:\n{}",
            self.port,
            failures.join("\n")
        );
    }

    /// The query log so far. Everything dnsmasq logged before this call returns is included
    /// (see `sync`).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// How many `TYPE` queries for `name` dnsmasq has received so far, e.g.
    /// `queries("SRV", "n1.dyn.test")`. Waits for dnsmasq to log everything it has received.
    pub fn queries(&self, record_type: &str, name: &str) -> usize {
        self.sync();
        let needle = format!("query[{record_type}] {name} from ");
        self.log()
            .lines()
            .filter(|line| line.contains(&needle))
            .count()
    }

    /// All queries logged so far, as `(type, name)`.
    pub fn all_queries(&self) -> Vec<(String, String)> {
        self.sync();
        self.log()
            .lines()
            .filter_map(|line| {
                let rest = &line[line.find("query[")? + "query[".len()..];
                let (record_type, rest) = rest.split_once("] ")?;
                let (name, _) = rest.split_once(" from ")?;
                (!name.ends_with(".probe.invalid"))
                    .then(|| (record_type.to_string(), name.to_string()))
            })
            .collect()
    }

    /// A barrier: dnsmasq handles queries one at a time, so once a query sent now shows up in
    /// the log, every query it received earlier has been logged too.
    pub fn sync(&self) {
        if !self.process.is_running() {
            return;
        }
        let name = format!("sync-{}.probe.invalid", unique());
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if probe(self.port, &name, Duration::from_millis(200))
                && self.log().contains(&format!("] {name} from "))
            {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "dnsmasq on port {} did not log query {name}:\n{}",
            self.port,
            self.log()
        );
    }
}

/// Sends one A query over UDP and reports whether any answer (even REFUSED) came back.
fn probe(port: u16, name: &str, wait: Duration) -> bool {
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    if socket.set_read_timeout(Some(wait)).is_err()
        || socket.connect((Ipv4Addr::LOCALHOST, port)).is_err()
    {
        return false;
    }
    let id = (unique() & 0xffff) as u16;
    if socket.send(&query_packet(id, name, 1)).is_err() {
        return false;
    }
    let mut buffer = [0u8; 1500];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match socket.recv(&mut buffer) {
            Ok(n) if n >= 12 && buffer[..2] == id.to_be_bytes() => return true,
            Ok(_) => continue,
            // Nothing listening yet (ICMP port unreachable) or no answer in time.
            Err(_) => {
                thread::sleep(Duration::from_millis(5));
                return false;
            }
        }
    }
    false
}

/// A DNS query message: header with RD set, one question of `qtype` class IN.
pub fn query_packet(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut packet = Vec::with_capacity(32 + name.len());
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&1u16.to_be_bytes());
    packet
}

/// A directory under the system temp dir, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "dynamic_srv_dns-dnsmasq-{}-{}-{nanos}",
            std::process::id(),
            unique()
        ));
        fs::create_dir_all(&path).expect("create a temp dir for dnsmasq");
        Self { path }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// This node's own port in the tests; SRV records use other ports so a mix-up shows.
pub const DIST_PORT: u16 = 4999;

/// A configuration asking only `nameserver`, as node `DIST_PORT`, with a 30 s minimum TTL
/// and 60 s of staleness allowed (longer than any test, so nothing expires unasked).
pub fn config(nameserver: SocketAddr, port_mode: PortMode, lookup_timeout: Duration) -> Config {
    Config {
        dist_port: Some(DIST_PORT),
        nameservers: vec![nameserver],
        port_mode,
        lookup_timeout,
        min_ttl: Duration::from_secs(30),
        max_stale: Duration::from_secs(60),
        srv_takes_whole_budget: false,
    }
}

/// One DNS-over-TCP message with its two-byte length prefix, as read.
pub async fn read_frame(stream: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut frame = vec![0u8; 2];
    stream.read_exact(&mut frame).await?;
    let len = u16::from_be_bytes([frame[0], frame[1]]) as usize;
    frame.resize(2 + len, 0);
    stream.read_exact(&mut frame[2..]).await?;
    Ok(frame)
}

/// A TCP relay in front of `upstream` that answers each query `delay` late, counting them.
pub async fn slow_tcp_relay(
    upstream: std::net::SocketAddr,
    delay: Duration,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let counted = queries.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                while let Ok(query) = read_frame(&mut client).await {
                    counted.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    server.write_all(&query).await.unwrap();
                    let reply = read_frame(&mut server).await.unwrap();
                    if client.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, queries)
}
