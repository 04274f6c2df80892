//! Glue from `tracing` to Elixir's Logger: installs the `Collector` as the global subscriber
//! and drains its queue on the DNS thread, sending each event to the forwarder process
//! (`DynamicSrv.LogForwarder`) as `{:dynamic_srv_log, level, message, metadata}`.
//!
//! Emitting never blocks: the collector only `try_send`s. Sending happens on the DNS thread,
//! never on a scheduler (where `send_and_clear` is not allowed), so events emitted inside a
//! NIF call are fine too.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use dynamic_srv_dns::log_events::{Collector, Counters, LogEvent, Outbox, BACKLOG, QUEUE};
use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, Term};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, Notify};

mod atoms {
    rustler::atoms! { dynamic_srv_log, rust_target }
}

#[derive(Default)]
struct Shared {
    counters: Arc<Counters>,
    /// A forwarder registered by `set_forwarder`, taken over by the drain task.
    new_forwarder: Mutex<Option<LocalPid>>,
    wake: Notify,
    backlog_dropped: AtomicU64,
    backlog: AtomicU64,
    has_forwarder: AtomicBool,
}

fn shared() -> &'static Arc<Shared> {
    static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
    SHARED.get_or_init(Default::default)
}

/// Installs the subscriber and starts the drain task, once per VM.
pub fn install(runtime: &Runtime) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let shared = shared().clone();
        let collector = Collector::new(sender, shared.counters.clone());
        // Fails only if something else in this VM installed a subscriber first; then that
        // one gets the events, and the drain task simply never receives any.
        let _ = tracing::subscriber::set_global_default(collector);
        runtime.spawn(drain(receiver, shared));
    });
}

/// Makes `pid` the receiver of every event from now on, backlog first.
pub fn set_forwarder(pid: LocalPid) {
    let shared = shared();
    *shared
        .new_forwarder
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(pid);
    shared.wake.notify_one();
}

pub struct Stats {
    pub queue_full: u64,
    pub backlog_dropped: u64,
    pub backlog: u64,
    pub forwarder: bool,
}

pub fn stats() -> Stats {
    let shared = shared();
    Stats {
        queue_full: shared.counters.queue_full.load(Ordering::Relaxed),
        backlog_dropped: shared.backlog_dropped.load(Ordering::Relaxed),
        backlog: shared.backlog.load(Ordering::Relaxed),
        forwarder: shared.has_forwarder.load(Ordering::Relaxed),
    }
}

async fn drain(mut receiver: mpsc::Receiver<LogEvent>, shared: Arc<Shared>) {
    let mut outbox: Outbox<LocalPid> = Outbox::new(BACKLOG);
    let mut env = OwnedEnv::new();
    loop {
        let event = tokio::select! {
            event = receiver.recv() => match event {
                Some(event) => Some(event),
                None => return,
            },
            () = shared.wake.notified() => None,
        };
        let new_forwarder = shared
            .new_forwarder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(pid) = new_forwarder {
            outbox.set_receiver(pid, |pid, event| send(&mut env, pid, event));
        }
        if let Some(event) = event {
            outbox.deliver(event, |pid, event| send(&mut env, pid, event));
        }
        shared
            .backlog_dropped
            .store(outbox.dropped, Ordering::Relaxed);
        shared
            .backlog
            .store(outbox.backlog_len() as u64, Ordering::Relaxed);
        shared
            .has_forwarder
            .store(outbox.has_receiver(), Ordering::Relaxed);
    }
}

fn send(env: &mut OwnedEnv, pid: &LocalPid, event: &LogEvent) -> bool {
    env.send_and_clear(pid, |env| encode(env, event)).is_ok()
}

fn encode<'a>(env: Env<'a>, event: &LogEvent) -> Term<'a> {
    let level = Atom::from_str(env, event.level.as_str())
        .map_or_else(|_| atoms::dynamic_srv_log().encode(env), |a| a.encode(env));
    let mut metadata: Vec<Term<'a>> =
        vec![(atoms::rust_target(), event.target.as_str()).encode(env)];
    // Field names are identifiers in our own code (and hickory's, at ERROR): a small, fixed
    // set of atoms, never data from the network.
    for (name, value) in &event.fields {
        if let Ok(key) = Atom::from_str(env, name) {
            metadata.push((key, value.as_str()).encode(env));
        }
    }
    (
        atoms::dynamic_srv_log(),
        level,
        event.message.as_str(),
        metadata,
    )
        .encode(env)
}
