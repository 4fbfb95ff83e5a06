//! Warren's runtime: pipelines as independent worker processes joined by RabbitMQ, and no
//! message ever lost.
//!
//! # Layout
//!
//! - [`artifacts`]: the claim-check store (a directory, or `s3://` through `object_store`).
//! - [`config`]: file, then `WARREN_*` environment, then flags; passwords redacted.
//! - [`names`]: every exchange and queue name, from the namespace.
//! - [`envelope`]: the MessagePack envelope, its AMQP properties and headers, typed decode errors.
//! - [`broker`]: one connection per process, pooled confirm-mode publishing channels.
//! - [`topology`]: idempotent declarations (quorum step queues, dead letters, delay queues,
//!   the events stream) and clear conflicts.
//! - [`worker`]: consume, handle, confirmed hand-off, retry, dead-letter, graceful stop, reconnect.
//! - [`events`]: job events (`event`), their wire format (`wire`), the batching sink (`sink`),
//!   reading the stream (`read`) and operator actions (`operator`).
//! - [`client`]: submitting jobs with their routing slip, and RPC calls.
//! - [`compat`]: the compatibility policy: the protocol version, old forms still accepted, what
//!   a worker announces it reads and writes.
//! - [`registry`]: step descriptors and live workers, announced on `{ns}.registry`.
//! - [`exec`]: steps in any language: child processes speaking a framed protocol, with every
//!   guarantee of the runtime.
//! - [`error`]: [`StepError`] (retryable or permanent) and [`DeadKind`].
//!
//! # The flow of one message
//!
//! A worker of step `s` consumes `{ns}.step.s`. For each delivery it decodes the envelope (an
//! undecodable body is dead-lettered), drops a message id it completed already, runs the handler,
//! publishes each output to the next step on the routing slip and waits for the broker's
//! confirms, and only then acks its input. A retryable error republishes the input to a delay
//! queue with `attempt + 1`; a permanent error, exhausted attempts or a crash loop send it, byte
//! for byte, to `{ns}.dead.s` with headers saying why.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod artifacts;
pub mod broker;
#[cfg(feature = "cli")]
pub mod cli;
pub mod client;
pub mod compat;
pub mod config;
pub mod control;
pub mod envelope;
pub mod error;
pub mod events;
pub mod exec;
pub mod names;
pub mod registry;
pub mod shutdown;
#[cfg(feature = "cli")]
pub mod telemetry;
pub mod topology;
pub mod worker;

pub use broker::{Broker, BrokerError, Publisher};
pub use client::{CallError, Client, JobSpec, SubmitError};
pub use config::{Config, ConfigError};
pub use envelope::{DeadNotice, DecodeError, Envelope, Hop, Payload, START_SCHEMA, Start};
pub use error::{DeadKind, StepError};
pub use events::{EventKind, EventSink, JobEvent};
pub use names::Names;
pub use shutdown::shutdown_signal;
pub use topology::{Declarer, StepTopology, TopologyError};
pub use worker::{Context, FanOut, Handler, Health, RetryPolicy, StepOutput, Worker, WorkerError};
