//! The step registry: what each step is (its [`StepDescriptor`]) and which workers run it.
//!
//! Workers announce themselves on the stream queue `{ns}.registry`: their step's descriptor when
//! they start (and again every [`DESCRIPTOR_EVERY`]), an `alive` record every [`HEARTBEAT`], and
//! `stopped` when they stop gracefully. [`read`] rebuilds the registry from the last
//! [`WINDOW`] of the stream: a reader first appends a `mark` record of its own and reads until it
//! meets it, so a read is bounded and sees everything announced before it began.
//!
//! Tools check pipeline specs against the descriptors (`warren submit`), list steps and their
//! live workers (`warren steps`), and declare each step's queues exactly as its workers do.

use std::{collections::BTreeMap, time::Duration};

use futures_util::StreamExt;
use lapin::{
    BasicProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Broker, BrokerError, Names, TopologyError};

/// Schema id of a registry record (the AMQP `type` of messages on `{ns}.registry`).
pub const REGISTRY_SCHEMA: &str = "warren.registry/1";
/// How often a worker says it is alive: a worker killed without a word leaves the live list
/// within [`LIVE_WITHIN`] (under a minute). A reader of the 13-hour window reads 3,120 such
/// records (about 250 bytes each) a worker.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// How often a worker announces its descriptor again, so it stays inside every reader's window.
pub const DESCRIPTOR_EVERY: Duration = Duration::from_secs(12 * 3600);
/// How far back a reader looks: a step whose workers all went away longer ago is unregistered.
pub const WINDOW: Duration = Duration::from_secs(13 * 3600);
/// A worker not heard from for this long (three heartbeats) is not counted as live.
pub const LIVE_WITHIN: Duration = Duration::from_secs(45);

/// The schema id of the payload `warren submit` starts a job with: a step whose input is this
/// can be a pipeline's first step.
pub const START_SCHEMA: &str = crate::START_SCHEMA;

/// What a step is: enough for tools to check a job against it without linking its code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDescriptor {
    /// The step's name (queue `{ns}.step.{step}`).
    pub step: String,
    /// The step's version (part of cache keys).
    pub version: String,
    /// One line on what it does.
    #[serde(default)]
    pub about: String,
    /// Schema id of the payload it takes (`*`: any).
    pub input: String,
    /// JSON Schema of that payload, where the step announces it (checks `dlq replay --payload-set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Value>,
    /// Schema id of the payload it sends on (`*`: any).
    pub output: String,
    /// Whether one input becomes any number of outputs.
    #[serde(default)]
    pub fan_out: bool,
    /// Whether the step gathers a fan-out (its hop always has `gather`).
    #[serde(default)]
    pub gather: bool,
    /// JSON Schema of its parameters (the hop's `params`), defaults included.
    pub params: serde_json::Value,
    /// Parameters that name an input file: at submit a local file is uploaded to the artifact
    /// store and the parameter then names it there.
    #[serde(default)]
    pub file_params: Vec<String>,
    /// What some of those files must be, so `warren submit` can check a local one before it
    /// uploads it: `{"format": "csv", "delimiter_param": P, "column_params": [P, …]}` (the
    /// parameter giving the delimiter, and those naming columns of its header). A format a tool
    /// does not know is left unchecked.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub file_formats: std::collections::BTreeMap<String, serde_json::Value>,
    /// Messages one worker handles at once unless configured.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// The longest one message may take (sets the queue's consumer timeout), in milliseconds.
    #[serde(default)]
    pub max_duration_ms: Option<u64>,
}

impl StepDescriptor {
    /// A descriptor of `step` taking any parameters; [`Worker::run`](crate::Worker::run) fills
    /// in the input and output schema ids from the handler's types.
    pub fn new(step: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            step: step.into(),
            version: version.into(),
            about: String::new(),
            input: "*".into(),
            input_schema: None,
            output: "*".into(),
            fan_out: false,
            gather: false,
            params: serde_json::json!({ "type": "object" }),
            file_params: Vec::new(),
            file_formats: Default::default(),
            concurrency: None,
            max_duration_ms: None,
        }
    }

    /// The parameters are `P` (its JSON Schema, with defaults).
    pub fn params_of<P: schemars::JsonSchema>(mut self) -> Self {
        self.params = schemars::schema_for!(P).to_value();
        self
    }

    /// Fills in what a worker knows of its step: name, version, the handler's input and output
    /// schema ids and fan-out, its concurrency and maximum duration.
    pub fn completed<I: crate::Payload, O: crate::StepOutput>(
        mut self,
        step: &str,
        version: &str,
        concurrency: usize,
        max_duration: Option<Duration>,
    ) -> Self {
        self.step = step.to_owned();
        self.version = version.to_owned();
        // A handler of any payload (`rmpv::Value`, as the exec runtime's) keeps the schema ids
        // its descriptor gives: the worker then checks and sends those.
        if I::SCHEMA != "*" {
            self.input = I::SCHEMA.to_owned();
        }
        let output = <O::Payload as crate::Payload>::SCHEMA;
        if output != "*" {
            self.output = output.to_owned();
        }
        self.fan_out = O::FAN_OUT;
        self.concurrency = Some(concurrency);
        self.max_duration_ms = max_duration.map(|d| d.as_millis() as u64);
        self
    }

    /// The queue arguments this step's workers declare.
    pub fn topology(&self, delivery_limit: u32) -> crate::StepTopology {
        crate::StepTopology {
            step: self.step.clone(),
            delivery_limit,
            max_duration: self.max_duration_ms.map(Duration::from_millis),
        }
    }
}

/// What a registry record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A worker started (or refreshes its descriptor): `descriptor` is set.
    Descriptor,
    /// A worker is still running.
    Alive,
    /// A worker stopped gracefully.
    Stopped,
    /// A reader's end marker.
    Mark,
}

/// One record of `{ns}.registry` (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Format version, 1.
    pub v: u16,
    /// What it says.
    pub kind: RecordKind,
    /// The step (empty for marks).
    #[serde(default)]
    pub step: String,
    /// The worker's id (`{step}@{host}#{pid}`), or the mark's id.
    pub worker: String,
    /// The worker's host.
    #[serde(default)]
    pub host: String,
    /// The worker's process id.
    #[serde(default)]
    pub pid: u32,
    /// Where the worker serves health and metrics, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_addr: Option<String>,
    /// The worker's step version.
    #[serde(default)]
    pub version: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The descriptor (kind `descriptor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptor: Option<StepDescriptor>,
    /// What the worker reads and writes (a worker's records; absent from workers before
    /// protocol 1.2, which read and write envelope 1 and write events version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<crate::compat::Versions>,
}

/// Appends `record` to `{ns}.registry`, with a publisher confirm.
pub async fn announce(broker: &Broker, names: &Names, record: &Record) -> Result<(), BrokerError> {
    let body = serde_json::to_vec(record).map_err(|e| BrokerError::Pool(format!("cannot encode: {e}")))?;
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_type(REGISTRY_SCHEMA.into());
    broker.publisher().await?.publish("", &names.registry(), &body, props).await
}

/// A worker as the registry last heard of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerEntry {
    /// `{step}@{host}#{pid}`.
    pub worker: String,
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Its health and metrics address.
    pub health_addr: Option<String>,
    /// Its step version.
    pub version: String,
    /// When it was last heard of (ms since the Unix epoch).
    pub last_seen_ms: u64,
    /// Heard of within [`LIVE_WITHIN`] and not stopped.
    pub live: bool,
    /// What it reads and writes, as it last said (none from workers before protocol 1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<crate::compat::Versions>,
}

/// A registered step: its latest descriptor and its workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEntry {
    /// The latest descriptor announced.
    pub descriptor: StepDescriptor,
    /// When it was announced (ms since the Unix epoch).
    pub announced_ms: u64,
    /// Workers heard of in the window and not stopped, newest first.
    pub workers: Vec<WorkerEntry>,
}

/// The registry of a namespace, as read by [`read`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// Registered steps by name.
    pub steps: BTreeMap<String, StepEntry>,
}

impl Registry {
    /// The descriptor of `step`, if some worker announced it.
    pub fn descriptor(&self, step: &str) -> Option<&StepDescriptor> {
        self.steps.get(step).map(|e| &e.descriptor)
    }

    /// Rebuilds a registry from records in stream order, as of `now_ms`.
    pub fn from_records(records: impl IntoIterator<Item = Record>, now_ms: u64) -> Self {
        let mut steps: BTreeMap<String, StepEntry> = BTreeMap::new();
        let mut workers: BTreeMap<String, (String, WorkerEntry, bool)> = BTreeMap::new();
        for r in records {
            match r.kind {
                RecordKind::Mark => continue,
                RecordKind::Descriptor => {
                    if let Some(d) = r.descriptor.clone() {
                        let entry = steps.entry(r.step.clone()).or_insert_with(|| StepEntry {
                            descriptor: d.clone(),
                            announced_ms: r.at_ms,
                            workers: Vec::new(),
                        });
                        entry.descriptor = d;
                        entry.announced_ms = r.at_ms;
                    }
                }
                RecordKind::Alive | RecordKind::Stopped => {}
            }
            let stopped = r.kind == RecordKind::Stopped;
            workers.insert(
                r.worker.clone(),
                (
                    r.step.clone(),
                    WorkerEntry {
                        worker: r.worker,
                        host: r.host,
                        pid: r.pid,
                        health_addr: r.health_addr,
                        version: r.version,
                        last_seen_ms: r.at_ms,
                        live: false,
                        protocol: r.protocol,
                    },
                    stopped,
                ),
            );
        }
        let live_ms = LIVE_WITHIN.as_millis() as u64;
        for (step, mut w, stopped) in workers.into_values() {
            if stopped {
                continue;
            }
            w.live = now_ms.saturating_sub(w.last_seen_ms) <= live_ms;
            if let Some(entry) = steps.get_mut(&step) {
                entry.workers.push(w);
            }
        }
        for entry in steps.values_mut() {
            entry.workers.sort_by_key(|w| std::cmp::Reverse(w.last_seen_ms));
        }
        Registry { steps }
    }
}

/// Reads the registry of `names`' namespace: the records of the last [`WINDOW`], up to a mark
/// this call appends first. Declares the namespace's base topology, so it works before any
/// worker has run (the registry is then empty).
pub async fn read(broker: &Broker, names: &Names) -> Result<Registry, TopologyError> {
    crate::Declarer::new(broker, names).ensure_base().await?;
    let mark = Uuid::now_v7().to_string();
    let started = crate::envelope::now_ms();
    announce(
        broker,
        names,
        &Record {
            v: 1,
            kind: RecordKind::Mark,
            step: String::new(),
            worker: mark.clone(),
            host: String::new(),
            pid: std::process::id(),
            health_addr: None,
            version: String::new(),
            at_ms: started,
            descriptor: None,
            protocol: None,
        },
    )
    .await?;
    let ch = broker.channel().await?;
    ch.basic_qos(1000, BasicQosOptions::default()).await.map_err(BrokerError::amqp("basic.qos"))?;
    let mut args = FieldTable::default();
    let from_s = started.saturating_sub(WINDOW.as_millis() as u64) / 1000;
    args.insert("x-stream-offset".into(), AMQPValue::Timestamp(from_s));
    let mut consumer = ch
        .basic_consume(names.registry().as_str().into(), "".into(), BasicConsumeOptions::default(), args)
        .await
        .map_err(BrokerError::amqp("basic.consume registry"))?;
    let mut records = Vec::new();
    let read_all = async {
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery.map_err(BrokerError::amqp("registry delivery"))?;
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            match serde_json::from_slice::<Record>(&delivery.data) {
                Ok(r) if r.kind == RecordKind::Mark && r.worker == mark => return Ok(()),
                Ok(r) if r.at_ms + WINDOW.as_millis() as u64 >= started => records.push(r),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "unreadable registry record; ignored"),
            }
        }
        Err(BrokerError::Pool("the registry stream ended before this reader's mark".into()))
    };
    let outcome = tokio::time::timeout(Duration::from_secs(30), read_all).await;
    let _ = ch.close(200, "registry read".into()).await;
    match outcome {
        Ok(Ok(())) => Ok(Registry::from_records(records, crate::envelope::now_ms())),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(BrokerError::Pool("reading the registry took longer than 30 s".into()).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: RecordKind, step: &str, worker: &str, at_ms: u64, version: &str) -> Record {
        Record {
            v: 1,
            kind,
            step: step.into(),
            worker: worker.into(),
            host: "h".into(),
            pid: 1,
            health_addr: None,
            version: version.into(),
            at_ms,
            descriptor: (kind == RecordKind::Descriptor).then(|| StepDescriptor::new(step, version)),
            protocol: None,
        }
    }

    #[test]
    fn the_latest_descriptor_wins_and_stopped_or_silent_workers_are_not_live() {
        let now = 10_000_000;
        let records = vec![
            record(RecordKind::Descriptor, "a", "a@h#1", now - 5_000_000, "1"),
            record(RecordKind::Descriptor, "a", "a@h#2", now - 1_000, "2"),
            record(RecordKind::Alive, "a", "a@h#1", now - 2_000_000, "1"),
            record(RecordKind::Descriptor, "b", "b@h#3", now - 1_000, "1"),
            record(RecordKind::Stopped, "b", "b@h#3", now - 500, "1"),
        ];
        let reg = Registry::from_records(records, now);
        assert_eq!(reg.descriptor("a").map(|d| d.version.as_str()), Some("2"));
        let a = &reg.steps["a"];
        assert_eq!(a.workers.len(), 2);
        assert_eq!((a.workers[0].worker.as_str(), a.workers[0].live), ("a@h#2", true));
        assert_eq!((a.workers[1].worker.as_str(), a.workers[1].live), ("a@h#1", false), "silent for 33 min");
        assert!(reg.steps["b"].workers.is_empty(), "a stopped worker is not listed");
        // A killed worker says nothing more: three minutes of silence and it is not live.
        let killed = vec![
            record(RecordKind::Descriptor, "k", "k@h#5", now - 200_000, "1"),
            record(RecordKind::Alive, "k", "k@h#5", now - 180_000, "1"),
        ];
        assert!(!Registry::from_records(killed, now).steps["k"].workers[0].live);
        assert!(reg.descriptor("c").is_none());
    }

    #[test]
    fn params_schema_comes_from_the_type() {
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        struct P {
            /// How many.
            #[schemars(range(min = 1, max = 10))]
            n: u32,
        }
        let d = StepDescriptor::new("s", "1").params_of::<P>();
        assert_eq!(d.params["properties"]["n"]["maximum"], 10);
    }
}
