//! One message: decode, dedup, run the handler (or take the cached output), then hand off with
//! confirms, retry through a delay queue, or dead-letter, and ack.

use std::time::Instant;

use futures_util::future::join_all;
use lapin::{message::Delivery, options::BasicAckOptions, types::AMQPValue};

use super::{Context, Handler, Session, Shared, StepOutput};
use crate::{
    DeadKind, EventKind, JobEvent, StepError,
    artifacts::content_hash,
    envelope::{self, Envelope, EnvelopeHead, EnvelopeMeta, Payload, headers},
    topology::Declarer,
};

impl<H> Shared<H> {
    pub(super) async fn handle<I, O>(&self, session: &Session, delivery: Delivery)
    where
        I: Payload,
        O: StepOutput,
        H: Handler<I, O>,
    {
        let w = &self.worker;
        let props = &delivery.properties;
        let attempt = envelope::header_int(props, headers::ATTEMPT).map_or(1, |a| a.max(1) as u32);
        let delivery_count = envelope::header_int(props, headers::DELIVERY_COUNT).map_or(0, |n| n.max(0) as u32);

        let env = match Envelope::<I>::decode(&delivery.data) {
            Ok(env) => env,
            Err(e) => {
                let head = EnvelopeHead::decode(&delivery.data).ok();
                tracing::warn!(step = %w.step, error = %e, "undecodable message; dead-lettering it");
                self.dead_letter(session, &delivery, head.as_ref(), DeadKind::Poison, &e.to_string(), attempt).await;
                return;
            }
        };
        if env.step() != w.step {
            let head = EnvelopeHead::decode(&delivery.data).ok();
            let reason = format!("message is addressed to step {:?}, not {:?}", env.step(), w.step);
            self.dead_letter(session, &delivery, head.as_ref(), DeadKind::Misrouted, &reason, attempt).await;
            return;
        }
        let is_duplicate = self.dedup.lock().map(|d| d.contains(&env.message_id)).unwrap_or(false);
        if is_duplicate {
            tracing::debug!(step = %w.step, message = %env.message_id, "duplicate of a completed message; dropped");
            self.metrics.duplicate.increment(1);
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            return;
        }

        let mut slip = env.slip;
        let hop = slip.remove(0);
        let ctx = Context {
            job_id: env.job_id,
            message_id: env.message_id,
            pipeline: env.pipeline.into(),
            step: w.step_name.clone(),
            attempt,
            delivery_count,
            worker: w.worker_id.clone(),
            next: slip.into(),
            params: hop.params,
            events: session.events.clone(),
            artifacts: w.artifacts.clone(),
        };
        if delivery_count > 0 || delivery.redelivered {
            tracing::warn!(step = %w.step, job = %ctx.job_id, message = %ctx.message_id, delivery_count,
                "redelivered without an ack: a worker crashed or timed out while handling it");
        }
        if delivery_count >= w.topology.delivery_limit {
            let reason = format!(
                "delivered {} times without an ack: it crashes or stalls every worker that takes it",
                delivery_count + 1
            );
            tracing::error!(step = %w.step, job = %ctx.job_id, message = %ctx.message_id, "{reason}");
            let head = EnvelopeHead::decode(&delivery.data).ok();
            self.dead_letter(session, &delivery, head.as_ref(), DeadKind::Crash, &reason, attempt).await;
            return;
        }

        session.events.emit(ctx.event_base(EventKind::Started));
        let started = Instant::now();
        let cache_key = match (&w.artifacts, hop.cache) {
            (Some(_), true) => self.cache_key(&ctx, &env.payload),
            _ => None,
        };
        if let (Some(key), Some(store)) = (&cache_key, &w.artifacts)
            && let Ok(Some(bytes)) = store.get_opt(key).await
            && let Ok(outputs) = rmp_serde::from_slice::<Vec<O::Payload>>(&bytes)
        {
            ctx.report(rmpv::Value::Map(vec![("cache".into(), "hit".into()), ("key".into(), key.as_str().into())]));
            self.hand_off(session, &delivery, &ctx, outputs, started).await;
            return;
        }
        let call = self.handler.call(ctx.clone(), env.payload);
        let result = match w.topology.max_duration {
            Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                Err(StepError::retryable(format!("step ran longer than its maximum duration of {limit:?}")))
            }),
            None => call.await,
        };
        match result {
            Ok(output) => {
                let outputs = output.into_payloads();
                if let (Some(key), Some(store)) = (&cache_key, &w.artifacts) {
                    match rmp_serde::to_vec_named(&outputs) {
                        Ok(bytes) => {
                            if let Err(e) = store.put(key, bytes).await {
                                tracing::warn!(step = %w.step, error = %e, "cannot write the step cache");
                            }
                        }
                        Err(e) => tracing::warn!(step = %w.step, error = %e, "cannot encode outputs for the cache"),
                    }
                }
                self.hand_off(session, &delivery, &ctx, outputs, started).await
            }
            Err(e) if e.is_retryable() && attempt < w.retry.max_attempts => {
                self.retry(session, &delivery, &ctx, &e).await
            }
            Err(e) => {
                let kind = if e.is_retryable() { DeadKind::Exhausted } else { DeadKind::Permanent };
                let reason = match kind {
                    DeadKind::Exhausted => format!("{} (after {attempt} attempts)", e.message()),
                    _ => e.message().to_owned(),
                };
                let head = EnvelopeHead::decode(&delivery.data).ok();
                self.dead_letter(session, &delivery, head.as_ref(), kind, &reason, attempt).await;
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

    /// The confirmed hand-off: publish every output, wait for all confirms, then ack the input.
    async fn hand_off<P: Payload>(
        &self,
        session: &Session,
        delivery: &Delivery,
        ctx: &Context,
        payloads: Vec<P>,
        started: Instant,
    ) {
        let w = &self.worker;
        let outputs = if ctx.next.is_empty() { 0 } else { payloads.len() };
        if ctx.next.is_empty()
            && let Some(reply_to) = delivery.properties.reply_to()
        {
            self.reply(session, delivery, ctx, reply_to.as_str(), payloads.first()).await;
        }
        if let Some(next) = ctx.next.first() {
            let exchange = &w.steps_exchange;
            let mut sends = Vec::with_capacity(payloads.len());
            for (i, payload) in payloads.into_iter().enumerate() {
                let out = envelope::EnvelopeRef {
                    v: envelope::ENVELOPE_VERSION,
                    job_id: ctx.job_id,
                    message_id: envelope::derive_message_id(ctx.message_id, &w.step, i),
                    causation_id: Some(ctx.message_id),
                    pipeline: &ctx.pipeline,
                    slip: &ctx.next,
                    schema: P::SCHEMA,
                    payload: &payload,
                };
                let body = match out.encode() {
                    Ok(b) => b,
                    Err(e) => {
                        let reason = format!("cannot encode the step's output: {e}");
                        let head = EnvelopeHead::decode(&delivery.data).ok();
                        self.dead_letter(session, delivery, head.as_ref(), DeadKind::Permanent, &reason, ctx.attempt)
                            .await;
                        return;
                    }
                };
                let meta = EnvelopeMeta {
                    job_id: ctx.job_id,
                    message_id: out.message_id,
                    step: &next.step,
                    schema: out.schema,
                };
                let props = envelope::properties(&meta, 1);
                sends.push(async move { session.publisher.publish(exchange, &next.step, &body, props).await });
            }
            let results = join_all(sends).await;
            if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
                if e.is_refused() {
                    let reason = format!("output for step {:?} was refused: {e}", next.step);
                    let head = EnvelopeHead::decode(&delivery.data).ok();
                    self.dead_letter(session, delivery, head.as_ref(), DeadKind::Unroutable, &reason, ctx.attempt)
                        .await;
                } else {
                    // The connection is going: leave the input unacked, the broker redelivers it and
                    // the same output ids are derived again.
                    tracing::warn!(step = %w.step, error = %e, "cannot hand off output; input left for redelivery");
                }
                return;
            }
        }
        if delivery.acker.ack(BasicAckOptions::default()).await.is_err() {
            return; // the channel went away; the broker redelivers and dedup/idempotence absorb it
        }
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
    }

    /// Answers an RPC request: the output goes to `reply_to` with the request's correlation id.
    /// A caller that has gone away is logged, not an error of the step.
    async fn reply<P: Payload>(
        &self,
        session: &Session,
        delivery: &Delivery,
        ctx: &Context,
        reply_to: &str,
        payload: Option<&P>,
    ) {
        let Some(payload) = payload else { return };
        let out = envelope::EnvelopeRef {
            v: envelope::ENVELOPE_VERSION,
            job_id: ctx.job_id,
            message_id: envelope::derive_message_id(ctx.message_id, &self.worker.step, 0),
            causation_id: Some(ctx.message_id),
            pipeline: &ctx.pipeline,
            slip: &[],
            schema: P::SCHEMA,
            payload,
        };
        let Ok(body) = out.encode() else { return };
        let meta = EnvelopeMeta { job_id: ctx.job_id, message_id: out.message_id, step: "", schema: P::SCHEMA };
        let mut props = envelope::properties(&meta, 1);
        if let Some(c) = delivery.properties.correlation_id() {
            props = props.with_correlation_id(c.clone());
        }
        if let Err(e) = session.publisher.publish("", reply_to, &body, props).await {
            tracing::warn!(step = %self.worker.step, error = %e, "cannot deliver the RPC reply (caller gone?)");
        }
    }

    async fn retry(&self, session: &Session, delivery: &Delivery, ctx: &Context, error: &StepError) {
        let w = &self.worker;
        let delay = w.retry.delay(ctx.attempt);
        let delay_ms = delay.as_millis() as u64;
        let mut declarer = Declarer::new(&session.broker, &w.names);
        let queue = match declarer.retry_queue(&w.step, delay_ms).await {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(step = %w.step, error = %e, "cannot declare the retry queue; input left for redelivery");
                return;
            }
        };
        let props = envelope::with_headers(
            &delivery.properties,
            vec![
                (headers::ATTEMPT, AMQPValue::LongLongInt(i64::from(ctx.attempt) + 1)),
                (headers::ERROR, envelope::text(error.message())),
            ],
        );
        if let Err(e) = session.publisher.publish("", &queue, &delivery.data, props).await {
            tracing::warn!(step = %w.step, error = %e, "cannot publish the retry; input left for redelivery");
            return;
        }
        if delivery.acker.ack(BasicAckOptions::default()).await.is_err() {
            return;
        }
        tracing::info!(step = %w.step, job = %ctx.job_id, attempt = ctx.attempt, delay_ms, error = %error, "retrying later");
        self.metrics.retried.increment(1);
        metrics::counter!("warren_retries_total", "step" => w.step.clone()).increment(1);
        let mut event = ctx.event_base(EventKind::Retrying);
        event.delay_ms = Some(delay_ms);
        event.error = Some(error.message().to_owned());
        session.events.emit(event);
    }

    /// Publishes the original body, byte for byte, to the step's dead-letter queue with headers
    /// saying why, then acks the input. If the publish fails the input stays unacked.
    async fn dead_letter(
        &self,
        session: &Session,
        delivery: &Delivery,
        head: Option<&EnvelopeHead>,
        kind: DeadKind,
        reason: &str,
        attempt: u32,
    ) {
        let w = &self.worker;
        let props = envelope::with_headers(
            &delivery.properties,
            vec![
                (headers::ERROR, envelope::text(reason)),
                (headers::ERROR_KIND, envelope::text(kind.as_str())),
                (headers::STEP, envelope::text(w.step.as_str())),
                (headers::ATTEMPT, AMQPValue::LongLongInt(i64::from(attempt))),
                (headers::WORKER, envelope::text(&*w.worker_id)),
                (headers::FAILED_AT, AMQPValue::LongLongInt(envelope::now_ms() as i64)),
            ],
        );
        if let Err(e) = session.publisher.publish(&w.dead_exchange, &w.step, &delivery.data, props).await {
            tracing::error!(step = %w.step, error = %e, "cannot dead-letter a message; left unacked for redelivery");
            return;
        }
        if delivery.acker.ack(BasicAckOptions::default()).await.is_err() {
            return;
        }
        tracing::warn!(step = %w.step, kind = %kind, error = %reason, "message dead-lettered");
        self.metrics.dead_letter(kind);
        let pipeline: std::sync::Arc<str> = head.map(|h| h.pipeline.as_str()).unwrap_or_default().into();
        let (job_id, message_id) = head.map(|h| (h.job_id, h.message_id)).unwrap_or_default();
        session.events.emit(JobEvent {
            delivery_count: envelope::header_int(&delivery.properties, headers::DELIVERY_COUNT).unwrap_or(0) as u32,
            error: Some(reason.to_owned()),
            error_kind: Some(kind.as_str().to_owned()),
            ..JobEvent::new(
                EventKind::Dead,
                job_id,
                message_id,
                pipeline,
                w.step_name.clone(),
                w.worker_id.clone(),
                attempt,
            )
        });
    }
}
