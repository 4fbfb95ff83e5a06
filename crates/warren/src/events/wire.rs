//! Event batches on the wire: version 2 (short keys, the worker named once, time offsets)
//! written, versions 1 and 2 read.

use std::sync::Arc;

use super::{EventKind, JobEvent, event::is_zero};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Schema id of an event batch (the AMQP `type` of messages on `{ns}.events`) as written by
/// default: version 2 ([`EventBatch::encode`]); readers take versions 1 and 2.
pub const EVENTS_SCHEMA: &str = "warren.events/2";

/// The event batch versions this runtime writes (`events_version`: 2 by default, 1 for readers
/// written before version 2) and reads (both).
pub const EVENTS_VERSIONS: [u16; 2] = [1, 2];

/// The schema id (AMQP `type`) of a batch of `version`.
pub fn events_schema(version: u16) -> &'static str {
    if version == 1 { "warren.events/1" } else { EVENTS_SCHEMA }
}

/// The events of one message on `{ns}.events`, as readers see them whatever the version on the
/// wire ([`EventBatch::encode`], [`EventBatch::decode`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// Format version of the batch as read (1 or 2); [`EventBatch::encode`] writes 2.
    pub v: u16,
    /// The events, in the order they happened in one worker.
    pub events: Vec<JobEvent>,
    /// A reader's end marker (no events): see [`read_to_now`](super::read_to_now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<Uuid>,
}

/// Version 2 on the wire: a worker's events share its step, its id and mostly one pipeline, so
/// those are said once per batch (an event carries them only where it differs); keys are short
/// and times are offsets from the batch's `t`. A third of the bytes of version 1 for the same
/// events — and the events stream is what the broker writes most of after the step messages.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct WireBatch {
    v: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mark: Option<Uuid>,
    #[serde(default)]
    p: Arc<str>,
    #[serde(default)]
    s: Arc<str>,
    #[serde(default)]
    w: Arc<str>,
    #[serde(default)]
    t: u64,
    #[serde(default)]
    e: Vec<WireEvent>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct WireEvent {
    k: EventKind,
    j: Uuid,
    m: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    w: Option<Arc<str>>,
    #[serde(default)]
    t: u64,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    a: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    dc: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ek: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    o: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    l: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<rmpv::Value>,
    /// The causing message (added in place: readers before it ignore the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<Uuid>,
}

/// Version 1 on the wire, borrowed: [`EventBatch`]'s own fields and names.
#[derive(Serialize)]
struct V1<'a> {
    v: u16,
    events: &'a [JobEvent],
    #[serde(skip_serializing_if = "Option::is_none")]
    mark: Option<Uuid>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub(super) struct VersionOnly {
    pub(super) v: u16,
}

/// Why an events message could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventsDecodeError {
    /// Not a batch of a version this reader knows.
    #[error("unknown events batch version {0} (this reader takes 1 and 2)")]
    UnknownVersion(u16),
    /// Not MessagePack of the batch's shape.
    #[error("malformed events batch: {0}")]
    Malformed(#[from] rmp_serde::decode::Error),
}

impl EventBatch {
    /// A batch of `events`.
    pub fn new(events: Vec<JobEvent>) -> Self {
        Self { v: 2, events, mark: None }
    }

    /// Encodes as version 2 (see `WireBatch`).
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        self.encode_as(2)
    }

    /// Encodes as `version`: 1 (named fields, every event whole, as written before 2026-11-26:
    /// for readers that know no other) or 2 (anything else).
    pub fn encode_as(&self, version: u16) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        if version == 1 {
            return rmp_serde::to_vec_named(&V1 { v: 1, events: &self.events, mark: self.mark });
        }
        let first = self.events.first();
        let common = |f: fn(&JobEvent) -> &Arc<str>| first.map(|e| f(e).clone()).unwrap_or_else(|| "".into());
        let (p, s, w) = (common(|e| &e.pipeline), common(|e| &e.step), common(|e| &e.worker));
        let t = self.events.iter().map(|e| e.at_ms).min().unwrap_or(0);
        let differs = |value: &Arc<str>, common: &Arc<str>| (value != common).then(|| value.clone());
        let e = self
            .events
            .iter()
            .map(|ev| WireEvent {
                k: ev.kind,
                j: ev.job_id,
                m: ev.message_id,
                p: differs(&ev.pipeline, &p),
                s: differs(&ev.step, &s),
                w: differs(&ev.worker, &w),
                t: ev.at_ms - t,
                a: ev.attempt,
                dc: ev.delivery_count,
                d: ev.duration_ms,
                r: ev.delay_ms,
                e: ev.error.clone(),
                ek: ev.error_kind.clone(),
                o: ev.outputs,
                l: ev.last_step,
                x: ev.detail.clone(),
                c: ev.causation_id,
            })
            .collect();
        rmp_serde::to_vec_named(&WireBatch { v: 2, mark: self.mark, p, s, w, t, e })
    }

    /// Decodes a batch of version 1 (named fields, every event whole) or 2.
    pub fn decode(bytes: &[u8]) -> Result<Self, EventsDecodeError> {
        match rmp_serde::from_slice::<VersionOnly>(bytes)?.v {
            1 => Ok(rmp_serde::from_slice::<EventBatch>(bytes)?),
            2 => {
                let b = rmp_serde::from_slice::<WireBatch>(bytes)?;
                let events =
                    b.e.into_iter()
                        .map(|ev| JobEvent {
                            kind: ev.k,
                            job_id: ev.j,
                            message_id: ev.m,
                            pipeline: ev.p.unwrap_or_else(|| b.p.clone()),
                            step: ev.s.unwrap_or_else(|| b.s.clone()),
                            worker: ev.w.unwrap_or_else(|| b.w.clone()),
                            at_ms: b.t.saturating_add(ev.t),
                            attempt: ev.a,
                            delivery_count: ev.dc,
                            duration_ms: ev.d,
                            delay_ms: ev.r,
                            error: ev.e,
                            error_kind: ev.ek,
                            outputs: ev.o,
                            last_step: ev.l,
                            detail: ev.x,
                            causation_id: ev.c,
                        })
                        .collect();
                Ok(EventBatch { v: 2, events, mark: b.mark })
            }
            v => Err(EventsDecodeError::UnknownVersion(v)),
        }
    }
}
