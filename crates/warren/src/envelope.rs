//! The message format: a MessagePack envelope (named fields) plus AMQP properties and headers.
//!
//! `docs/PROTOCOL.md` describes the same format for clients in other languages.

use std::time::{SystemTime, UNIX_EPOCH};

use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// The envelope version a writer uses unless every reader of the next step reads a newer one
/// (see [`ENVELOPE_COMPACT`]): named fields, read by every Warren worker ever released.
pub const ENVELOPE_VERSION: u16 = 1;
/// The compact envelope: the same fields as version 1, in the same order, as a MessagePack
/// array instead of a map, each hop `[step, params]` (`[step, params, cache, gather]` when a
/// flag is set); the payload stays a map with named fields. About 100 bytes less a message.
/// Workers write it to a step only once every live reader of that step reads it.
pub const ENVELOPE_COMPACT: u16 = 2;
/// The envelope versions this runtime reads.
pub const ENVELOPE_READS: [u16; 2] = [ENVELOPE_VERSION, ENVELOPE_COMPACT];
/// The AMQP `content_type` of every Warren message.
pub const CONTENT_TYPE: &str = "application/msgpack";

/// Header names. Tools filter on these without decoding the body.
pub mod headers {
    /// On dead letters: the job id (UUID string); step messages carry it as `correlation_id`.
    pub const JOB: &str = "warren-job";
    /// On dead letters: the step that gave up on the message.
    pub const STEP: &str = "warren-step";
    /// Attempt number: absent (meaning 1) on a first delivery, 2 and up on retries.
    pub const ATTEMPT: &str = "warren-attempt";
    /// The last error, on retried and dead-lettered messages.
    pub const ERROR: &str = "warren-error";
    /// The kind of the error that dead-lettered a message (see [`crate::DeadKind`]).
    pub const ERROR_KIND: &str = "warren-error-kind";
    /// The worker that dead-lettered the message.
    pub const WORKER: &str = "warren-worker";
    /// When the message was dead-lettered (milliseconds since the Unix epoch).
    pub const FAILED_AT: &str = "warren-failed-at";
    /// Set by a replay: how many times this message has been replayed.
    pub const REPLAYED: &str = "warren-replayed";
    /// W3C trace context. Not sent on step messages: derived from the ids ([`super::traceparent`]).
    pub const TRACEPARENT: &str = "traceparent";
    /// Added by quorum queues on redelivery: deliveries that were not acked.
    pub const DELIVERY_COUNT: &str = "x-delivery-count";
}

/// A payload type: a serde type with a stable schema id such as `warren.ml.Dataset/1`.
pub trait Payload: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The schema id carried in the envelope and in the AMQP `type` property.
    const SCHEMA: &'static str;
}

/// The schema id of [`RemoteError`].
pub const ERROR_SCHEMA: &str = "warren.Error/1";

/// What an RPC caller gets back when its request failed at the step: the kind of failure
/// (`permanent`, `poison`, `exhausted`, ...), the step and the reason. The request itself goes
/// to the step's dead-letter queue as any failed message does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RemoteError {
    /// The kind of failure.
    pub kind: String,
    /// The step that refused the request.
    pub step: String,
    /// Why.
    pub message: String,
}

impl Payload for RemoteError {
    const SCHEMA: &'static str = ERROR_SCHEMA;
}

/// The schema id of [`Start`].
pub const START_SCHEMA: &str = "warren.Start/1";

/// A job's first message for pipelines that start from their parameters alone: what
/// `warren submit` sends to a pipeline's first step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Start {
    /// Free text from whoever submitted the job.
    #[serde(default)]
    pub note: Option<String>,
}

impl Payload for Start {
    const SCHEMA: &'static str = START_SCHEMA;
}

/// A dynamically typed payload: any MessagePack value with the schema id it claims.
impl Payload for rmpv::Value {
    const SCHEMA: &'static str = "*";
}

/// Converts a serde value to a MessagePack value exactly as it goes on the wire (named fields,
/// enum variants as strings), unlike `rmpv::ext::to_value`.
pub fn to_msgpack_value<T: Serialize + ?Sized>(value: &T) -> Result<rmpv::Value, DecodeError> {
    let bytes = rmp_serde::to_vec_named(value).map_err(|e| DecodeError::Value(e.to_string()))?;
    rmpv::decode::read_value(&mut bytes.as_slice()).map_err(|e| DecodeError::Value(e.to_string()))
}

/// Decodes a MessagePack value into a serde type as the wire decoder would.
pub fn from_msgpack_value<T: DeserializeOwned>(value: &rmpv::Value) -> Result<T, DecodeError> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).map_err(|e| DecodeError::Value(e.to_string()))?;
    rmp_serde::from_slice(&bytes).map_err(|e| DecodeError::Value(e.to_string()))
}

/// One entry of the routing slip: a step and its parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hop {
    /// Step name; the message is published to `{ns}.steps` with this routing key.
    pub step: String,
    /// The step's parameters (a MessagePack map; nil when the step takes none).
    #[serde(default = "nil")]
    pub params: rmpv::Value,
    /// Reuse an earlier run's output when step version, parameters and input match.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache: bool,
    /// This step gathers what the step before it fanned out: when a message bound for it dies
    /// there, it is sent a [`DeadNotice`] instead, so it never waits for a message that will not come.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gather: bool,
}

/// What a gathering step (a hop with `gather`) receives when a message bound for it died at
/// the step before it: which message, where, why, and its payload as it was (to tell which
/// part of the fan-out is missing). Handlers see it through [`crate::Handler::dead_upstream`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadNotice {
    /// The message that died.
    #[serde(deserialize_with = "uuid_wire::one")]
    pub message_id: Uuid,
    /// The step it died at.
    pub step: String,
    /// Its dead-letter kind (`permanent`, `exhausted`, `crash`).
    pub kind: String,
    /// Why.
    pub reason: String,
    /// Its payload.
    pub payload: rmpv::Value,
}

impl Payload for DeadNotice {
    const SCHEMA: &'static str = "warren.DeadNotice/1";
}

fn nil() -> rmpv::Value {
    rmpv::Value::Nil
}

impl Hop {
    /// A hop with no parameters.
    pub fn new(step: impl Into<String>) -> Self {
        Self { step: step.into(), params: rmpv::Value::Nil, cache: false, gather: false }
    }
    /// A hop with parameters taken from any serde value.
    pub fn with_params<T: Serialize>(step: impl Into<String>, params: &T) -> Result<Self, DecodeError> {
        Ok(Self { step: step.into(), params: to_msgpack_value(params)?, cache: false, gather: false })
    }
}

/// The body of every step message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P> {
    /// Envelope version, [`ENVELOPE_VERSION`].
    pub v: u16,
    /// The job (UUID v7, so ids sort by creation time).
    #[serde(deserialize_with = "uuid_wire::one")]
    pub job_id: Uuid,
    /// This message's id, derived from its cause so a redelivery yields the same id.
    #[serde(deserialize_with = "uuid_wire::one")]
    pub message_id: Uuid,
    /// The message this one was produced from (none for a job's first message).
    #[serde(default, deserialize_with = "uuid_wire::optional")]
    pub causation_id: Option<Uuid>,
    /// Name of the pipeline the job runs.
    pub pipeline: String,
    /// The routing slip: `slip[0]` is the step this message is for, the rest follow it.
    pub slip: Vec<Hop>,
    /// Schema id of `payload`.
    pub schema: String,
    /// The step's input.
    pub payload: P,
}

/// An envelope of borrowed parts, for encoding without copying the slip: the same fields, names
/// and order as [`Envelope`], so it encodes to the same bytes.
#[derive(Debug, Serialize)]
pub struct EnvelopeRef<'a, P> {
    /// See [`Envelope::v`].
    pub v: u16,
    /// See [`Envelope::job_id`].
    pub job_id: Uuid,
    /// See [`Envelope::message_id`].
    pub message_id: Uuid,
    /// See [`Envelope::causation_id`].
    pub causation_id: Option<Uuid>,
    /// See [`Envelope::pipeline`].
    pub pipeline: &'a str,
    /// See [`Envelope::slip`].
    pub slip: &'a [Hop],
    /// See [`Envelope::schema`].
    pub schema: &'a str,
    /// See [`Envelope::payload`].
    pub payload: &'a P,
}

impl<P: Serialize> EnvelopeRef<'_, P> {
    /// Encodes as MessagePack in the form of its version `v`: a map with named fields (1), or
    /// the compact array (2, [`ENVELOPE_COMPACT`]); the payload is a map with named fields in
    /// both.
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        if self.v == ENVELOPE_COMPACT { rmp_serde::to_vec_named(&Compact(self)) } else { rmp_serde::to_vec_named(self) }
    }

    /// The message as it goes out, built in one place: the encoded envelope and its AMQP
    /// properties (persistent, message id, the job as correlation id, the schema as `type`),
    /// addressed to `step` (empty for an RPC reply).
    pub fn to_message(&self, step: &str) -> Result<(Vec<u8>, BasicProperties), rmp_serde::encode::Error> {
        let body = self.encode()?;
        let meta = EnvelopeMeta { job_id: self.job_id, message_id: self.message_id, step, schema: self.schema };
        Ok((body, properties(&meta, 1)))
    }
}

/// An envelope as version 2 writes it: a tuple, so a MessagePack array (the payload inside keeps
/// its named fields, since only structs become maps).
struct Compact<'a, 'b, P>(&'b EnvelopeRef<'a, P>);

impl<P: Serialize> Serialize for Compact<'_, '_, P> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let e = self.0;
        let mut t = s.serialize_tuple(8)?;
        t.serialize_element(&e.v)?;
        t.serialize_element(&e.job_id)?;
        t.serialize_element(&e.message_id)?;
        t.serialize_element(&e.causation_id)?;
        t.serialize_element(e.pipeline)?;
        let slip: Vec<CompactHop<'_>> = e.slip.iter().map(CompactHop).collect();
        t.serialize_element(&slip)?;
        t.serialize_element(e.schema)?;
        t.serialize_element(e.payload)?;
        t.end()
    }
}

/// A hop of the compact envelope: `[step, params]`, with `cache` and `gather` only when set.
struct CompactHop<'a>(&'a Hop);

impl Serialize for CompactHop<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let h = self.0;
        let n = if h.gather {
            4
        } else if h.cache {
            3
        } else {
            2
        };
        let mut t = s.serialize_tuple(n)?;
        t.serialize_element(&h.step)?;
        t.serialize_element(&h.params)?;
        if n >= 3 {
            t.serialize_element(&h.cache)?;
        }
        if n == 4 {
            t.serialize_element(&h.gather)?;
        }
        t.end()
    }
}

/// What an outgoing message comes from: the job and the message that caused it.
#[derive(Debug, Clone, Copy)]
pub struct Cause<'a> {
    /// The job.
    pub job_id: Uuid,
    /// The message being handled.
    pub message_id: Uuid,
    /// The job's pipeline.
    pub pipeline: &'a str,
}

impl<'a> Cause<'a> {
    /// The `index`th message this cause yields under `label` (the step that made it, `error`,
    /// `dead-notice`), its id derived from the three: a redelivered cause yields the same ids,
    /// which the next step's dedup drops.
    pub fn message<P>(
        self,
        label: &str,
        index: usize,
        slip: &'a [Hop],
        schema: &'a str,
        payload: &'a P,
    ) -> EnvelopeRef<'a, P> {
        EnvelopeRef {
            v: ENVELOPE_VERSION,
            job_id: self.job_id,
            message_id: derive_message_id(self.message_id, label, index),
            causation_id: Some(self.message_id),
            pipeline: self.pipeline,
            slip,
            schema,
            payload,
        }
    }
}

/// The envelope without its payload: enough to route, dead-letter and report.
#[derive(Clone, Debug, Deserialize)]
pub struct EnvelopeHead {
    /// See [`Envelope::v`].
    pub v: u16,
    /// See [`Envelope::job_id`].
    #[serde(deserialize_with = "uuid_wire::one")]
    pub job_id: Uuid,
    /// See [`Envelope::message_id`].
    #[serde(deserialize_with = "uuid_wire::one")]
    pub message_id: Uuid,
    /// See [`Envelope::causation_id`].
    #[serde(default, deserialize_with = "uuid_wire::optional")]
    pub causation_id: Option<Uuid>,
    /// See [`Envelope::pipeline`].
    pub pipeline: String,
    /// See [`Envelope::slip`].
    pub slip: Vec<Hop>,
    /// See [`Envelope::schema`].
    pub schema: String,
}

/// UUIDs on the wire: written as 16 bytes, read as 16 bytes or as a string in any form the
/// `uuid` crate parses (hyphenated, simple, urn), as `docs/PROTOCOL.md` promises other clients.
mod uuid_wire {
    use std::fmt;

    use serde::{Deserializer, de};
    use uuid::Uuid;

    struct AnyUuid;

    impl<'de> de::Visitor<'de> for AnyUuid {
        type Value = Uuid;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a UUID as 16 bytes or as a string")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Uuid, E> {
            Uuid::from_slice(v).map_err(|_| E::invalid_length(v.len(), &"16 bytes"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Uuid, E> {
            Uuid::parse_str(v).map_err(|e| E::custom(format!("{v:?} is not a UUID: {e}")))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Uuid, A::Error> {
            // An array of 16 integers, as some MessagePack writers emit byte arrays.
            let mut bytes = [0u8; 16];
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(i, &"16 bytes"))?;
            }
            if seq.next_element::<u8>()?.is_some() {
                return Err(de::Error::invalid_length(17, &"16 bytes"));
            }
            Ok(Uuid::from_bytes(bytes))
        }
    }

    struct MaybeUuid;

    impl<'de> de::Visitor<'de> for MaybeUuid {
        type Value = Option<Uuid>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("nil or a UUID as 16 bytes or as a string")
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<Uuid>, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<Uuid>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<Uuid>, D::Error> {
            one(d).map(Some)
        }
    }

    pub(super) fn one<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        d.deserialize_any(AnyUuid)
    }

    pub(super) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uuid>, D::Error> {
        d.deserialize_option(MaybeUuid)
    }
}

/// The envelope's fields as they come, the payload skipped: read from a map (version 1) or an
/// array (version 2), which must then be read to its end.
#[derive(Deserialize)]
struct HeadWire {
    v: u16,
    #[serde(deserialize_with = "uuid_wire::one")]
    job_id: Uuid,
    #[serde(deserialize_with = "uuid_wire::one")]
    message_id: Uuid,
    #[serde(default, deserialize_with = "uuid_wire::optional")]
    causation_id: Option<Uuid>,
    pipeline: String,
    slip: Vec<Hop>,
    schema: String,
    #[serde(default)]
    #[allow(dead_code)]
    payload: serde::de::IgnoredAny,
}

/// The `v` of a body that is a map with one, or an array that starts with it.
fn version_of(body: &[u8]) -> Option<u16> {
    let value = rmpv::decode::read_value(&mut &body[..]).ok()?;
    let v = match &value {
        rmpv::Value::Map(fields) => fields.iter().find(|(k, _)| k.as_str() == Some("v")).map(|(_, v)| v)?,
        rmpv::Value::Array(items) => items.first()?,
        _ => return None,
    };
    v.as_u64().and_then(|v| u16::try_from(v).ok())
}

/// Why a body could not be decoded. Each variant sends the message to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body is not a MessagePack map with the envelope's fields.
    #[error("body is not a Warren envelope: {0}")]
    Malformed(String),
    /// The envelope has a version this runtime does not read.
    #[error("unknown envelope version {found} (this worker reads versions 1 and 2)")]
    UnknownVersion {
        /// The version in the message.
        found: u16,
    },
    /// The envelope has a version this worker was built not to read (an earlier protocol's
    /// worker, see [`WorkerBuilder::reads_envelopes`](crate::worker::WorkerBuilder::reads_envelopes)).
    #[error("unknown envelope version {found} (this worker reads {reads})")]
    NotRead {
        /// The version in the message.
        found: u16,
        /// The versions it reads, as a list.
        reads: String,
    },
    /// The payload's schema is not the one the step takes.
    #[error("wrong payload schema {found:?}: step expects {expected:?}")]
    WrongSchema {
        /// What the step takes.
        expected: String,
        /// What the message claims.
        found: String,
    },
    /// A value inside a valid envelope (a step's parameters, say) does not fit its type.
    #[error("{0}")]
    Value(String),
    /// The schema matched but the payload did not decode as that type.
    #[error("payload does not match schema {schema:?}: {reason}")]
    BadPayload {
        /// The schema id.
        schema: String,
        /// The decoder's message.
        reason: String,
    },
}

impl<P: Payload> Envelope<P> {
    /// Encodes the envelope in the form of its version (see [`EnvelopeRef::encode`]): a message
    /// read and written back (a dead letter edited) keeps its form.
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        self.as_ref().encode()
    }

    /// The envelope of borrowed parts.
    pub fn as_ref(&self) -> EnvelopeRef<'_, P> {
        EnvelopeRef {
            v: self.v,
            job_id: self.job_id,
            message_id: self.message_id,
            causation_id: self.causation_id,
            pipeline: &self.pipeline,
            slip: &self.slip,
            schema: &self.schema,
            payload: &self.payload,
        }
    }

    /// Decodes a body, checking the version and that the schema is `P`'s.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_or_head(body).map_err(|(e, _)| e)
    }

    /// Like [`Envelope::decode`], but a failure also returns the envelope's head when that much
    /// of the body is readable (to dead-letter and report it), so nothing decodes it twice.
    pub fn decode_or_head(body: &[u8]) -> Result<Self, (DecodeError, Option<Box<EnvelopeHead>>)> {
        match rmp_serde::from_slice::<Envelope<P>>(body) {
            Ok(env) if !ENVELOPE_READS.contains(&env.v) => Err((DecodeError::UnknownVersion { found: env.v }, None)),
            Ok(env) if P::SCHEMA != "*" && !crate::compat::schema_matches(P::SCHEMA, &env.schema) => {
                let err = DecodeError::WrongSchema { expected: P::SCHEMA.into(), found: env.schema.clone() };
                Err((err, Some(Box::new(env.into_head()))))
            }
            Ok(env) => Ok(env),
            Err(payload_err) => {
                // Say precisely what is wrong: the envelope, its version, its schema or the payload.
                let head = EnvelopeHead::decode(body).map_err(|e| (e, None))?;
                let err = if P::SCHEMA != "*" && !crate::compat::schema_matches(P::SCHEMA, &head.schema) {
                    DecodeError::WrongSchema { expected: P::SCHEMA.into(), found: head.schema.clone() }
                } else {
                    DecodeError::BadPayload { schema: head.schema.clone(), reason: payload_err.to_string() }
                };
                Err((err, Some(Box::new(head))))
            }
        }
    }

    /// The envelope without its payload.
    pub fn into_head(self) -> EnvelopeHead {
        EnvelopeHead {
            v: self.v,
            job_id: self.job_id,
            message_id: self.message_id,
            causation_id: self.causation_id,
            pipeline: self.pipeline,
            slip: self.slip,
            schema: self.schema,
        }
    }

    /// The step this message is addressed to.
    pub fn step(&self) -> &str {
        self.slip.first().map(|h| h.step.as_str()).unwrap_or_default()
    }
}

impl EnvelopeHead {
    /// Decodes the envelope's fields, ignoring the payload.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        match rmp_serde::from_slice::<HeadWire>(body) {
            Ok(head) if !ENVELOPE_READS.contains(&head.v) => Err(DecodeError::UnknownVersion { found: head.v }),
            Ok(h) => Ok(EnvelopeHead {
                v: h.v,
                job_id: h.job_id,
                message_id: h.message_id,
                causation_id: h.causation_id,
                pipeline: h.pipeline,
                slip: h.slip,
                schema: h.schema,
            }),
            Err(e) => match version_of(body) {
                Some(v) if !ENVELOPE_READS.contains(&v) => Err(DecodeError::UnknownVersion { found: v }),
                _ => Err(DecodeError::Malformed(e.to_string())),
            },
        }
    }
}

/// Derives the id of the `index`-th output that `step` produced from input `input_id`:
/// the same input always yields the same output ids (UUID v5).
pub fn derive_message_id(input_id: Uuid, step: &str, index: usize) -> Uuid {
    let mut name = Vec::with_capacity(step.len() + 9);
    name.extend_from_slice(step.as_bytes());
    name.push(b'#');
    name.extend_from_slice(&(index as u64).to_be_bytes());
    Uuid::new_v5(&input_id, &name)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The AMQP properties of a step message: persistent, ids (`message_id`, and the job id as
/// `correlation_id`), schema, timestamp; the one header `warren-attempt`, only from the second
/// attempt on (absent means 1). The step is the routing key and the queue; dead letters name it
/// in `warren-step` and the job in `warren-job`. The trace context is not sent: it is derived
/// from the ids ([`traceparent`]). The broker decodes and stores the property table of every
/// message on every hop — a header table cost it more than the rest of the message (see the
/// pipeline benchmark) — so a first attempt carries none.
pub fn properties(head: &EnvelopeMeta<'_>, attempt: u32) -> BasicProperties {
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(head.message_id.to_string().into())
        .with_correlation_id(head.job_id.to_string().into())
        .with_type(head.schema.into())
        .with_timestamp(now_ms() / 1000);
    if attempt > 1 {
        let mut h = FieldTable::default();
        h.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(i64::from(attempt)));
        props.with_headers(h)
    } else {
        props
    }
}

/// The job a message belongs to, from its properties: the `warren-job` header (dead letters),
/// else the `correlation_id` (step messages).
pub fn job_of(props: &BasicProperties) -> Option<&str> {
    header_str(props, headers::JOB).or_else(|| props.correlation_id().as_ref().map(|c| c.as_str()))
}

/// What [`properties`] needs to know of a message.
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeMeta<'a> {
    /// Job id.
    pub job_id: Uuid,
    /// Message id.
    pub message_id: Uuid,
    /// Step the message is addressed to (reserved for headers that name it; the routing key
    /// already does).
    pub step: &'a str,
    /// Payload schema id.
    pub schema: &'a str,
}

/// `00-{job id}-{first 8 bytes of the message id}-01`: the job is the trace, each message a span.
/// Derived wherever it is needed rather than sent with every message.
pub fn traceparent(job_id: Uuid, message_id: Uuid) -> String {
    let span = &message_id.simple().to_string()[..16];
    format!("00-{}-{span}-01", job_id.simple())
}

/// Reads a header as a string, if present.
pub fn header_str<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a str> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Reads a header as an integer, if present and integral (a decimal string counts, as some
/// clients write numbers as text); any other type reads as absent.
pub fn header_int(props: &BasicProperties, name: &str) -> Option<i64> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

/// Returns `props` with `extra` headers set (replacing same-named ones) and the broker's own
/// redelivery count removed: a republished copy is a new message to the broker, and a count
/// carried forward would read as crashes it never had.
pub fn with_headers(props: &BasicProperties, extra: Vec<(&str, AMQPValue)>) -> BasicProperties {
    let mut map = props.headers().as_ref().map(|t| t.inner().clone()).unwrap_or_default();
    map.remove(headers::DELIVERY_COUNT);
    for (k, v) in extra {
        map.insert(ShortString::from(k), v);
    }
    let table = FieldTable::from(map);
    props.clone().with_headers(table)
}

/// A string header value.
pub fn text(s: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Num {
        n: u64,
    }
    impl Payload for Num {
        const SCHEMA: &'static str = "test.Num/1";
    }

    fn env(v: u16, schema: &str) -> Envelope<Num> {
        Envelope {
            v,
            job_id: Uuid::now_v7(),
            message_id: Uuid::now_v7(),
            causation_id: None,
            pipeline: "p".into(),
            slip: vec![Hop::new("a"), Hop::with_params("b", &Num { n: 1 }).unwrap()],
            schema: schema.into(),
            payload: Num { n: 7 },
        }
    }

    #[test]
    fn round_trips() {
        let e = env(1, Num::SCHEMA);
        let back = Envelope::<Num>::decode(&e.encode().unwrap()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.step(), "a");
    }

    #[test]
    fn typed_decode_errors() {
        assert!(matches!(Envelope::<Num>::decode(b"\xc1not msgpack"), Err(DecodeError::Malformed(_))));
        let body = env(9, Num::SCHEMA).encode().unwrap();
        assert_eq!(Envelope::<Num>::decode(&body), Err(DecodeError::UnknownVersion { found: 9 }));
        let body = env(1, "other/1").encode().unwrap();
        assert!(matches!(Envelope::<Num>::decode(&body), Err(DecodeError::WrongSchema { .. })));
        let mut wrong = env(1, Num::SCHEMA);
        wrong.schema = "test.Num/1".into();
        let body = Envelope {
            payload: "text",
            v: 1,
            job_id: wrong.job_id,
            message_id: wrong.message_id,
            causation_id: None,
            pipeline: "p".into(),
            slip: vec![],
            schema: Num::SCHEMA.into(),
        };
        let body = rmp_serde::to_vec_named(&body).unwrap();
        assert!(matches!(Envelope::<Num>::decode(&body), Err(DecodeError::BadPayload { .. })));
    }

    #[test]
    fn the_compact_envelope_reads_back_whole_is_smaller_and_keeps_the_payload_named() {
        let mut e = env(ENVELOPE_COMPACT, Num::SCHEMA);
        e.causation_id = Some(Uuid::now_v7());
        e.slip.push(Hop { cache: true, ..Hop::new("c") });
        e.slip.push(Hop { gather: true, ..Hop::new("d") });
        let compact = e.encode().unwrap();
        let back = Envelope::<Num>::decode(&compact).unwrap();
        assert_eq!(back, e);
        let head = EnvelopeHead::decode(&compact).unwrap();
        assert_eq!((head.v, head.slip.len(), head.schema.as_str()), (2, 4, Num::SCHEMA));
        let value = rmpv::decode::read_value(&mut compact.as_slice()).unwrap();
        let fields = value.as_array().expect("an array");
        assert_eq!(fields.len(), 8);
        assert!(fields[7].as_map().is_some(), "the payload keeps its names: {}", fields[7]);
        assert_eq!(
            fields[5].as_array().map(|s| s[0].as_array().map(Vec::len)),
            Some(Some(2)),
            "a plain hop is [step, params]"
        );
        let plain = Envelope { v: 1, ..e.clone() }.encode().unwrap();
        assert!(compact.len() + 80 <= plain.len(), "compact {} against plain {} bytes", compact.len(), plain.len());
        // A compact envelope edited and written back stays compact; a plain one stays plain.
        let any = Envelope::<rmpv::Value>::decode(&compact).unwrap();
        assert_eq!(any.encode().unwrap(), compact);
        assert_eq!(Envelope::<rmpv::Value>::decode(&plain).unwrap().encode().unwrap(), plain);
    }

    #[test]
    fn a_reader_of_version_1_alone_refuses_the_compact_envelope() {
        // What a worker of protocol 1.2 ran: the version check on a map with `v`.
        let compact = env(ENVELOPE_COMPACT, Num::SCHEMA).encode().unwrap();
        let value = rmpv::decode::read_value(&mut compact.as_slice()).unwrap();
        assert!(value.as_map().is_none(), "not the map a version 1 reader looks for its `v` in");
        assert_eq!(
            Envelope::<Num>::decode(&env(3, Num::SCHEMA).encode().unwrap()),
            Err(DecodeError::UnknownVersion { found: 3 })
        );
    }

    #[test]
    fn borrowed_and_owned_envelopes_encode_alike() {
        let e = env(1, Num::SCHEMA);
        let r = EnvelopeRef {
            v: e.v,
            job_id: e.job_id,
            message_id: e.message_id,
            causation_id: e.causation_id,
            pipeline: &e.pipeline,
            slip: &e.slip,
            schema: &e.schema,
            payload: &e.payload,
        };
        assert_eq!(r.encode().unwrap(), e.encode().unwrap());
    }

    #[test]
    fn params_written_by_another_client_decode_as_on_the_wire() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Algo {
            DecisionTree,
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct P {
            algorithm: Algo,
            depth: u32,
        }
        // What a Python client puts in slip[i].params: a map, the enum as a string.
        let v = rmpv::Value::Map(vec![("algorithm".into(), "decision_tree".into()), ("depth".into(), 3.into())]);
        let p: P = from_msgpack_value(&v).unwrap();
        assert_eq!(p, P { algorithm: Algo::DecisionTree, depth: 3 });
        assert_eq!(to_msgpack_value(&p).unwrap(), v, "and encodes back to the same map");
    }

    #[test]
    fn a_value_that_does_not_fit_is_not_called_a_bad_envelope() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct P {
            depth: u32,
        }
        let v = rmpv::Value::Map(vec![("max_iterations".into(), 5.into())]);
        let err = from_msgpack_value::<P>(&v).unwrap_err().to_string();
        assert!(err.contains("max_iterations") && !err.contains("envelope"), "{err}");
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let input = Uuid::now_v7();
        assert_eq!(derive_message_id(input, "a", 0), derive_message_id(input, "a", 0));
        assert_ne!(derive_message_id(input, "a", 0), derive_message_id(input, "a", 1));
        assert_ne!(derive_message_id(input, "a", 0), derive_message_id(input, "b", 0));
    }

    #[test]
    fn traceparent_is_w3c_shaped() {
        let t = traceparent(Uuid::now_v7(), Uuid::now_v7());
        let parts: Vec<&str> = t.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![2, 32, 16, 2]);
    }
}
