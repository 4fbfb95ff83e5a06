//! Warren's message contracts: every payload that travels between the ML steps, the parameters
//! each step takes, and pipeline specs.
//!
//! # Layout
//!
//! - [`payloads`]: the step inputs and outputs, each with a versioned schema id.
//! - [`params`]: what each step takes from its hop on the routing slip.
//! - [`onnx`]: how an ONNX model in the registry is fed and read (its signature).
//! - [`spec`]: pipeline specs (TOML), checked step by step with errors that name the line.
//! - [`models`] (feature `warren`): the model registry's layout in the artifact store, with
//!   create-only writes so versions and aliases never lose an update.
//!
//! With the `warren` feature every payload implements `warren::Payload`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod csvfile;
mod fixtures;
#[cfg(feature = "warren")]
pub mod models;
pub mod onnx;
pub mod params;
pub mod payloads;
pub mod spec;

pub use payloads::*;
