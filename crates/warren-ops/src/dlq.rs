//! Dead letters: reading them and sending them back to their step.
//!
//! A replay publishes each chosen dead letter to its step with a publisher confirm and only
//! then acks it in the dead-letter queue: killed at any moment, every message is either still a
//! dead letter or back in its step queue (or, in the moment between, both: the step's dedup and
//! idempotent handlers absorb that).

use futures_util::StreamExt;
use lapin::{
    BasicProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use warren::{
    Broker, BrokerError, Names,
    broker::Publisher,
    envelope::{self, headers},
};

/// One dead letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The step whose dead-letter queue holds it.
    pub step: String,
    /// Message id (property).
    pub message_id: Option<String>,
    /// What `show`, `replay` and `purge` name it by: the message id, or `body:` and the first 16
    /// hex digits of the body's SHA-256 when a publisher set none.
    pub id: String,
    /// Its failure group: the first 12 hex digits of the SHA-256 of step, kind and the error's
    /// [`fingerprint`].
    pub group: String,
    /// Job id (`warren-job` header, else `correlation_id`).
    pub job: Option<String>,
    /// The error (`warren-error`, or RabbitMQ's `x-death` reason).
    pub error: String,
    /// The kind (`warren-error-kind`; `broker` when RabbitMQ dead-lettered it itself).
    pub kind: String,
    /// When it failed, ms since the epoch (0 if unknown).
    pub failed_at_ms: u64,
    /// Its properties and headers.
    pub properties: BasicProperties,
    /// The original body.
    pub body: Vec<u8>,
}

/// A predicate on a dead letter's error text.
pub type ErrorMatcher = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Which dead letters to act on. Empty fields match everything.
#[derive(Clone, Default)]
pub struct Filter {
    /// Only this job.
    pub job: Option<String>,
    /// Only errors containing this text.
    pub error_contains: Option<String>,
    /// Only dead letters that failed at or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Only errors this predicate accepts (a regular expression, say).
    pub error_matches: Option<ErrorMatcher>,
    /// Only this failure group (see [`DeadLetter::group`]; a prefix is enough).
    pub group: Option<String>,
    /// Only these dead letters (see [`DeadLetter::id`]).
    pub ids: Option<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("job", &self.job)
            .field("error_contains", &self.error_contains)
            .field("since_ms", &self.since_ms)
            .field("error_matches", &self.error_matches.is_some())
            .field("group", &self.group)
            .field("ids", &self.ids.as_ref().map(|i| i.len()))
            .finish()
    }
}

/// How a replay runs.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Replay at most this many.
    pub limit: Option<usize>,
    /// Only count what would be replayed.
    pub dry_run: bool,
    /// At most this many messages per second.
    pub rate_per_s: Option<f64>,
    /// Changes to make to each message before it goes back (check them first with
    /// [`Edit::apply`] on every letter: a replay skips a letter the edit does not fit).
    pub edit: Edit,
}

/// Header on a replayed message that was changed: what was changed (`set max_depth=3; …`).
pub const EDITED: &str = "warren-edited";

/// Changes to a dead letter before it is replayed: its step's parameters (`slip[0].params`) and
/// its payload. The message keeps its id; the replay marks it with [`EDITED`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Edit {
    /// Parameters to set.
    pub set: Vec<(String, rmpv::Value)>,
    /// Parameters to remove (back to the step's default).
    pub unset: Vec<String>,
    /// Payload fields to change, by dotted path (`candidate.hyperparams.max_iterations`). The
    /// field must exist: a typo is an error, not a new field nobody reads.
    pub payload_set: Vec<(String, rmpv::Value)>,
}

impl Edit {
    /// Whether the edit changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.unset.is_empty() && self.payload_set.is_empty()
    }

    /// The changes as people read them: `set a=1`, `unset b`, `payload x.y=2`.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self.set.iter().map(|(k, v)| format!("set {k}={v}")).collect();
        out.extend(self.unset.iter().map(|k| format!("unset {k}")));
        out.extend(self.payload_set.iter().map(|(k, v)| format!("payload {k}={v}")));
        out
    }

    /// The edited envelope of `body`. Fails, naming the key, on a body that is not an envelope or
    /// a payload path that does not exist.
    pub fn apply_value(&self, body: &[u8]) -> Result<warren::Envelope<rmpv::Value>, String> {
        let mut env = warren::Envelope::<rmpv::Value>::decode(body)
            .map_err(|e| format!("cannot edit a message that is not a Warren envelope: {e}"))?;
        if let Some(hop) = env.slip.first_mut() {
            let mut map = match std::mem::replace(&mut hop.params, rmpv::Value::Nil) {
                rmpv::Value::Map(m) => m,
                rmpv::Value::Nil => Vec::new(),
                other => return Err(format!("the step's parameters are not a map: {other}")),
            };
            for k in &self.unset {
                map.retain(|(key, _)| key.as_str() != Some(k.as_str()));
            }
            for (k, v) in &self.set {
                map.retain(|(key, _)| key.as_str() != Some(k.as_str()));
                map.push((rmpv::Value::from(k.as_str()), v.clone()));
            }
            hop.params = if map.is_empty() { rmpv::Value::Nil } else { rmpv::Value::Map(map) };
        }
        for (path, value) in &self.payload_set {
            let mut at = &mut env.payload;
            let keys: Vec<&str> = path.split('.').collect();
            for (i, key) in keys.iter().enumerate() {
                let rmpv::Value::Map(fields) = at else {
                    return Err(format!("payload field `{}` is not a map", keys[..i].join(".")));
                };
                let known: Vec<String> = fields.iter().filter_map(|(k, _)| k.as_str().map(str::to_owned)).collect();
                let Some(slot) = fields.iter_mut().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v) else {
                    return Err(format!(
                        "the payload has no `{}` (there: {})",
                        keys[..=i].join("."),
                        if known.is_empty() { "nothing".to_owned() } else { known.join(", ") }
                    ));
                };
                at = slot;
            }
            *at = value.clone();
        }
        Ok(env)
    }

    /// The edited body (see [`Edit::apply_value`]).
    pub fn apply(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        self.apply_value(body)?.encode().map_err(|e| format!("cannot encode the edited message: {e}"))
    }
}

impl Filter {
    /// Whether `d` matches.
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.job.as_ref().is_none_or(|j| d.job.as_deref() == Some(j.as_str()))
            && self.error_contains.as_ref().is_none_or(|t| d.error.contains(t.as_str()))
            && self.since_ms.is_none_or(|s| d.failed_at_ms >= s)
            && self.error_matches.as_ref().is_none_or(|m| m(&d.error))
            && self.group.as_ref().is_none_or(|g| !g.is_empty() && d.group.starts_with(g.as_str()))
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&d.id))
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Dead letters sent back (or, on a dry run, that would be).
    pub replayed: usize,
    /// Dead letters looked at and left.
    pub left: usize,
    /// The ids of the dead letters sent back (see [`DeadLetter::id`]).
    pub ids: Vec<String>,
    /// Step and envelope message id of each replayed letter whose body names one: what
    /// [`Follower::wait`] waits for.
    pub messages: Vec<(String, uuid::Uuid)>,
}

/// What became of replayed messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fates {
    /// Handled successfully by their step.
    pub succeeded: usize,
    /// Dead-lettered again: the message id and the new reason.
    pub dead_again: Vec<(uuid::Uuid, String)>,
    /// Neither within the deadline (still queued, retrying, or no worker for the step).
    pub pending: usize,
}

/// Follows replayed messages to their fate in the events stream. Start it before the replay:
/// it reads from the stream's tail as it is then, so it sees exactly what happens afterwards
/// (no clock comparisons, and an earlier death of the same message is never mistaken for a new one).
#[derive(Debug)]
pub struct Follower {
    rx: tokio::sync::mpsc::UnboundedReceiver<warren::JobEvent>,
}

impl Follower {
    /// Attaches to the end of `{ns}.events`.
    pub async fn start(broker: &Broker, names: &Names) -> Result<Self, warren::TopologyError> {
        let rx = warren::events::subscribe_from(broker, names, warren::events::From::Next).await?;
        Ok(Self { rx })
    }

    /// Waits until each of `messages` (step, message id) succeeded or died again at its step,
    /// or `deadline` passes.
    pub async fn wait(mut self, messages: &[(String, uuid::Uuid)], deadline: std::time::Duration) -> Fates {
        let mut open: std::collections::HashMap<uuid::Uuid, &str> =
            messages.iter().map(|(step, id)| (*id, step.as_str())).collect();
        let mut fates = Fates::default();
        let end = tokio::time::Instant::now() + deadline;
        while !open.is_empty() {
            let Ok(Some(event)) = tokio::time::timeout_at(end, self.rx.recv()).await else { break };
            if open.get(&event.message_id).is_none_or(|s| *s != &*event.step) {
                continue;
            }
            match event.kind {
                warren::EventKind::Succeeded => {
                    open.remove(&event.message_id);
                    fates.succeeded += 1;
                }
                warren::EventKind::Dead => {
                    open.remove(&event.message_id);
                    fates.dead_again.push((event.message_id, event.error.unwrap_or_default()));
                }
                _ => {}
            }
        }
        fates.pending = open.len();
        fates
    }
}

/// A dead letter's step queue does not exist: the step was never declared in this namespace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DlqError {
    /// No dead-letter queue for the step.
    #[error("no step {step:?} in namespace {namespace:?}: {queue} does not exist")]
    UnknownStep {
        /// The step asked for.
        step: String,
        /// Its namespace.
        namespace: String,
        /// The queue that is missing.
        queue: String,
    },
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// The error's shape: what stays when the parts that vary from one message to the next are
/// replaced — UUIDs and hex ids by `<id>`, numbers by `<n>`, quoted values by `"…"`, paths by
/// `<path>`. "row 6 is bad" and "row 7 is bad" are one group.
pub fn fingerprint(error: &str) -> String {
    let first = error.lines().next().unwrap_or("");
    fold_quotes(first).split_whitespace().map(normalise_word).collect::<Vec<_>>().join(" ")
}

/// Replaces what stands between `"…"`, `` `…` `` and `'…'` (a single quote only when it opens a
/// word, so "can't" stays) with `…`. An unbalanced quote keeps the rest as it is.
fn fold_quotes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(['"', '`', '\'']) {
        let q = rest[start..].chars().next().unwrap_or('"');
        let opens_word = q != '\'' || rest[..start].chars().last().is_none_or(|c| c.is_whitespace() || c == '(');
        let close = rest[start + 1..].find(q).filter(|_| opens_word);
        match close {
            Some(len) => {
                out.push_str(&rest[..start]);
                out.push(q);
                out.push('…');
                out.push(q);
                rest = &rest[start + 1 + len + 1..];
            }
            None => {
                out.push_str(&rest[..=start]);
                rest = &rest[start + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn normalise_word(word: &str) -> String {
    let core = word.trim_matches(|c: char| ",;:()[]{}.".contains(c));
    if core.is_empty() {
        return word.to_owned();
    }
    let (lead, rest) = word.split_at(word.find(core).unwrap_or(0));
    let trail = &rest[core.len()..];
    let hexish = core.len() >= 8 && core.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    let replaced = if core.contains('/') && core.len() > 1 && !core.contains('…') {
        "<path>".to_owned()
    } else if hexish && core.chars().any(|c| c.is_ascii_digit()) {
        "<id>".to_owned()
    } else {
        // Runs of digits (with a decimal point) become <n>.
        let mut s = String::with_capacity(core.len());
        let mut chars = core.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() {
                while chars.peek().is_some_and(|d| d.is_ascii_digit() || *d == '.' || *d == '_') {
                    chars.next();
                }
                s.push_str("<n>");
            } else {
                s.push(c);
            }
        }
        s
    };
    format!("{lead}{replaced}{trail}")
}

fn short_hash(bytes: &[u8], digits: usize) -> String {
    warren::artifacts::content_hash(bytes).trim_start_matches("sha256:")[..digits].to_owned()
}

/// When RabbitMQ dead-lettered a message itself: the `time` of its latest `x-death` entry.
fn x_death_ms(properties: &BasicProperties) -> Option<u64> {
    let AMQPValue::FieldArray(deaths) = properties.headers().as_ref()?.inner().get("x-death")? else { return None };
    deaths
        .as_slice()
        .iter()
        .filter_map(|d| match d {
            AMQPValue::FieldTable(t) => match t.inner().get("time")? {
                AMQPValue::Timestamp(secs) => Some(secs.saturating_mul(1000)),
                _ => None,
            },
            _ => None,
        })
        .max()
}

/// Reads a dead letter. Listing returns dead letters to their queue, which raises the broker's
/// `x-delivery-count` each time: that count says nothing about the failure, so it is left out.
pub(crate) fn dead_letter(step: &str, properties: BasicProperties, body: Vec<u8>) -> DeadLetter {
    let error = envelope::header_str(&properties, headers::ERROR).map(str::to_owned).unwrap_or_else(|| {
        if properties.headers().as_ref().is_some_and(|h| h.contains_key("x-death")) {
            "dead-lettered by RabbitMQ (see x-death)".to_owned()
        } else {
            String::new()
        }
    });
    let properties = envelope::with_headers(&properties, Vec::new());
    let message_id = properties.message_id().as_ref().map(|m| m.to_string()).filter(|m| !m.is_empty());
    let id = message_id.clone().unwrap_or_else(|| format!("body:{}", short_hash(&body, 16)));
    let kind = envelope::header_str(&properties, headers::ERROR_KIND).unwrap_or("broker").to_owned();
    let group = short_hash(format!("{step}\0{kind}\0{}", fingerprint(&error)).as_bytes(), 12);
    let failed_at_ms = envelope::header_int(&properties, headers::FAILED_AT)
        .map(|n| n.max(0) as u64)
        .or_else(|| x_death_ms(&properties))
        .unwrap_or(0);
    DeadLetter {
        step: step.to_owned(),
        message_id,
        id,
        group,
        job: envelope::job_of(&properties).map(str::to_owned),
        kind,
        failed_at_ms,
        error,
        properties,
        body,
    }
}

/// Header a replay sets on what it sends back, naming the replay run: a letter that dies again
/// during the same run carries it and is not taken again.
pub const REPLAY_RUN: &str = "warren-replay-run";

/// A channel on `step`'s dead-letter queue and how many letters it holds; a queue that does not
/// exist is an unknown step.
async fn open_dead_queue(
    broker: &Broker,
    names: &Names,
    step: &str,
    queue: &str,
) -> Result<(lapin::Channel, usize), DlqError> {
    let ch = broker.channel().await?;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    match ch.queue_declare(queue.into(), passive, FieldTable::default()).await {
        Ok(info) => Ok((ch, info.message_count() as usize)),
        Err(e) if warren::broker::is_not_found(&e) => Err(DlqError::UnknownStep {
            step: step.to_owned(),
            namespace: names.namespace().to_owned(),
            queue: queue.to_owned(),
        }),
        Err(e) => Err(BrokerError::Amqp { context: "dead-letter queue", source: e }.into()),
    }
}

/// Closing a channel returns every dead letter not acked to the queue, and a quorum queue takes
/// them back a moment later: waits (3 s at most) until `back` of them are ready again, so that a
/// command run right after this one (a replay after a listing) sees them.
async fn wait_requeued(broker: &Broker, queue: &str, back: usize) {
    if back == 0 {
        return;
    }
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while tokio::time::Instant::now() < end {
        let Ok(ch) = broker.channel().await else { break };
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let ready = ch.queue_declare(queue.into(), passive, FieldTable::default()).await.map(|q| q.message_count());
        let _ = ch.close(200, "counted".into()).await;
        match ready {
            Ok(n) if n as usize >= back => break,
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            Err(_) => break,
        }
    }
}

/// Walks the dead letters of `step` that are in its queue when the walk starts — no more, so
/// letters that die again while a replay runs are not taken again — calling `act` on each; a
/// dead letter for which `act` returns `true` is acked (removed), the others go back when the
/// walk ends. A letter marked with replay run `skip_run` (sent back by this very run and dead
/// again) is left alone.
async fn walk<F, Fut>(
    broker: &Broker,
    names: &Names,
    step: &str,
    skip_run: Option<&str>,
    mut act: F,
) -> Result<(), DlqError>
where
    F: FnMut(DeadLetter) -> Fut,
    Fut: std::future::Future<Output = Result<bool, BrokerError>>,
{
    let queue = names.dead_queue(step);
    let (ch, expected) = open_dead_queue(broker, names, step, &queue).await?;
    if expected == 0 {
        let _ = ch.close(200, "done".into()).await;
        return Ok(());
    }
    // No prefetch limit: the dead letters left alone stay unacked until the walk ends.
    ch.basic_qos(0, BasicQosOptions::default()).await.map_err(BrokerError::amqp("basic.qos"))?;
    let mut consumer = ch
        .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(BrokerError::amqp("consume dead letters"))?;
    let mut acked = 0usize;
    for _ in 0..expected {
        // Another client may hold some of them (a listing in progress): those are not waited for long.
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), consumer.next()).await;
        let Ok(Some(delivery)) = next else { break };
        let delivery = delivery.map_err(BrokerError::amqp("dead letter"))?;
        let acker = delivery.acker.clone();
        let d = dead_letter(step, delivery.properties, delivery.data);
        if skip_run.is_some() && envelope::header_str(&d.properties, REPLAY_RUN) == skip_run {
            continue;
        }
        if act(d).await? {
            acker.ack(BasicAckOptions::default()).await.map_err(BrokerError::amqp("ack dead letter"))?;
            acked += 1;
        }
    }
    // Closing the channel returns every dead letter not acked to the queue. A quorum queue takes
    // them back a moment later: wait (briefly) until they are ready again, so that a command run
    // right after this one (a replay after a listing) sees them.
    let _ = ch.close(200, "done".into()).await;
    wait_requeued(broker, &queue, expected.saturating_sub(acked)).await;
    Ok(())
}

/// The dead letters of `step` that match `filter`, left in place.
pub async fn list(broker: &Broker, names: &Names, step: &str, filter: &Filter) -> Result<Vec<DeadLetter>, DlqError> {
    let mut out = Vec::new();
    walk(broker, names, step, None, |d| {
        if filter.matches(&d) {
            out.push(d);
        }
        async { Ok(false) }
    })
    .await?;
    Ok(out)
}

/// Sends the dead letters of `step` that match `filter` back to the step queue: the original
/// body (with `set_params` applied to its hop, if any) and properties, the attempt count reset,
/// `warren-replayed` counting replays, `warren-replayed-error` keeping the error it died of and
/// `warren-replayed-from` naming the dead-letter queue it came from.
/// Each is published with a confirm before its dead letter is acked. With `dry_run` nothing moves.
pub async fn replay(
    broker: &Broker,
    names: &Names,
    step: &str,
    filter: &Filter,
    options: &ReplayOptions,
) -> Result<ReplayReport, DlqError> {
    let publisher = Publisher::new(broker.channel().await?).await?;
    let exchange = names.steps_exchange();
    let mut report = ReplayReport::default();
    let pause = options.rate_per_s.filter(|r| *r > 0.0).map(|r| std::time::Duration::from_secs_f64(1.0 / r));
    let run = uuid::Uuid::now_v7().to_string();
    walk(broker, names, step, Some(&run), |d| {
        let chosen = filter.matches(&d) && options.limit.is_none_or(|l| report.replayed < l);
        if chosen {
            report.replayed += 1;
            report.ids.push(d.id.clone());
            if let Ok(head) = envelope::EnvelopeHead::decode(&d.body) {
                report.messages.push((d.step.clone(), head.message_id));
            }
        } else {
            report.left += 1;
        }
        let (publisher, exchange, run) = (&publisher, &exchange, &run);
        async move {
            if !chosen || options.dry_run {
                return Ok(false);
            }
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
            }
            let mut marks = vec![(REPLAY_RUN, envelope::text(run.as_str()))];
            let body = if options.edit.is_empty() {
                d.body.clone()
            } else {
                match options.edit.apply(&d.body) {
                    Ok(b) => {
                        marks.push((EDITED, envelope::text(options.edit.describe().join("; "))));
                        b
                    }
                    Err(e) => {
                        tracing::warn!(id = %d.id, error = %e, "the edit does not fit this dead letter; left in place");
                        return Ok(false);
                    }
                }
            };
            let props = envelope::with_headers(&replay_properties(&d, &names.dead_queue(&d.step)), marks);
            publisher.publish(exchange, &d.step, &body, props).await?;
            Ok(true)
        }
    })
    .await?;
    let _ = publisher.channel().close(200, "done".into()).await;
    Ok(report)
}

/// Removes the dead letters of `step` that match `filter`; returns how many.
pub async fn purge(broker: &Broker, names: &Names, step: &str, filter: &Filter) -> Result<usize, DlqError> {
    let mut purged = 0;
    walk(broker, names, step, None, |d| {
        let hit = filter.matches(&d);
        purged += usize::from(hit);
        async move { Ok(hit) }
    })
    .await?;
    Ok(purged)
}

/// The properties a replayed message is published with.
fn replay_properties(d: &DeadLetter, from_queue: &str) -> BasicProperties {
    let mut table = FieldTable::default();
    let replays = envelope::header_int(&d.properties, headers::REPLAYED).unwrap_or(0) + 1;
    if let Some(h) = d.properties.headers() {
        for (k, v) in h.inner() {
            let drop = [
                headers::ERROR,
                headers::ERROR_KIND,
                headers::WORKER,
                headers::FAILED_AT,
                headers::ATTEMPT,
                headers::STEP,
                headers::REPLAYED,
                headers::DELIVERY_COUNT,
                REPLAY_RUN,
                EDITED,
                "x-death",
                "x-first-death-exchange",
                "x-first-death-queue",
                "x-first-death-reason",
            ];
            if !drop.contains(&k.as_str()) {
                table.insert(k.clone(), v.clone());
            }
        }
    }
    table.insert(headers::REPLAYED.into(), AMQPValue::LongLongInt(replays));
    table.insert("warren-replayed-error".into(), envelope::text(d.error.as_str()));
    table.insert("warren-replayed-from".into(), envelope::text(from_queue));
    d.properties.clone().with_headers(table)
}

impl DeadLetter {
    /// Its headers as JSON: text as strings, integers as numbers, anything else as lapin shows it.
    pub fn headers_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (k, v) in self.properties.headers().iter().flat_map(|h| h.inner()) {
            let value = match v {
                AMQPValue::LongString(s) => serde_json::Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
                AMQPValue::LongLongInt(n) => serde_json::Value::from(*n),
                other => serde_json::Value::String(format!("{other:?}")),
            };
            map.insert(k.to_string(), value);
        }
        serde_json::Value::Object(map)
    }
}

/// Dead letters of one step with one error shape: what an operator fixes and replays at once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailureGroup {
    /// The group id ([`DeadLetter::group`]).
    pub group: String,
    /// The step.
    pub step: String,
    /// The kind of the first letter seen (`permanent`, `exhausted`, `crash`, ...).
    pub kind: String,
    /// How many dead letters.
    pub count: usize,
    /// When the first and the last failed (ms since the epoch; 0 when unknown).
    pub first_ms: u64,
    /// See `first_ms`.
    pub last_ms: u64,
    /// One of its errors.
    pub sample: String,
    /// The error's shape ([`fingerprint`]).
    pub fingerprint: String,
    /// The jobs it holds.
    pub jobs: std::collections::BTreeSet<String>,
}

/// The failure groups of `letters`, largest first.
pub fn groups(letters: &[DeadLetter]) -> Vec<FailureGroup> {
    let mut by_key: std::collections::BTreeMap<(&str, &str), FailureGroup> = std::collections::BTreeMap::new();
    for d in letters {
        let g = by_key.entry((d.step.as_str(), d.group.as_str())).or_insert_with(|| FailureGroup {
            group: d.group.clone(),
            step: d.step.clone(),
            kind: d.kind.clone(),
            count: 0,
            first_ms: u64::MAX,
            last_ms: 0,
            sample: d.error.clone(),
            fingerprint: fingerprint(&d.error),
            jobs: Default::default(),
        });
        g.count += 1;
        g.first_ms = g.first_ms.min(d.failed_at_ms);
        g.last_ms = g.last_ms.max(d.failed_at_ms);
        g.jobs.extend(d.job.clone());
    }
    let mut out: Vec<FailureGroup> = by_key.into_values().collect();
    for g in &mut out {
        if g.first_ms == u64::MAX {
            g.first_ms = 0;
        }
    }
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.group.cmp(&b.group)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_resets_the_attempt_and_records_where_it_came_from() {
        let props = envelope::with_headers(
            &BasicProperties::default(),
            vec![
                (headers::JOB, envelope::text("j1")),
                (headers::ERROR, envelope::text("boom")),
                (headers::ERROR_KIND, envelope::text("permanent")),
                (headers::ATTEMPT, AMQPValue::LongLongInt(3)),
                (headers::REPLAYED, AMQPValue::LongLongInt(1)),
            ],
        );
        let d = dead_letter("train", props, vec![1, 2, 3]);
        assert_eq!((d.error.as_str(), d.kind.as_str(), d.job.as_deref()), ("boom", "permanent", Some("j1")));
        let replayed = replay_properties(&d, "ns.dead.train");
        assert_eq!(envelope::header_str(&replayed, headers::JOB), Some("j1"), "other headers stay");
        assert_eq!(envelope::header_int(&replayed, headers::ATTEMPT), None, "attempt starts again at 1");
        assert_eq!(envelope::header_str(&replayed, headers::ERROR), None);
        assert_eq!(envelope::header_int(&replayed, headers::REPLAYED), Some(2));
        assert_eq!(envelope::header_str(&replayed, "warren-replayed-error"), Some("boom"));
        assert_eq!(envelope::header_str(&replayed, "warren-replayed-from"), Some("ns.dead.train"));
    }

    #[test]
    fn letters_group_by_step_and_error_shape_largest_first() {
        let letter = |step: &str, job: &str, error: &str, at: u64| {
            let props = envelope::with_headers(
                &BasicProperties::default(),
                vec![
                    (headers::JOB, envelope::text(job)),
                    (headers::ERROR, envelope::text(error)),
                    (headers::FAILED_AT, AMQPValue::LongLongInt(at as i64)),
                ],
            );
            dead_letter(step, props, format!("{job}{error}").into_bytes())
        };
        let letters = vec![
            letter("validate", "j1", "row 6 is bad", 30),
            letter("validate", "j2", "row 9 is bad", 10),
            letter("train", "j3", "row 6 is bad", 20),
            letter("validate", "j2", "row 7 is bad", 20),
        ];
        let g = groups(&letters);
        assert_eq!(g.len(), 2, "{g:?}");
        assert_eq!((g[0].step.as_str(), g[0].count, g[0].first_ms, g[0].last_ms), ("validate", 3, 10, 30));
        assert_eq!(g[0].jobs.iter().map(String::as_str).collect::<Vec<_>>(), ["j1", "j2"]);
        assert_eq!((g[1].step.as_str(), g[1].count), ("train", 1));
        assert_eq!(g[0].fingerprint, "row <n> is bad");
    }

    #[test]
    fn errors_that_differ_in_values_share_a_fingerprint() {
        assert_eq!(fingerprint("row 6 is bad"), fingerprint("row 7 is bad"));
        assert_eq!(fingerprint("row 6 is bad"), "row <n> is bad");
        assert_eq!(
            fingerprint("column \"sepal length\" at row 12: not a number (3.5)"),
            "column \"…\" at row <n>: not a number (<n>)"
        );
        assert_eq!(
            fingerprint("column \"sepal length\" at row 12: not a number (3.5)"),
            fingerprint("column \"petal width\" at row 130: not a number (2)")
        );
        assert_eq!(
            fingerprint("cannot read /data/a.csv for job 01a2f3e4-55b6-7214-ac19-1429e0256756"),
            "cannot read <path> for job <id>"
        );
        assert_eq!(fingerprint("unknown field `max_iterations`"), "unknown field `…`");
        assert_eq!(fingerprint("it can't be 'x y' now"), "it can't be '…' now");
        assert_ne!(fingerprint("row 6 is bad"), fingerprint("row 6 is missing"));
        assert_eq!(fingerprint("only the first line\nnot this"), "only the first line");
        assert_eq!(fingerprint("unbalanced \"quote here"), "unbalanced \"quote here");
    }

    #[test]
    fn a_letter_without_a_message_id_is_named_by_its_body_and_the_listing_count_is_dropped() {
        let props = envelope::with_headers(
            &BasicProperties::default(),
            vec![(headers::DELIVERY_COUNT, AMQPValue::LongLongInt(4))],
        );
        let d = dead_letter("s", props, b"abc".to_vec());
        assert!(d.id.starts_with("body:") && d.id.len() == 21, "{}", d.id);
        assert_eq!(envelope::header_int(&d.properties, headers::DELIVERY_COUNT), None);
        let again = dead_letter("s", BasicProperties::default(), b"abc".to_vec());
        assert_eq!(again.id, d.id, "the same body, the same id");
    }

    #[test]
    fn since_falls_back_to_the_brokers_x_death_time() {
        use lapin::types::FieldArray;
        let mut death = FieldTable::default();
        death.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        let props = BasicProperties::default().with_headers({
            let mut t = FieldTable::default();
            t.insert("x-death".into(), AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])));
            t
        });
        let d = dead_letter("s", props, vec![]);
        assert_eq!(d.failed_at_ms, 1_700_000_000_000);
        assert_eq!(d.kind, "broker");
        assert!(Filter { since_ms: Some(1_600_000_000_000), ..Default::default() }.matches(&d));
    }

    #[test]
    fn edits_change_params_and_existing_payload_fields_only() {
        #[derive(serde::Serialize)]
        struct Cand {
            hyperparams: std::collections::BTreeMap<String, f64>,
        }
        #[derive(serde::Serialize)]
        struct Task {
            candidate: Cand,
            trial: u32,
        }
        let payload = warren::envelope::to_msgpack_value(&Task {
            candidate: Cand { hyperparams: [("max_iterations".to_owned(), 5.0)].into() },
            trial: 2,
        })
        .unwrap();
        let env = warren::Envelope {
            v: 1,
            job_id: uuid::Uuid::now_v7(),
            message_id: uuid::Uuid::now_v7(),
            causation_id: None,
            pipeline: "p".into(),
            slip: vec![
                warren::Hop::with_params(
                    "train",
                    &[("validation_fraction", 0.2), ("old", 1.0)]
                        .into_iter()
                        .collect::<std::collections::BTreeMap<_, _>>(),
                )
                .unwrap(),
            ],
            schema: "warren.ml.TrainTask/1".into(),
            payload,
        };
        let body = env.encode().unwrap();
        let edit = Edit {
            set: vec![("validation_fraction".into(), 0.3.into())],
            unset: vec!["old".into()],
            payload_set: vec![("candidate.hyperparams.max_iterations".into(), 500.into())],
        };
        let out = edit.apply_value(&body).unwrap();
        assert_eq!(out.message_id, env.message_id, "the edited message keeps its id");
        let params = out.slip[0].params.as_map().unwrap();
        assert_eq!(params.len(), 1);
        assert_eq!(params[0].1, rmpv::Value::from(0.3));
        let text = out.payload.to_string();
        assert!(text.contains("500"), "{text}");
        assert_eq!(
            edit.describe(),
            vec!["set validation_fraction=0.3", "unset old", "payload candidate.hyperparams.max_iterations=500"]
        );

        let typo = Edit { payload_set: vec![("candidate.hyperparams.max_iter".into(), 1.into())], ..Edit::default() };
        let err = typo.apply_value(&body).unwrap_err();
        assert!(err.contains("`candidate.hyperparams.max_iter`") && err.contains("max_iterations"), "{err}");
        let deep = Edit { payload_set: vec![("trial.x".into(), 1.into())], ..Edit::default() };
        assert!(deep.apply_value(&body).unwrap_err().contains("`trial` is not a map"));
        assert!(Edit::default().apply_value(b"junk").unwrap_err().contains("not a Warren envelope"));
    }

    #[test]
    fn filters_combine() {
        let d = dead_letter(
            "s",
            envelope::with_headers(
                &BasicProperties::default(),
                vec![
                    (headers::JOB, envelope::text("j1")),
                    (headers::ERROR, envelope::text("row 7 is bad")),
                    (headers::FAILED_AT, AMQPValue::LongLongInt(5_000)),
                ],
            ),
            vec![],
        );
        assert!(Filter::default().matches(&d));
        assert!(Filter { job: Some("j1".into()), since_ms: Some(4_000), ..Default::default() }.matches(&d));
        assert!(!Filter { job: Some("j2".into()), ..Default::default() }.matches(&d));
        assert!(!Filter { since_ms: Some(6_000), ..Default::default() }.matches(&d));
        let m: ErrorMatcher = std::sync::Arc::new(|e: &str| e.contains("row 7"));
        assert!(Filter { error_matches: Some(m), ..Default::default() }.matches(&d));
        assert!(Filter { group: Some(d.group[..6].to_owned()), ..Default::default() }.matches(&d));
        assert!(!Filter { group: Some("zzz".into()), ..Default::default() }.matches(&d));
        assert!(!Filter { group: Some(String::new()), ..Default::default() }.matches(&d));
    }
}
