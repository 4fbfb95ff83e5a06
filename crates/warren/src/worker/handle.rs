//! One message: read what is known of it, let [`decide`] say what to do, and carry that out in
//! one place — run the handler (or take the cached output), hand off with confirms, retry
//! through a delay queue, dead-letter, or drop — then ack.

use std::{sync::Arc, time::Instant};

use futures_util::future::join_all;
use lapin::{BasicProperties, message::Delivery, types::AMQPValue};
use uuid::Uuid;

use super::{
    Context, Handler, Session, Shared, StepOutput,
    decide::{Body, Decision, DeliveryFacts, Limits, Stage, decide},
};
use crate::{
    BrokerError, DeadKind, DeadNotice, DecodeError, EventKind, JobEvent, StepError,
    artifacts::content_hash,
    envelope::{self, Envelope, EnvelopeHead, Payload, headers},
    topology::Declarer,
};

/// What a delivery carries: the step's input, or news that one died upstream.
enum Input<I> {
    Payload(I),
    Notice(DeadNotice),
}

/// A decoded envelope, whatever its payload turned out to be.
struct Decoded<I> {
    job_id: Uuid,
    message_id: Uuid,
    causation_id: Option<Uuid>,
    pipeline: String,
    slip: Vec<envelope::Hop>,
    input: Input<I>,
}

impl<I> Decoded<I> {
    fn from_envelope<P>(env: Envelope<P>, wrap: impl FnOnce(P) -> Input<I>) -> Self {
        Self {
            job_id: env.job_id,
            message_id: env.message_id,
            causation_id: env.causation_id,
            pipeline: env.pipeline,
            slip: env.slip,
            input: wrap(env.payload),
        }
    }
    fn step(&self) -> &str {
        self.slip.first().map(|h| h.step.as_str()).unwrap_or_default()
    }
}

/// Who a message belongs to, as far as its body told: for dead letters and events.
struct Ids {
    job_id: Uuid,
    message_id: Uuid,
    pipeline: Arc<str>,
}

impl Ids {
    fn of(head: Option<&EnvelopeHead>) -> Self {
        match head {
            Some(h) => Self { job_id: h.job_id, message_id: h.message_id, pipeline: h.pipeline.as_str().into() },
            None => Self { job_id: Uuid::nil(), message_id: Uuid::nil(), pipeline: "".into() },
        }
    }
}

/// The outputs of a handler that succeeded, waiting for the hand-off.
struct Outputs<'a, P> {
    ctx: &'a Context,
    payloads: Vec<P>,
    started: Instant,
}

/// Why a publish did not end in a confirm.
pub(super) enum Unsettled {
    /// No queue is bound for it: a topology error, the message's own trouble.
    Unroutable(BrokerError),
    /// The consumer's channel is gone, so the input goes back to the queue by itself.
    Lost(BrokerError),
}

/// What a settle works with beyond its decision: the handler's outputs (a hand-off) or the
/// error it failed with (a retry).
enum Work<'a, P> {
    Nothing,
    Outputs(Outputs<'a, P>),
    Failed { ctx: &'a Context, error: &'a StepError },
}

impl<H> Shared<H> {
    pub(super) async fn handle<I, O>(&self, session: &Session, delivery: Delivery)
    where
        I: Payload,
        O: StepOutput,
        H: Handler<I, O>,
    {
        let w = &self.worker;
        let facts = DeliveryFacts::read(&delivery.properties, delivery.redelivered, w.retry.max_attempts);
        let limits = self.limits();
        let env = match self.decode::<I>(&delivery.data, &delivery.properties) {
            Ok(env) => env,
            Err((e, ids)) => {
                let decision = decide(&w.step, facts, Body::Undecodable(&e), limits, Stage::Received);
                return self.settle::<O::Payload>(session, &delivery, &ids, facts, decision, Work::Nothing).await;
            }
        };
        let duplicate = self.dedup.lock().map(|d| d.contains(&env.message_id)).unwrap_or(false);
        let cancelled = self.cancelled.contains(&env.job_id);
        let body = Body::Decoded { step: env.step(), duplicate, cancelled };
        let ids = Ids { job_id: env.job_id, message_id: env.message_id, pipeline: env.pipeline.as_str().into() };
        if facts.crashes > 0 {
            tracing::warn!(step = %w.step, job = %ids.job_id, message = %ids.message_id, crashes = facts.crashes,
                "redelivered without an ack: a worker died or lost the broker while handling it");
        }
        let decision = decide(&w.step, facts, body, limits, Stage::Received);
        if decision != Decision::Run {
            return self.settle::<O::Payload>(session, &delivery, &ids, facts, decision, Work::Nothing).await;
        }
        self.run(session, &delivery, env, ids, facts).await;
    }

    /// The schema id of what this step sends: its descriptor's for a handler of any payload.
    fn output_schema<P: Payload>(&self) -> &str {
        self.schemas.output.as_deref().unwrap_or(P::SCHEMA)
    }

    fn limits(&self) -> Limits {
        Limits { max_attempts: self.worker.retry.max_attempts, delivery_limit: self.worker.topology.delivery_limit }
    }

    /// The delivery's envelope, with its input or a dead notice; else why not and whose it is.
    fn decode<I: Payload>(&self, data: &[u8], props: &BasicProperties) -> Result<Decoded<I>, (DecodeError, Ids)> {
        let decoded = Envelope::<I>::decode_or_head(data);
        if let Ok(env) = &decoded
            && !self.worker.envelope_reads.contains(&env.v)
        {
            let reads =
                self.worker.envelope_reads.iter().map(|v| format!("version {v}")).collect::<Vec<_>>().join(", ");
            let e = DecodeError::NotRead { found: env.v, reads };
            tracing::warn!(step = %self.worker.step, error = %e, "undecodable message; dead-lettering it");
            return Err((e, Ids::of(EnvelopeHead::decode(data).ok().as_ref())));
        }
        if let Ok(env) = &decoded
            && let Some(r) = crate::compat::renamed(&env.schema)
        {
            let job = env.job_id.to_string();
            self.deprecations.old_schema(&self.worker.step, r, props, &job, &env.pipeline);
        }
        match decoded {
            // A handler of any payload still gets a dead notice as one.
            Ok(env) if I::SCHEMA == "*" && env.schema == DeadNotice::SCHEMA => Envelope::<DeadNotice>::decode(data)
                .map(|env| Decoded::from_envelope(env, Input::Notice))
                .map_err(|e| (e, Ids::of(EnvelopeHead::decode(data).ok().as_ref()))),
            Ok(env)
                if self.schemas.input.as_deref().is_some_and(|s| !crate::compat::schema_matches(s, &env.schema)) =>
            {
                let expected = self.schemas.input.clone().unwrap_or_default();
                let e = DecodeError::WrongSchema { expected, found: env.schema.clone() };
                tracing::warn!(step = %self.worker.step, error = %e, "undecodable message; dead-lettering it");
                Err((e, Ids::of(Some(&env.into_head()))))
            }
            Ok(env) => Ok(Decoded::from_envelope(env, Input::Payload)),
            Err((DecodeError::WrongSchema { found, .. }, _)) if found == DeadNotice::SCHEMA => {
                Envelope::<DeadNotice>::decode(data)
                    .map(|env| Decoded::from_envelope(env, Input::Notice))
                    .map_err(|e| (e, Ids::of(EnvelopeHead::decode(data).ok().as_ref())))
            }
            Err((e, head)) => {
                tracing::warn!(step = %self.worker.step, error = %e, "undecodable message; dead-lettering it");
                Err((e, Ids::of(head.as_deref())))
            }
        }
    }

    /// The handler's context for this delivery, and the input it is to run on.
    fn context<I>(
        &self,
        session: &Session,
        env: Decoded<I>,
        pipeline: Arc<str>,
        facts: DeliveryFacts,
    ) -> (Context, Input<I>, bool) {
        let w = &self.worker;
        let mut slip = env.slip;
        let hop = slip.remove(0);
        let ctx = Context {
            job_id: env.job_id,
            message_id: env.message_id,
            causation_id: env.causation_id,
            pipeline,
            step: w.step_name.clone(),
            attempt: facts.attempt,
            delivery_count: facts.crashes,
            worker: w.worker_id.clone(),
            next: slip.into(),
            params: hop.params,
            events: session.events.clone(),
            artifacts: w.artifacts.clone(),
            data_root: w.data_root.clone(),
            registry: w.registry.clone(),
            stop: Arc::default(),
        };
        (ctx, env.input, hop.cache)
    }

    /// Runs the handler (or takes the step cache's outputs), then decides and settles.
    async fn run<I, O>(&self, session: &Session, delivery: &Delivery, env: Decoded<I>, ids: Ids, facts: DeliveryFacts)
    where
        I: Payload,
        O: StepOutput,
        H: Handler<I, O>,
    {
        let w = &self.worker;
        let (ctx, input, cache) = self.context(session, env, ids.pipeline.clone(), facts);
        session.events.emit(ctx.event_base(EventKind::Started));
        let started = Instant::now();
        let cache_key = match (&w.artifacts, cache, &input) {
            (Some(_), true, Input::Payload(p)) => self.cache_key(&ctx, p),
            _ => None,
        };
        if let Some(payloads) = self.cached::<O::Payload>(cache_key.as_deref()).await {
            let key = cache_key.as_deref().unwrap_or_default();
            ctx.report(rmpv::Value::Map(vec![("cache".into(), "hit".into()), ("key".into(), key.into())]));
            let outputs = Outputs { ctx: &ctx, payloads, started };
            return self.settle(session, delivery, &ids, facts, Decision::HandOff, Work::Outputs(outputs)).await;
        }
        let result = self.call(&ctx, input).await;
        // The run is over (or out of time): blocking work it started stops now.
        ctx.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(output) => {
                let payloads = output.map(StepOutput::into_payloads).unwrap_or_default();
                self.store_cached(cache_key.as_deref(), &payloads).await;
                let decision = decide(&w.step, facts, body_ok(), self.limits(), Stage::Succeeded);
                let outputs = Outputs { ctx: &ctx, payloads, started };
                self.settle(session, delivery, &ids, facts, decision, Work::Outputs(outputs)).await;
            }
            Err(error) => {
                let decision = decide(&w.step, facts, body_ok(), self.limits(), Stage::Failed(&error));
                let work: Work<'_, O::Payload> = Work::Failed { ctx: &ctx, error: &error };
                self.settle(session, delivery, &ids, facts, decision, work).await;
            }
        }
    }

    /// The handler on `input` (or on news that it died upstream), within the step's maximum
    /// duration.
    async fn call<I, O>(&self, ctx: &Context, input: Input<I>) -> Result<Option<O>, StepError>
    where
        I: Payload,
        O: StepOutput,
        H: Handler<I, O>,
    {
        let w = &self.worker;
        let call = async {
            match input {
                Input::Payload(p) => self.handler.call(ctx.clone(), p).await.map(Some),
                Input::Notice(n) => {
                    tracing::info!(step = %w.step, job = %ctx.job_id, dead = %n.message_id, at = %n.step,
                        "a message bound for this step died upstream");
                    self.handler.dead_upstream(ctx.clone(), n).await
                }
            }
        };
        match w.handler_limit {
            Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                Err(StepError::retryable(format!("step ran longer than its maximum duration of {limit:?}")))
            }),
            None => call.await,
        }
    }

    /// The step cache's outputs under `key`, if it holds them.
    async fn cached<P: Payload>(&self, key: Option<&str>) -> Option<Vec<P>> {
        let (key, store) = (key?, self.worker.artifacts.as_ref()?);
        let bytes = Box::pin(store.get_opt(key)).await.ok()??;
        rmp_serde::from_slice::<Vec<P>>(&bytes).ok()
    }

    /// Keeps `payloads` in the step cache under `key` (a failure is only logged).
    async fn store_cached<P: Payload>(&self, key: Option<&str>, payloads: &[P]) {
        let w = &self.worker;
        let (Some(key), Some(store)) = (key, &w.artifacts) else { return };
        match rmp_serde::to_vec_named(payloads) {
            Ok(bytes) => {
                if let Err(e) = Box::pin(store.put(key, bytes)).await {
                    tracing::warn!(step = %w.step, error = %e, "cannot write the step cache");
                }
            }
            Err(e) => tracing::warn!(step = %w.step, error = %e, "cannot encode outputs for the cache"),
        }
    }

    /// Carries out every decision on a delivery in one place: drop, cancel, hand off, retry or
    /// dead-letter. A hand-off the broker returns as unroutable, or whose output cannot be
    /// encoded, is decided again and dead-lettered.
    async fn settle<P: Payload>(
        &self,
        session: &Session,
        delivery: &Delivery,
        ids: &Ids,
        facts: DeliveryFacts,
        mut decision: Decision,
        mut work: Work<'_, P>,
    ) {
        let w = &self.worker;
        loop {
            match decision {
                Decision::Drop => {
                    tracing::debug!(step = %w.step, message = %ids.message_id, "duplicate of a completed message; dropped");
                    self.metrics.duplicate.increment(1);
                    session.acks.ack(delivery.delivery_tag, &delivery.acker);
                    return;
                }
                Decision::Cancel => {
                    session.acks.ack(delivery.delivery_tag, &delivery.acker);
                    tracing::info!(step = %w.step, job = %ids.job_id, message = %ids.message_id,
                        "job cancelled; message dropped");
                    self.metrics.cancelled.increment(1);
                    session.events.emit(self.event_for(ids, EventKind::Cancelled, facts));
                    return;
                }
                // Run is what `handle` does before it settles: never a decision to carry out here.
                Decision::Run => return,
                Decision::Retry { .. } => {
                    if let Work::Failed { ctx, error } = work {
                        Box::pin(self.retry(session, delivery, ctx, error)).await;
                    }
                    return;
                }
                Decision::DeadLetter { kind, reason } => {
                    Box::pin(self.dead_letter(session, delivery, ids, kind, &reason, facts)).await;
                    return;
                }
                Decision::HandOff => {
                    let Work::Outputs(out) = std::mem::replace(&mut work, Work::Nothing) else { return };
                    let (unroutable, reason) = match Box::pin(self.hand_off(session, delivery, out)).await {
                        Ok(()) | Err(HandOffError::Lost) => return,
                        Err(HandOffError::Unencodable(e)) => (false, e.to_string()),
                        Err(HandOffError::Unroutable(e)) => (true, e.to_string()),
                    };
                    let stage = if unroutable { Stage::Unroutable(&reason) } else { Stage::Unencodable(&reason) };
                    decision = decide(&w.step, facts, body_ok(), self.limits(), stage);
                }
            }
        }
    }

    /// `cache/{step}/{sha256 of step, version, params and input}`: the same input with the same
    /// parameters to the same step version finds the earlier outputs.
    fn cache_key<P: Payload>(&self, ctx: &Context, input: &P) -> Option<String> {
        let w = &self.worker;
        let mut material = Vec::new();
        material.extend_from_slice(w.step.as_bytes());
        material.push(0);
        material.extend_from_slice(w.version.as_bytes());
        material.push(0);
        material.extend_from_slice(&rmp_serde::to_vec_named(&ctx.params).ok()?);
        material.extend_from_slice(&rmp_serde::to_vec_named(input).ok()?);
        let hash = content_hash(&material);
        Some(format!("cache/{}/{}.msgpack", w.step, hash.trim_start_matches("sha256:")))
    }

    /// The confirmed hand-off: publish every output, wait for all confirms (publishing again
    /// whatever the broker nacks), then ack the input.
    async fn hand_off<P: Payload>(
        &self,
        session: &Session,
        delivery: &Delivery,
        out: Outputs<'_, P>,
    ) -> Result<(), HandOffError> {
        let w = &self.worker;
        let Outputs { ctx, payloads, started } = out;
        let outputs = if ctx.next.is_empty() { 0 } else { payloads.len() };
        if ctx.next.is_empty()
            && let Some(reply_to) = delivery.properties.reply_to()
            && let Some(payload) = payloads.first()
        {
            let out = ctx.cause().message(&w.step, 0, &[], self.output_schema::<P>(), payload);
            Box::pin(self.reply(session, delivery, reply_to.as_str(), out)).await;
        }
        if let Some(next) = ctx.next.first() {
            // Straight to the next step's queue through the default exchange: no routing-table
            // lookup in the broker; `mandatory` still returns it if the queue does not exist.
            let queue = w.names.step_queue(&next.step);
            let queue = queue.as_str();
            let mut bodies = Vec::with_capacity(payloads.len());
            let version = self.readers.envelope_for(&next.step);
            for (i, payload) in payloads.iter().enumerate() {
                let mut out = ctx.cause().message(&w.step, i, &ctx.next, self.output_schema::<P>(), payload);
                out.v = version;
                bodies.push(out.to_message(&next.step).map_err(HandOffError::Unencodable)?);
            }
            self.record_outputs(ctx, &next.step, &payloads).await;
            let sends = bodies
                .into_iter()
                .map(|(body, props)| async move { self.publish(session, "", queue, &body, props).await });
            for result in join_all(sends).await {
                match result {
                    Ok(()) => {}
                    Err(Unsettled::Unroutable(e)) => return Err(HandOffError::Unroutable(e)),
                    Err(Unsettled::Lost(e)) => {
                        // The consumer's channel is gone: the broker returns the input to the queue
                        // and the same output ids are derived again.
                        tracing::warn!(step = %w.step, error = %e, "cannot hand off output; input left for redelivery");
                        return Err(HandOffError::Lost);
                    }
                }
            }
        }
        // Outputs confirmed: the input is done with. Should the ack not arrive (the channel just
        // went), the broker redelivers it and the same output ids are derived again.
        session.acks.ack(delivery.delivery_tag, &delivery.acker);
        if let Ok(mut d) = self.dedup.lock() {
            d.insert(ctx.message_id);
        }
        self.metrics.succeeded.increment(1);
        self.metrics.handler_seconds.record(started.elapsed().as_secs_f64());
        let mut event = ctx.event_base(EventKind::Succeeded);
        event.duration_ms = Some(started.elapsed().as_millis() as u64);
        event.outputs = outputs as u32;
        event.last_step = ctx.next.is_empty();
        session.events.emit(event);
        Ok(())
    }

    /// A worker with an artifact store records what it hands on, so `warren rerun --from` can
    /// start a new job at the next step from this job's results. Content-addressed: a
    /// redelivered input writes the same bytes to the same key.
    async fn record_outputs<P: Payload>(&self, ctx: &Context, next: &str, payloads: &[P]) {
        let Some(store) = &self.worker.artifacts else { return };
        for payload in payloads {
            let record = RecordedInput { schema: self.output_schema::<P>(), slip: &ctx.next, payload };
            let Ok(bytes) = rmp_serde::to_vec_named(&record) else { continue };
            let key = inputs_key(&ctx.pipeline, ctx.job_id, next, &bytes);
            if let Err(e) = Box::pin(store.put(&key, bytes)).await {
                tracing::warn!(step = %self.worker.step, error = %e, "cannot record the output for reruns");
            }
        }
    }

    /// Publishes with a confirm until the broker takes the message. A nack, a lost confirm or a
    /// broken publishing channel is the broker's trouble (a leader election, a node going away):
    /// the same bytes (same message id) go out again on a fresh channel with backoff, for as long
    /// as the input can still be acked. Only a message that no queue can take is refused.
    pub(super) async fn publish(
        &self,
        session: &Session,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), Unsettled> {
        let mut failures = 0u32;
        loop {
            let publisher = session.publisher.get().await;
            let error = match publisher.publish(exchange, routing_key, body, props.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_unroutable() => return Err(Unsettled::Unroutable(e)),
                Err(e) => e,
            };
            if !session.consumer.status().connected() {
                return Err(Unsettled::Lost(error));
            }
            failures += 1;
            self.metrics.republished.increment(1);
            if failures == 1 || failures.is_multiple_of(10) {
                tracing::warn!(step = %self.worker.step, error = %error, failures,
                    "the broker did not confirm a publish; publishing it again on a fresh channel");
            }
            session.publisher.replace(&publisher).await;
            tokio::time::sleep(super::backoff(failures, 50, 5_000)).await;
        }
    }

    /// Answers an RPC request (with its output, or the error it failed with): the message goes
    /// to `reply_to` with the request's correlation id. A caller that has gone away is logged at
    /// debug level, not an error of the step.
    async fn reply<P: Payload>(
        &self,
        session: &Session,
        delivery: &Delivery,
        reply_to: &str,
        out: envelope::EnvelopeRef<'_, P>,
    ) {
        let Ok((body, mut props)) = out.to_message("") else { return };
        if let Some(c) = delivery.properties.correlation_id() {
            props = props.with_correlation_id(c.clone());
        }
        // Not mandatory: direct reply-to routes to a caller that may have gone, and a return
        // there is no fault of the step.
        let publisher = session.publisher.get().await;
        if let Err(e) = publisher.publish_optional("", reply_to, &body, props).await {
            tracing::debug!(step = %self.worker.step, error = %e, "cannot deliver the RPC reply (caller gone?)");
        }
    }

    async fn retry(&self, session: &Session, delivery: &Delivery, ctx: &Context, error: &StepError) {
        let w = &self.worker;
        let delay = w.retry.delay(ctx.attempt);
        let delay_ms = delay.as_millis() as u64;
        let props = envelope::with_headers(
            &delivery.properties,
            vec![
                (headers::ATTEMPT, AMQPValue::LongLongInt(i64::from(ctx.attempt) + 1)),
                (headers::ERROR, envelope::text(error.message())),
            ],
        );
        // A delay queue deletes itself a minute after its last use, so one the session declared
        // may have gone: declare it again once and publish again.
        for fresh in [false, true] {
            let queue = match session.delays.queue(&session.broker, &w.names, &w.step, delay_ms, fresh).await {
                Ok(q) => q,
                Err(e) => {
                    tracing::warn!(step = %w.step, error = %e, "cannot declare the retry queue; input left for redelivery");
                    return;
                }
            };
            match self.publish(session, "", &queue, &delivery.data, props.clone()).await {
                Ok(()) => {
                    session.delays.published(&queue);
                    break;
                }
                Err(Unsettled::Unroutable(_)) if !fresh => continue,
                Err(Unsettled::Unroutable(e) | Unsettled::Lost(e)) => {
                    tracing::warn!(step = %w.step, error = %e, "cannot publish the retry; input left for redelivery");
                    return;
                }
            }
        }
        session.acks.ack(delivery.delivery_tag, &delivery.acker);
        tracing::info!(step = %w.step, job = %ctx.job_id, attempt = ctx.attempt, delay_ms, error = %error, "retrying later");
        self.metrics.retried.increment(1);
        self.metrics.retries.increment(1);
        let mut event = ctx.event_base(EventKind::Retrying);
        event.delay_ms = Some(delay_ms);
        event.error = Some(error.message().to_owned());
        session.events.emit(event);
    }

    /// Publishes the original body, byte for byte, to the step's dead-letter queue with headers
    /// saying why, then acks the input. If the dead-letter queue has gone, the step's topology
    /// is declared again; if the publish still fails the input stays with the broker.
    async fn dead_letter(
        &self,
        session: &Session,
        delivery: &Delivery,
        ids: &Ids,
        kind: DeadKind,
        reason: &str,
        facts: DeliveryFacts,
    ) {
        let w = &self.worker;
        let mut extra = vec![
            (headers::ERROR, envelope::text(reason)),
            (headers::ERROR_KIND, envelope::text(kind.as_str())),
            (headers::STEP, envelope::text(w.step.as_str())),
            (headers::ATTEMPT, AMQPValue::LongLongInt(i64::from(facts.attempt))),
            (headers::WORKER, envelope::text(&*w.worker_id)),
            (headers::FAILED_AT, AMQPValue::LongLongInt(envelope::now_ms() as i64)),
        ];
        if let Some(job) = job_header(ids, delivery) {
            extra.push((headers::JOB, envelope::text(job)));
        }
        let props = envelope::with_headers(&delivery.properties, extra);
        // An RPC caller is told at once, not left to time out.
        if let Some(reply_to) = delivery.properties.reply_to() {
            let error = envelope::RemoteError {
                kind: kind.as_str().to_owned(),
                step: w.step.clone(),
                message: reason.to_owned(),
            };
            let cause = envelope::Cause { job_id: ids.job_id, message_id: ids.message_id, pipeline: &ids.pipeline };
            let out = cause.message("error", 0, &[], envelope::ERROR_SCHEMA, &error);
            self.reply(session, delivery, reply_to.as_str(), out).await;
        }
        let mut published = self.publish(session, &w.dead_exchange, &w.step, &delivery.data, props.clone()).await;
        if let Err(Unsettled::Unroutable(_)) = published {
            let mut declarer = Declarer::new(&session.broker, &w.names);
            if declarer.step(&w.topology).await.is_ok() {
                published = self.publish(session, &w.dead_exchange, &w.step, &delivery.data, props).await;
            }
        }
        if let Err(Unsettled::Unroutable(e) | Unsettled::Lost(e)) = published {
            tracing::error!(step = %w.step, error = %e, "cannot dead-letter a message; it stays with the broker");
            return;
        }
        if !self.notify_gatherer(session, delivery, kind, reason).await {
            return; // the input stays with the broker; a redelivery dead-letters and notifies again
        }
        session.acks.ack(delivery.delivery_tag, &delivery.acker);
        tracing::warn!(step = %w.step, kind = %kind, error = %reason, "message dead-lettered");
        self.metrics.dead_letter(kind);
        session.events.emit(JobEvent {
            delivery_count: facts.crashes,
            error: Some(reason.to_owned()),
            error_kind: Some(kind.as_str().to_owned()),
            ..self.event_for(ids, EventKind::Dead, facts)
        });
    }
}

impl<H> Shared<H> {
    /// An event of this worker about the message `ids` names.
    fn event_for(&self, ids: &Ids, kind: EventKind, facts: DeliveryFacts) -> JobEvent {
        let w = &self.worker;
        JobEvent::new(
            kind,
            ids.job_id,
            ids.message_id,
            ids.pipeline.clone(),
            w.step_name.clone(),
            w.worker_id.clone(),
            facts.attempt,
        )
    }

    /// When the next hop gathers a fan-out, tells it that this message (handled, and dead) will
    /// not come, with a [`DeadNotice`]. Only for failures of the step itself (`permanent`,
    /// `exhausted`, `crash`): a body that is not what this step takes tells nothing reliable.
    /// Returns false when the notice could not be published.
    async fn notify_gatherer(&self, session: &Session, delivery: &Delivery, kind: DeadKind, reason: &str) -> bool {
        let w = &self.worker;
        if !matches!(kind, DeadKind::Permanent | DeadKind::Exhausted | DeadKind::Crash) {
            return true;
        }
        let Ok(env) = Envelope::<rmpv::Value>::decode(&delivery.data) else { return true };
        let Some(next) = env.slip.get(1).filter(|h| h.gather) else { return true };
        let notice = DeadNotice {
            message_id: env.message_id,
            step: w.step.clone(),
            kind: kind.as_str().to_owned(),
            reason: reason.to_owned(),
            payload: env.payload.clone(),
        };
        let cause = envelope::Cause { job_id: env.job_id, message_id: env.message_id, pipeline: &env.pipeline };
        let mut out = cause.message("dead-notice", 0, &env.slip[1..], DeadNotice::SCHEMA, &notice);
        out.v = self.readers.envelope_for(&next.step);
        let Ok((body, props)) = out.to_message(&next.step) else { return true };
        let queue = w.names.step_queue(&next.step);
        match self.publish(session, "", &queue, &body, props).await {
            Ok(()) => true,
            Err(Unsettled::Unroutable(e)) => {
                tracing::error!(step = %w.step, error = %e, "no queue for the gathering step {}; it is not told", next.step);
                true
            }
            Err(Unsettled::Lost(_)) => false,
        }
    }
}

/// The job of a dead letter: from its envelope, else from its properties (a body too broken to
/// read), if either says.
fn job_header(ids: &Ids, delivery: &Delivery) -> Option<String> {
    if !ids.job_id.is_nil() {
        return Some(ids.job_id.to_string());
    }
    envelope::job_of(&delivery.properties).filter(|j| !j.is_empty()).map(str::to_owned)
}

/// A step input as recorded for reruns: the envelope without its ids.
#[derive(Debug, serde::Serialize)]
pub struct RecordedInput<'a, P> {
    /// The payload's schema id.
    pub schema: &'a str,
    /// The routing slip from the step on.
    pub slip: &'a [envelope::Hop],
    /// The payload.
    pub payload: &'a P,
}

/// Where a recorded step input lives in the artifact store:
/// `{pipeline}/{job}/{step}/inputs/{first 16 hex digits of its SHA-256}.msgpack`.
pub fn inputs_key(pipeline: &str, job: Uuid, step: &str, record: &[u8]) -> String {
    let hash = content_hash(record);
    format!("{}{}.msgpack", inputs_prefix(pipeline, job, step), &hash.trim_start_matches("sha256:")[..16])
}

/// The folder of a step's recorded inputs for one job.
pub fn inputs_prefix(pipeline: &str, job: Uuid, step: &str) -> String {
    format!("{pipeline}/{job}/{step}/inputs/")
}

/// A decoded body addressed to this step: what the decisions after the handler ran assume.
fn body_ok() -> Body<'static> {
    Body::Decoded { step: "", duplicate: false, cancelled: false }
}

enum HandOffError {
    Lost,
    Unencodable(rmp_serde::encode::Error),
    Unroutable(BrokerError),
}
