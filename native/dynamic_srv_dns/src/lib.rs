//! The DNS half of libcluster_dynamic_srv, free of any NIF code so `cargo test` covers it:
//! configuration from the environment, node name <-> DNS name mapping, SRV/A/AAAA lookups
//! through hickory-resolver, and the address cache the epmd module answers from.

pub mod cache;
pub mod config;
pub mod diagnosis;
pub mod engine;
pub mod error;
pub mod log_events;
pub mod membership;
pub mod naming;
pub mod node_naming;
pub mod outage;
pub mod resolver;
pub mod srv;
pub mod task;
pub mod topology;

pub use cache::{Cache, Cached, Family};
pub use config::{Config, PortMode};
pub use engine::Engine;
pub use error::{ConfigError, LookupError, NameError};
pub use naming::NodeName;
pub use node_naming::NodeNaming;
pub use topology::{Poll, Topology, TopologyConfig};
