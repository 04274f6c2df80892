//! `tracing` events turned into plain records for Elixir's `Logger`, without ever blocking
//! the thread that emits them.
//!
//! `Collector` is the process-wide `tracing` subscriber: it formats each event and offers it to
//! a bounded queue, dropping (and counting) when the queue is full. Whoever drains the queue
//! (the NIF's DNS thread) hands events to an `Outbox`, which delivers them to the current
//! receiver (the Elixir forwarder process) or keeps a bounded backlog while there is none:
//! distribution, and so the first lookups, start before the Logger application does.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Events kept while no forwarder is registered.
pub const BACKLOG: usize = 256;
/// Events in flight between the emitting thread and the draining task.
pub const QUEUE: usize = 1024;

/// Logger levels, as Elixir names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warning,
    Info,
    Debug,
}

impl Level {
    /// `TRACE` has no Logger counterpart and becomes `Debug`.
    pub fn from_tracing(level: &tracing::Level) -> Self {
        match *level {
            tracing::Level::ERROR => Self::Error,
            tracing::Level::WARN => Self::Warning,
            tracing::Level::INFO => Self::Info,
            _ => Self::Debug,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    pub level: Level,
    /// The Rust module that emitted it, e.g. `dynamic_srv_dns::engine`.
    pub target: String,
    pub message: String,
    /// The event's other fields (`node`, `reason`, ...), values as text.
    pub fields: Vec<(&'static str, String)>,
}

/// Counts shared by the collector and the drain side.
#[derive(Debug, Default)]
pub struct Counters {
    /// Dropped because the queue was full (the drain side fell behind).
    pub queue_full: AtomicU64,
}

/// The `tracing` subscriber. Our own crates' events pass at every level; other crates'
/// (hickory, tokio) only at ERROR, so their per-query chatter does not flood the log.
pub struct Collector {
    sender: mpsc::Sender<LogEvent>,
    counters: Arc<Counters>,
}

impl Collector {
    pub fn new(sender: mpsc::Sender<LogEvent>, counters: Arc<Counters>) -> Self {
        Self { sender, counters }
    }

    fn wanted(metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("dynamic_srv") || *metadata.level() == tracing::Level::ERROR
    }
}

impl Subscriber for Collector {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && Self::wanted(metadata)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        // Spans carry nothing we forward; every span shares one id.
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let log_event = format_event(event);
        if self.sender.try_send(log_event).is_err() {
            self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

pub fn format_event(event: &Event<'_>) -> LogEvent {
    let metadata = event.metadata();
    let mut visitor = FieldText::default();
    event.record(&mut visitor);
    LogEvent {
        level: Level::from_tracing(metadata.level()),
        target: metadata.target().to_string(),
        message: visitor.message,
        fields: visitor.fields,
    }
}

#[derive(Default)]
struct FieldText {
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl FieldText {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.fields.push((field.name(), value));
        }
    }
}

impl Visit for FieldText {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // A `%value` field and the message's format_args! both print as Display here.
        self.put(field, format!("{value:?}"));
    }
}

/// Delivers events to the current receiver, keeping a bounded backlog while there is none.
#[derive(Debug)]
pub struct Outbox<R> {
    receiver: Option<R>,
    backlog: VecDeque<LogEvent>,
    capacity: usize,
    /// Events lost: the oldest of the backlog once it was full.
    pub dropped: u64,
}

impl<R> Outbox<R> {
    pub fn new(capacity: usize) -> Self {
        Self {
            receiver: None,
            backlog: VecDeque::new(),
            capacity,
            dropped: 0,
        }
    }

    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    pub fn has_receiver(&self) -> bool {
        self.receiver.is_some()
    }

    /// A new receiver gets the backlog first, in order.
    pub fn set_receiver(&mut self, receiver: R, mut send: impl FnMut(&R, &LogEvent) -> bool) {
        self.receiver = Some(receiver);
        while let Some(event) = self.backlog.pop_front() {
            if !self.try_send(&event, &mut send) {
                self.backlog.push_front(event);
                return;
            }
        }
    }

    /// `send` returns false when the receiver is gone; the event is then kept for the next.
    pub fn deliver(&mut self, event: LogEvent, mut send: impl FnMut(&R, &LogEvent) -> bool) {
        if !self.try_send(&event, &mut send) {
            self.keep(event);
        }
    }

    fn try_send(&mut self, event: &LogEvent, send: &mut impl FnMut(&R, &LogEvent) -> bool) -> bool {
        match &self.receiver {
            Some(receiver) if send(receiver, event) => true,
            Some(_) => {
                self.receiver = None;
                false
            }
            None => false,
        }
    }

    fn keep(&mut self, event: LogEvent) {
        if self.backlog.len() >= self.capacity {
            self.backlog.pop_front();
            self.dropped += 1;
        }
        self.backlog.push_back(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> LogEvent {
        LogEvent {
            level: Level::Info,
            target: "dynamic_srv_dns::test".into(),
            message: format!("event {n}"),
            fields: vec![],
        }
    }

    #[test]
    fn levels_map_to_logger_levels_with_trace_as_debug() {
        assert_eq!(Level::from_tracing(&tracing::Level::ERROR), Level::Error);
        assert_eq!(Level::from_tracing(&tracing::Level::WARN), Level::Warning);
        assert_eq!(Level::from_tracing(&tracing::Level::INFO), Level::Info);
        assert_eq!(Level::from_tracing(&tracing::Level::DEBUG), Level::Debug);
        assert_eq!(Level::from_tracing(&tracing::Level::TRACE), Level::Debug);
        assert_eq!(Level::Warning.as_str(), "warning");
    }

    #[test]
    fn the_collector_formats_message_and_fields_and_filters_other_crates() {
        let (sender, mut receiver) = mpsc::channel(8);
        let counters = Arc::new(Counters::default());
        let collector = Collector::new(sender, counters.clone());
        tracing::subscriber::with_default(collector, || {
            let node = "n1@dyn.test";
            tracing::warn!(target: "dynamic_srv_dns::engine", node = %node, reason = "timeout", "lookup of {node} failed");
            tracing::trace!(target: "dynamic_srv_dns::engine", "fine detail");
            tracing::warn!(target: "hickory_proto::udp", "chatter");
            tracing::error!(target: "hickory_proto::udp", "broken");
        });
        let first = receiver.try_recv().unwrap();
        assert_eq!(first.level, Level::Warning);
        assert_eq!(first.target, "dynamic_srv_dns::engine");
        assert_eq!(first.message, "lookup of n1@dyn.test failed");
        assert_eq!(
            first.fields,
            vec![("node", "n1@dyn.test".into()), ("reason", "timeout".into())]
        );
        assert_eq!(receiver.try_recv().unwrap().level, Level::Debug);
        assert_eq!(receiver.try_recv().unwrap().message, "broken");
        assert!(receiver.try_recv().is_err());
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (sender, _receiver) = mpsc::channel(2);
        let counters = Arc::new(Counters::default());
        tracing::subscriber::with_default(Collector::new(sender, counters.clone()), || {
            for n in 0..5 {
                tracing::info!(target: "dynamic_srv_dns::x", "event {n}");
            }
        });
        assert_eq!(counters.queue_full.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn the_outbox_keeps_a_bounded_backlog_until_a_receiver_comes() {
        let mut outbox: Outbox<u32> = Outbox::new(3);
        let mut got = Vec::new();
        for n in 0..5 {
            outbox.deliver(event(n), |_, _| unreachable!("no receiver yet"));
        }
        assert_eq!((outbox.backlog_len(), outbox.dropped), (3, 2));
        outbox.set_receiver(7, |r, e| {
            got.push((*r, e.message.clone()));
            true
        });
        assert_eq!(
            got,
            vec![
                (7, "event 2".to_string()),
                (7, "event 3".to_string()),
                (7, "event 4".to_string())
            ]
        );
        assert_eq!(outbox.backlog_len(), 0);
    }

    #[test]
    fn a_receiver_that_is_gone_is_forgotten_and_events_wait_for_the_next() {
        let mut outbox: Outbox<u32> = Outbox::new(10);
        outbox.set_receiver(1, |_, _| true);
        outbox.deliver(event(0), |_, _| false);
        assert!(!outbox.has_receiver());
        assert_eq!(outbox.backlog_len(), 1);
        let mut got = Vec::new();
        outbox.set_receiver(2, |r, e| {
            got.push((*r, e.message.clone()));
            true
        });
        outbox.deliver(event(1), |r, e| {
            got.push((*r, e.message.clone()));
            true
        });
        assert_eq!(
            got,
            vec![(2, "event 0".to_string()), (2, "event 1".to_string())]
        );
    }
}
