//! What Warren's operators and tools do. The `warren` command and its web console are views over
//! this crate: they parse, call an [`Operator`] and print; the logic, the checks and the records
//! of what was done live here once.
//!
//! # Layout
//!
//! - [`operator`]: [`Operator`], one broker connection per command, and its actions (replay,
//!   edit, purge, cancel, rerun): each plans (selects, checks every edit against the step's
//!   announced descriptor, applies the one reason rule), acts, and records a typed
//!   [`OperatorAction`](warren::events::OperatorAction) in the events stream.
//! - [`rerun`]: a new job from an old one's recorded inputs at a step.
//! - [`describe`]: a step's parameters as a table (type, default, range, purpose).
//! - [`audit`]: who acts and why; the reason rule.
//! - [`edit`]: command-line values and the check of an edit against a dead letter.
//! - [`selection`]: which dead letters an action takes (steps, job, error, age, group, limit).
//! - [`dlq`]: reading, replaying and purging dead letters (publish with confirm, then ack).
//! - [`follow`]: one job followed to its end, settled once late event batches are in.
//! - [`history`]: the events stream folded into jobs (state, steps, trials, deaths, actions).
//! - [`queues`]: ready, unacked, consumers and dead letters per step.
//! - [`spec`]: pipeline specs (TOML), checked against the registry with errors naming the line.
//! - [`management`]: RabbitMQ's management API, for unacked counts where `rabbitmqctl` is absent.
//! - [`error`]: [`OpsError`], with predicates a view maps to exit codes or HTTP statuses.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod describe;
pub mod digest;
pub mod dlq;
pub mod edit;
pub mod error;
pub mod follow;
pub mod history;
pub mod management;
pub mod operator;
pub mod queues;
pub mod rerun;
pub mod selection;
pub mod spec;
pub mod traces;

pub use audit::Audit;
pub use error::OpsError;
pub use operator::Operator;
pub use selection::Selection;
