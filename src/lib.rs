//! Shared by Warren's end-to-end tests and their test-step binary: the probe payload that
//! travels through a test pipeline and the parameters that make a step misbehave on purpose.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

pub mod chaos;

/// The payload of every test message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The job's number within a test.
    pub seq: u64,
    /// Steps passed so far.
    pub hops: u32,
}

impl warren::Payload for Probe {
    const SCHEMA: &'static str = "warren.test.Probe/1";
}

/// What a test step does, from its hop's parameters on the routing slip.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Behaviour {
    /// Fail with a retryable error while the attempt is at most this.
    pub fail_times: u32,
    /// Fail permanently for the probe with this `seq`.
    pub permanent_on: Option<u64>,
    /// Abort the process (as a crash would) for the probe with this `seq`.
    pub abort_on: Option<u64>,
    /// Take this long (simulated work).
    pub sleep_ms: u64,
    /// Send this many copies on (a fan-out, as tune sends trials); 0 or 1: one.
    pub fan_out: u32,
}
