//! rustler glue: terms in, terms out. All DNS, naming and caching logic lives in the
//! `dynamic_srv_dns` crate; this file only converts and schedules.
//!
//! Lookups run on one tokio worker thread owned by the library, never on a BEAM scheduler,
//! and report back by message. Cache hits are answered synchronously.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dynamic_srv_dns::config::{parse_nameservers, settings, Source, NAMESERVERS, VARIABLES};
use dynamic_srv_dns::diagnosis::{Diagnoser, NodeCheck, Probe};
use dynamic_srv_dns::resolver::{SrvRecord, Transport};
use dynamic_srv_dns::task::catch_panic;
use dynamic_srv_dns::{
    Cache, Cached, Config, Engine, Family, LookupError, NodeNaming, Poll, PortMode, Topology,
    TopologyConfig,
};
use rustler::types::tuple::{get_tuple, make_tuple};
use rustler::{
    Atom, Encoder, Env, Error, LocalPid, NifMap, NifResult, OwnedEnv, ResourceArc, Term,
};
use tokio::runtime::Runtime;

mod log;

mod atoms {
    rustler::atoms! {
        ok, error, miss, inet, inet6, noport, runtime_unavailable, internal_error,
        service_prefix, basename_port, basename, basename_ip, basename_port_ip,
        members, joined, left, outage_started, outage_ended, over_limit, unmapped, records,
        partial_warning, failed, queries, absent, leaving, reason, servers, udp, tcp,
        env, default, srv, a, aaaa, error_level = "error", warning, info, debug,
    }
}

struct EngineResource(Arc<Engine>);

#[rustler::resource_impl]
impl rustler::Resource for EngineResource {}

/// A topology and its turn to poll: one poll at a time, in the order they were asked for, so a
/// slow poll the Elixir side gave up on can never apply its older answer over a newer one.
struct TopologyResource(Arc<Topology>, Arc<tokio::sync::Mutex<()>>);

#[rustler::resource_impl]
impl rustler::Resource for TopologyResource {}

/// One worker thread is plenty: lookups are I/O bound and few.
fn runtime() -> Result<&'static Runtime, String> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .max_blocking_threads(1)
                .thread_name("dynamic_srv_dns")
                .enable_all()
                .build()
                .inspect(log::install)
                .map_err(|e| format!("cannot start the DNS runtime thread: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// One cache per VM, shared by every engine: what the membership poller learns is what the
/// epmd module answers from.
fn shared_cache() -> Arc<Cache> {
    static CACHE: OnceLock<Arc<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| Arc::new(Cache::default())).clone()
}

/// `env` holds the environment variables by name; absent keys are unset variables.
/// Returns `{:ok, engine}` or `{:error, message}`, the message naming the bad variable.
#[rustler::nif]
fn configure(env: Env<'_>, vars: HashMap<String, String>) -> Term<'_> {
    let build = || -> Result<ResourceArc<EngineResource>, String> {
        let config = Config::from_env(|var| vars.get(var).cloned()).map_err(|e| e.to_string())?;
        let runtime = runtime()?;
        let _context = runtime.enter();
        let engine = Engine::new(config, shared_cache()).map_err(|e| e.to_string())?;
        Ok(ResourceArc::new(EngineResource(Arc::new(engine))))
    };
    // rustler encodes a Result as {:ok, value} | {:error, message}.
    build().encode(env)
}

#[rustler::nif]
fn variables() -> Vec<&'static str> {
    VARIABLES.to_vec()
}

#[rustler::nif]
fn lookup_timeout_ms(engine: ResourceArc<EngineResource>) -> u64 {
    engine.0.config().lookup_timeout.as_millis() as u64
}

#[rustler::nif]
fn listen_port(engine: ResourceArc<EngineResource>, node: String) -> Result<u16, String> {
    engine.0.listen_port(&node).map_err(|e| e.to_string())
}

/// `{:ok, ip, port}`, `:miss`, or `{:error, reason, message}`; never touches the network.
/// An expired entry served during a DNS outage is refreshed in the background.
#[rustler::nif]
fn lookup_cached<'a>(
    env: Env<'a>,
    engine: ResourceArc<EngineResource>,
    node: String,
    family: Atom,
) -> NifResult<Term<'a>> {
    let family = decode_family(family)?;
    Ok(match engine.0.cached(&node, family) {
        Ok(Cached::Fresh(endpoint)) => ok_endpoint(env, endpoint),
        Ok(Cached::StaleDuringOutage(endpoint)) => {
            if let (true, Ok(runtime)) = (engine.0.claim_refresh(&node, family), runtime()) {
                let engine = engine.0.clone();
                runtime.spawn(async move {
                    // The outcome lands in the cache; a failure just keeps the stale entry.
                    let _ = engine.resolve(&node, family).await;
                });
            }
            ok_endpoint(env, endpoint)
        }
        Ok(Cached::Miss) => atoms::miss().encode(env),
        Err(error) => lookup_error(env, &error),
    })
}

/// Starts a lookup and returns at once; `pid` later receives `{tag, result}` where result is
/// as for `lookup_cached/3`, never `:miss`.
#[rustler::nif]
fn lookup<'a>(
    env: Env<'a>,
    engine: ResourceArc<EngineResource>,
    node: String,
    family: Atom,
    pid: LocalPid,
    tag: Term<'a>,
) -> NifResult<Term<'a>> {
    let family = decode_family(family)?;
    let engine = engine.0.clone();
    // The caller waits the lookup timeout plus 2 s; any reply later than timeout + 1 s, a
    // panic's included, is dropped, so it never lands in the mailbox of a caller that gave up.
    let deliver_until = Instant::now() + engine.config().lookup_timeout + Duration::from_secs(1);
    let work = async move {
        let result = catch_panic(async move { engine.resolve(&node, family).await }).await;
        (Instant::now() <= deliver_until).then_some(result)
    };
    Ok(reply_later(
        env,
        pid,
        tag,
        work,
        |env, result| match result {
            Ok(Ok(endpoint)) => ok_endpoint(env, endpoint),
            Ok(Err(error)) => lookup_error(env, &error),
            Err(panic) => internal_error(env, panic),
        },
        internal_error,
    ))
}

/// The port of node `name` at `ip`, or `:noport`.
#[rustler::nif]
fn port_please<'a>(
    env: Env<'a>,
    engine: ResourceArc<EngineResource>,
    name: String,
    ip: Term<'a>,
) -> NifResult<Term<'a>> {
    let ip = decode_ip(ip)?;
    Ok(match engine.0.port_please(&name, ip) {
        Some(port) => (atoms::ok(), port).encode(env),
        None => atoms::noport().encode(env),
    })
}

type TopologyOptions = (
    String,
    Atom,
    Option<String>,
    Atom,
    usize,
    Option<String>,
    (Atom, u64, u64),
);

/// `options` is `{service, naming, basename | nil, family, max_nodes, nameservers | nil,
/// {:tcp | :udp, removal_delay_ms, polling_interval_ms}}`; `vars` the environment, for the
/// resolver settings when `nameservers` is nil.
#[rustler::nif]
fn topology_new<'a>(
    env: Env<'a>,
    vars: HashMap<String, String>,
    options: TopologyOptions,
) -> NifResult<Term<'a>> {
    let (
        service,
        naming,
        basename,
        family,
        max_nodes,
        nameservers,
        (transport, removal_delay, polling_interval),
    ) = options;
    let family = decode_family(family)?;
    let transport = if transport == atoms::tcp() {
        Transport::Tcp
    } else if transport == atoms::udp() {
        Transport::Udp
    } else {
        return Err(Error::BadArg);
    };
    let naming = decode_naming((naming, basename))?;
    let build = || -> Result<ResourceArc<TopologyResource>, String> {
        let mut config = Config::discovery_from_env(|var| vars.get(var).cloned())
            .map_err(|e| e.to_string())?
            .for_polls(Duration::from_millis(polling_interval));
        if let Some(list) = &nameservers {
            config.nameservers = parse_nameservers(NAMESERVERS, list)
                .map_err(|e| e.to_string().replacen(NAMESERVERS, "nameservers", 1))?;
        }
        // What the topology caches, the epmd module reads: it must hold the port the epmd
        // module would dial, which its port mode decides. Without a usable epmd
        // configuration (a node on the stock epmd) nobody would read it: cache no port.
        match Config::from_env(|var| vars.get(var).cloned()) {
            Ok(epmd) => (config.port_mode, config.dist_port) = (epmd.port_mode, epmd.dist_port),
            Err(_) => (config.port_mode, config.dist_port) = (PortMode::Static, None),
        }
        let runtime = runtime()?;
        let _context = runtime.enter();
        let engine =
            Engine::with_transport(config, shared_cache(), transport).map_err(|e| e.to_string())?;
        let topology_config = TopologyConfig {
            service,
            naming,
            family,
            max_nodes,
            removal_delay: Duration::from_millis(removal_delay),
        };
        let topology = Topology::new(topology_config, Arc::new(engine))?;
        Ok(ResourceArc::new(TopologyResource(
            Arc::new(topology),
            Arc::default(),
        )))
    };
    Ok(build().encode(env))
}

/// Polls DNS off-scheduler; `pid` later receives `{tag, poll}` (see `encode_poll`).
#[rustler::nif]
fn topology_poll<'a>(
    env: Env<'a>,
    topology: ResourceArc<TopologyResource>,
    pid: LocalPid,
    tag: Term<'a>,
) -> NifResult<Term<'a>> {
    let turn = topology.1.clone();
    let topology = topology.0.clone();
    let failed = topology.clone();
    let work = async move {
        let _turn = turn.lock().await;
        Some(topology.poll().await)
    };
    Ok(reply_later(
        env,
        pid,
        tag,
        work,
        |env, poll| encode_poll(env, &poll),
        // A poll that died is a failed poll: it keeps the membership, like a DNS outage.
        move |env, message| encode_poll(env, &failed.apply_failure(&message)),
    ))
}

/// Runs `work` on the DNS thread, never on a scheduler, then sends `{tag, encode(output)}` to
/// `pid`, or nothing if `work` gives nothing. If `work` panics (a bug), the runtime thread
/// survives and `pid` gets `{tag, on_panic(message)}` instead of waiting for its timeout.
/// Returns `:ok`, or `{:error, :runtime_unavailable}` if the thread could not start.
fn reply_later<'a, T: Send + 'static>(
    env: Env<'a>,
    pid: LocalPid,
    tag: Term<'a>,
    work: impl Future<Output = Option<T>> + Send + 'static,
    encode: impl for<'b> FnOnce(Env<'b>, T) -> Term<'b> + Send + 'static,
    on_panic: impl for<'b> FnOnce(Env<'b>, String) -> Term<'b> + Send + 'static,
) -> Term<'a> {
    let Ok(runtime) = runtime() else {
        return (atoms::error(), atoms::runtime_unavailable()).encode(env);
    };
    let mut reply = OwnedEnv::new();
    let tag = reply.save(tag);
    runtime.spawn(async move {
        // The caller may be gone; nothing to do about it here.
        let _ = match catch_panic(work).await {
            Ok(None) => return,
            Ok(Some(output)) => {
                reply.send_and_clear(&pid, |env| (tag.load(env), encode(env, output)).encode(env))
            }
            Err(message) => reply.send_and_clear(&pid, |env| {
                (tag.load(env), on_panic(env, message)).encode(env)
            }),
        };
    });
    atoms::ok().encode(env)
}

/// The reply to a caller whose task panicked: `{:error, :internal_error, message}`.
fn internal_error(env: Env<'_>, message: String) -> Term<'_> {
    (atoms::error(), atoms::internal_error(), message).encode(env)
}

/// Applies records from an injected resolver: `[{priority, weight, port, target}]`.
#[rustler::nif]
fn topology_apply<'a>(
    env: Env<'a>,
    topology: ResourceArc<TopologyResource>,
    records: Vec<(Term<'a>, Term<'a>, Term<'a>, String)>,
) -> NifResult<Term<'a>> {
    let records = records
        .into_iter()
        .map(|(priority, weight, port, target)| {
            Ok(SrvRecord {
                priority: decode_exact(priority)?,
                weight: decode_exact(weight)?,
                port: decode_exact(port)?,
                target,
                ttl: 0,
            })
        })
        .collect::<NifResult<Vec<SrvRecord>>>()?;
    Ok(encode_poll(env, &topology.0.apply_records(&records)))
}

/// rustler's u8 and u16 decoders truncate (256 decodes as 0, port 70000 as 4464); this one
/// refuses an integer that does not fit.
fn decode_exact<T: TryFrom<u32>>(term: Term) -> NifResult<T> {
    T::try_from(term.decode::<u32>()?).map_err(|_| Error::BadArg)
}

#[rustler::nif]
fn topology_fail(
    env: Env<'_>,
    topology: ResourceArc<TopologyResource>,
    reason: String,
) -> Term<'_> {
    encode_poll(env, &topology.0.apply_failure(&reason))
}

/// Takes `nodes` as members before any answer (libcluster's state `meta`); returns the
/// members after.
#[rustler::nif]
fn topology_seed(topology: ResourceArc<TopologyResource>, nodes: Vec<String>) -> Vec<String> {
    topology.0.seed(nodes);
    topology.0.members()
}

#[rustler::nif]
fn topology_members(topology: ResourceArc<TopologyResource>) -> Vec<String> {
    topology.0.members()
}

// --- Logging ------------------------------------------------------------------------------

/// Every `tracing` event goes to `pid` from now on (events from before are delivered first).
#[rustler::nif]
fn set_log_forwarder(pid: LocalPid) -> Atom {
    log::set_forwarder(pid);
    atoms::ok()
}

#[derive(NifMap)]
struct LogStats {
    /// Events dropped because the DNS thread fell behind.
    queue_full: u64,
    /// Events dropped from the backlog kept while no forwarder was registered.
    backlog_dropped: u64,
    backlog: u64,
    forwarder: bool,
}

#[rustler::nif]
fn log_stats() -> LogStats {
    let stats = log::stats();
    LogStats {
        queue_full: stats.queue_full,
        backlog_dropped: stats.backlog_dropped,
        backlog: stats.backlog,
        forwarder: stats.forwarder,
    }
}

/// Emits one event through the same path as every other; for checking the log setup.
#[rustler::nif]
fn log_probe(level: Atom, message: String) -> NifResult<Atom> {
    if level == atoms::error_level() {
        tracing::error!(probe = true, "{message}");
    } else if level == atoms::warning() {
        tracing::warn!(probe = true, "{message}");
    } else if level == atoms::info() {
        tracing::info!(probe = true, "{message}");
    } else if level == atoms::debug() {
        tracing::debug!(probe = true, "{message}");
    } else {
        tracing::trace!(probe = true, "{message}");
    }
    Ok(atoms::ok())
}

// --- Diagnosis ----------------------------------------------------------------------------

#[derive(NifMap)]
struct SettingView {
    variable: String,
    raw: Option<String>,
    source: Atom,
    value: Option<String>,
    error: Option<String>,
}

/// Each variable: its raw value, whether it came from the environment or the default, and
/// its effective value or why it is invalid.
#[rustler::nif]
fn config_settings(vars: HashMap<String, String>) -> Vec<SettingView> {
    settings(|var| vars.get(var).cloned())
        .into_iter()
        .map(|setting| SettingView {
            variable: setting.var.to_string(),
            source: match setting.source() {
                Source::Env => atoms::env(),
                Source::Default => atoms::default(),
            },
            raw: setting.raw,
            value: setting.effective.clone().ok(),
            error: setting.effective.err(),
        })
        .collect()
}

#[derive(NifMap)]
struct EntryView {
    node: String,
    family: Atom,
    endpoint: String,
    state: String,
    fresh_for_ms: Option<u64>,
    stale_for_ms: Option<u64>,
    failed_ago_ms: Option<u64>,
}

#[derive(NifMap)]
struct SnapshotView {
    entries: Vec<EntryView>,
    total: usize,
    dns_failed_ago_ms: Option<u64>,
}

/// Up to `limit` entries of the shared address cache, sorted by node name.
#[rustler::nif]
fn cache_snapshot(limit: usize) -> SnapshotView {
    let millis = |d: Duration| d.as_millis() as u64;
    let snapshot = shared_cache().snapshot(limit, Instant::now());
    SnapshotView {
        entries: snapshot
            .entries
            .into_iter()
            .map(|entry| EntryView {
                state: entry.state().to_string(),
                node: entry.node,
                family: match entry.family {
                    Family::Inet => atoms::inet(),
                    Family::Inet6 => atoms::inet6(),
                },
                endpoint: entry.endpoint.to_string(),
                fresh_for_ms: entry.fresh_for.map(millis),
                stale_for_ms: entry.stale_for.map(millis),
                failed_ago_ms: entry.failed_ago.map(millis),
            })
            .collect(),
        total: snapshot.total,
        dns_failed_ago_ms: snapshot.dns_failed_ago.map(millis),
    }
}

struct DiagnoserResource(Arc<Diagnoser>);

#[rustler::resource_impl]
impl rustler::Resource for DiagnoserResource {}

/// A resolver configured from `vars` (with `nameservers` instead of DYNAMIC_SRV_NAMESERVERS
/// when given) and its own empty cache. `own_node` is this node's name, so a release helper
/// is diagnosed as one.
#[rustler::nif]
fn diagnoser_new(
    env: Env<'_>,
    vars: HashMap<String, String>,
    nameservers: Option<String>,
    own_node: Option<String>,
) -> Term<'_> {
    let build = || -> Result<ResourceArc<DiagnoserResource>, String> {
        let get = |var: &str| match (&nameservers, var) {
            (Some(list), NAMESERVERS) => Some(list.clone()),
            _ => vars.get(var).cloned(),
        };
        let runtime = runtime()?;
        let _context = runtime.enter();
        let diagnoser = Diagnoser::new(get).map_err(|e| e.to_string())?;
        if let Some(node) = &own_node {
            diagnoser.note_own_name(node);
        }
        Ok(ResourceArc::new(DiagnoserResource(Arc::new(diagnoser))))
    };
    build().encode(env)
}

#[derive(NifMap)]
struct DiagnoserInfo {
    nameservers: String,
    port_mode: String,
    dist_port: Option<u16>,
    lookup_timeout_ms: u64,
}

#[rustler::nif]
fn diagnoser_info(diagnoser: ResourceArc<DiagnoserResource>) -> DiagnoserInfo {
    let config = diagnoser.0.config();
    DiagnoserInfo {
        nameservers: diagnoser.0.servers_text(),
        port_mode: config.port_mode.to_string(),
        dist_port: config.dist_port,
        lookup_timeout_ms: config.lookup_timeout.as_millis() as u64,
    }
}

#[derive(NifMap)]
struct FailureView {
    reason: String,
    message: String,
    fix: String,
}

#[derive(NifMap)]
struct ProbeView {
    name: String,
    record_type: String,
    elapsed_us: u64,
    answers: Vec<String>,
    failure: Option<FailureView>,
    problem: Option<ProblemView>,
    udp_only: bool,
}

impl From<Probe> for ProbeView {
    fn from(probe: Probe) -> Self {
        let (answers, failure) = match probe.outcome {
            Ok(answers) => (answers, None),
            Err(failure) => (
                Vec::new(),
                Some(FailureView {
                    reason: failure.reason.to_string(),
                    message: failure.message,
                    fix: failure.fix,
                }),
            ),
        };
        Self {
            name: probe.name,
            record_type: probe.record_type.to_string(),
            elapsed_us: probe.elapsed.as_micros() as u64,
            answers,
            failure,
            problem: probe.problem.map(|p| ProblemView {
                what: p.what,
                fix: p.fix,
            }),
            udp_only: probe.udp_only,
        }
    }
}

#[derive(NifMap)]
struct ProblemView {
    what: String,
    fix: String,
}

#[derive(NifMap)]
struct NodeCheckView {
    node: String,
    how: String,
    probes: Vec<ProbeView>,
    endpoint: Option<String>,
    problems: Vec<ProblemView>,
}

impl From<NodeCheck> for NodeCheckView {
    fn from(check: NodeCheck) -> Self {
        Self {
            node: check.node,
            how: check.how,
            probes: check.probes.into_iter().map(ProbeView::from).collect(),
            endpoint: check.endpoint.map(|e| e.to_string()),
            problems: check
                .problems
                .into_iter()
                .map(|p| ProblemView {
                    what: p.what,
                    fix: p.fix,
                })
                .collect(),
        }
    }
}

/// Looks `node` up as `address_please` would, off-scheduler; `pid` later receives
/// `{tag, check}`. `listen_port` (this node's own) also checks the advertised port.
#[rustler::nif]
fn diagnose_node<'a>(
    env: Env<'a>,
    diagnoser: ResourceArc<DiagnoserResource>,
    node: String,
    family: Atom,
    listen_port: Option<u16>,
    pid: LocalPid,
    tag: Term<'a>,
) -> NifResult<Term<'a>> {
    let family = decode_family(family)?;
    let diagnoser = diagnoser.0.clone();
    let work = async move {
        Some(NodeCheckView::from(
            diagnoser.check_node(&node, family, listen_port).await,
        ))
    };
    Ok(reply_later(
        env,
        pid,
        tag,
        work,
        |env, check| check.encode(env),
        internal_error,
    ))
}

/// One timed query (`:srv`, `:a` or `:aaaa`) off-scheduler; `pid` later receives `{tag, probe}`.
#[rustler::nif]
fn diagnose_query<'a>(
    env: Env<'a>,
    diagnoser: ResourceArc<DiagnoserResource>,
    kind: Atom,
    name: String,
    pid: LocalPid,
    tag: Term<'a>,
) -> NifResult<Term<'a>> {
    let family = if kind == atoms::srv() {
        None
    } else if kind == atoms::a() {
        Some(Family::Inet)
    } else if kind == atoms::aaaa() {
        Some(Family::Inet6)
    } else {
        return Err(Error::BadArg);
    };
    let diagnoser = diagnoser.0.clone();
    let work = async move {
        let probe = match family {
            None => diagnoser.probe_service(&name).await,
            Some(family) => diagnoser.probe_addresses(&name, family).await.0,
        };
        Some(ProbeView::from(probe))
    };
    Ok(reply_later(
        env,
        pid,
        tag,
        work,
        |env, probe| probe.encode(env),
        internal_error,
    ))
}

#[derive(NifMap)]
struct ServiceMembersView {
    probe: ProbeView,
    /// `nil` when the lookup failed.
    members: Option<Vec<String>>,
}

/// What a poll of `service` would list now, named as `naming` (`{kind, basename | nil}`)
/// names nodes, off-scheduler; `pid` later receives `{tag, %{probe: _, members: _}}`.
#[rustler::nif]
fn diagnose_members<'a>(
    env: Env<'a>,
    diagnoser: ResourceArc<DiagnoserResource>,
    service: String,
    naming: (Atom, Option<String>),
    family: Atom,
    pid: LocalPid,
    tag: Term<'a>,
) -> NifResult<Term<'a>> {
    let family = decode_family(family)?;
    let naming = decode_naming(naming)?;
    let diagnoser = diagnoser.0.clone();
    let work = async move {
        let (probe, members) = diagnoser.service_members(&service, &naming, family).await;
        Some(ServiceMembersView {
            probe: ProbeView::from(probe),
            members,
        })
    };
    Ok(reply_later(
        env,
        pid,
        tag,
        work,
        |env, view| view.encode(env),
        internal_error,
    ))
}

fn decode_naming((kind, basename): (Atom, Option<String>)) -> NifResult<NodeNaming> {
    let base = || basename.clone().unwrap_or_default();
    Ok(if kind == atoms::service_prefix() {
        NodeNaming::ServicePrefix
    } else if kind == atoms::basename_port() {
        NodeNaming::BasenamePort(base())
    } else if kind == atoms::basename() {
        NodeNaming::Basename(base())
    } else if kind == atoms::basename_ip() {
        NodeNaming::BasenameIp(base())
    } else if kind == atoms::basename_port_ip() {
        NodeNaming::BasenamePortIp(base())
    } else {
        return Err(Error::BadArg);
    })
}

fn encode_poll<'a>(env: Env<'a>, poll: &Poll) -> Term<'a> {
    let change = &poll.change;
    let pairs = [
        (atoms::members(), change.members.encode(env)),
        (atoms::joined(), change.joined.encode(env)),
        (atoms::left(), change.left.encode(env)),
        (atoms::leaving(), change.leaving.encode(env)),
        (atoms::outage_started(), change.outage_started.encode(env)),
        (atoms::outage_ended(), change.outage_ended.encode(env)),
        (atoms::over_limit(), change.over_limit.encode(env)),
        (atoms::unmapped(), poll.unmapped.encode(env)),
        (atoms::records(), poll.records.encode(env)),
        (atoms::partial_warning(), poll.partial_warning.encode(env)),
        (atoms::failed(), poll.failed.encode(env)),
        (atoms::queries(), poll.queries.encode(env)),
        (
            atoms::absent(),
            match &poll.absent {
                None => rustler::types::atom::nil().encode(env),
                Some(absent) => Term::map_from_pairs(
                    env,
                    &[
                        (atoms::reason(), absent.reason.encode(env)),
                        (atoms::servers(), absent.servers.encode(env)),
                    ],
                )
                .unwrap_or_else(|_| atoms::error().encode(env)),
            },
        ),
    ];
    Term::map_from_pairs(env, &pairs).unwrap_or_else(|_| atoms::error().encode(env))
}

fn decode_family(family: Atom) -> NifResult<Family> {
    if family == atoms::inet() {
        Ok(Family::Inet)
    } else if family == atoms::inet6() {
        Ok(Family::Inet6)
    } else {
        Err(Error::BadArg)
    }
}

fn ok_endpoint(env: Env<'_>, endpoint: SocketAddr) -> Term<'_> {
    (atoms::ok(), encode_ip(env, endpoint.ip()), endpoint.port()).encode(env)
}

fn lookup_error<'a>(env: Env<'a>, error: &LookupError) -> Term<'a> {
    let reason = Atom::from_str(env, error.reason())
        .map_or_else(|_| atoms::error().encode(env), |a| a.encode(env));
    (atoms::error(), reason, error.to_string()).encode(env)
}

fn encode_ip(env: Env<'_>, ip: IpAddr) -> Term<'_> {
    let parts: Vec<Term> = match ip {
        IpAddr::V4(v4) => v4.octets().iter().map(|o| o.encode(env)).collect(),
        IpAddr::V6(v6) => v6.segments().iter().map(|s| s.encode(env)).collect(),
    };
    make_tuple(env, &parts)
}

fn decode_ip(term: Term) -> NifResult<IpAddr> {
    let parts = get_tuple(term)?;
    match parts.len() {
        4 => {
            let octets: Vec<u8> = parts
                .iter()
                .map(|t| decode_exact(*t))
                .collect::<NifResult<_>>()?;
            Ok(IpAddr::V4(Ipv4Addr::new(
                octets[0], octets[1], octets[2], octets[3],
            )))
        }
        8 => {
            let s: Vec<u16> = parts
                .iter()
                .map(|t| decode_exact(*t))
                .collect::<NifResult<_>>()?;
            Ok(IpAddr::V6(Ipv6Addr::new(
                s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
            )))
        }
        _ => Err(Error::BadArg),
    }
}

/// Test-only (feature `panic-probe`, never in the library `mix compile` builds): panics on
/// purpose in the NIF call itself (`place` = `:call`) or in a task on the DNS thread (any
/// other atom), which then must still reply to `pid` with `{tag, {:error, :internal_error, _}}`.
#[cfg(feature = "panic-probe")]
#[rustler::nif]
fn panic_probe<'a>(env: Env<'a>, place: Atom, pid: LocalPid, tag: Term<'a>) -> NifResult<Term<'a>> {
    if place.to_term(env).atom_to_string()? == "call" {
        panic!("panic probe: in the NIF call");
    }
    let work = async {
        let fail = true;
        if fail {
            panic!("panic probe: in the DNS task");
        }
        Some(())
    };
    Ok(reply_later(
        env,
        pid,
        tag,
        work,
        |env, ()| atoms::ok().encode(env),
        internal_error,
    ))
}

/// Starts the DNS thread and the log subscriber as soon as the library loads, so events
/// from the very first lookup reach the backlog.
fn on_load(_env: Env, _info: Term) -> bool {
    let _ = runtime();
    true
}

rustler::init!("Elixir.DynamicSrv.Native", load = on_load);
