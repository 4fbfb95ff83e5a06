//! What a handler gets and returns: [`Context`], [`StepOutput`], [`FanOut`], [`Handler`].

use std::{future::Future, sync::Arc};

use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::{
    EventKind, EventSink, JobEvent, StepError,
    artifacts::ArtifactStore,
    envelope::{self, Payload},
};

/// What a handler gets besides its input.
#[derive(Debug, Clone)]
pub struct Context {
    /// The job.
    pub job_id: Uuid,
    /// The message being handled.
    pub message_id: Uuid,
    /// The pipeline the job runs.
    pub pipeline: Arc<str>,
    /// This step.
    pub step: Arc<str>,
    /// Attempt number, 1 for the first.
    pub attempt: u32,
    /// Earlier deliveries of this message that were never acked (crashes, timeouts).
    pub delivery_count: u32,
    /// This worker's id.
    pub worker: Arc<str>,
    /// The remaining hops after this step.
    pub next: Arc<[envelope::Hop]>,
    pub(super) params: rmpv::Value,
    pub(super) events: EventSink,
    pub(super) artifacts: Option<ArtifactStore>,
}

impl Context {
    /// The worker's artifact store; a permanent error if the worker was built without one.
    pub fn store(&self) -> Result<&ArtifactStore, StepError> {
        self.artifacts.as_ref().ok_or_else(|| StepError::permanent(format!("step {} has no artifact store", self.step)))
    }

    /// A deterministic artifact key for this job and step: `{pipeline}/{job}/{step}/{name}`. A
    /// redelivered message writes the same key again.
    pub fn artifact_key(&self, name: &str) -> String {
        format!("{}/{}/{}/{name}", self.pipeline, self.job_id, self.step)
    }

    /// This step's parameters from the routing slip, decoded as `T`. A parameter of the wrong
    /// form is a permanent error naming it.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        let value = match &self.params {
            rmpv::Value::Nil => rmpv::Value::Map(vec![]),
            v => v.clone(),
        };
        envelope::from_msgpack_value(&value)
            .map_err(|e| StepError::permanent(format!("bad parameters for step {}: {e}", self.step)))
    }

    /// This step's parameters as they are on the wire.
    pub fn raw_params(&self) -> &rmpv::Value {
        &self.params
    }

    /// Publishes a `report` event for this job (metrics, a refusal, a cache hit).
    pub fn report(&self, detail: rmpv::Value) {
        self.events.emit(JobEvent { detail: Some(detail), ..self.event_base(EventKind::Report) });
    }

    pub(super) fn event_base(&self, kind: EventKind) -> JobEvent {
        JobEvent {
            delivery_count: self.delivery_count,
            ..JobEvent::new(
                kind,
                self.job_id,
                self.message_id,
                self.pipeline.clone(),
                self.step.clone(),
                self.worker.clone(),
                self.attempt,
            )
        }
    }
}

/// What a handler returns on success: one payload, or a [`FanOut`] of any number.
pub trait StepOutput: Send + 'static {
    /// The payload type sent to the next step.
    type Payload: Payload;
    /// The payloads to publish, in order.
    fn into_payloads(self) -> Vec<Self::Payload>;
}

impl<P: Payload> StepOutput for P {
    type Payload = P;
    fn into_payloads(self) -> Vec<P> {
        vec![self]
    }
}

/// Any number of outputs (none included): each becomes its own message to the next step.
#[derive(Debug, Clone, PartialEq)]
pub struct FanOut<P>(pub Vec<P>);

impl<P: Payload> StepOutput for FanOut<P> {
    type Payload = P;
    fn into_payloads(self) -> Vec<P> {
        self.0
    }
}

/// A step's logic: an async function from context and input to output or [`StepError`].
pub trait Handler<I, O>: Send + Sync + 'static {
    /// Handles one message.
    fn call(&self, ctx: Context, input: I) -> impl Future<Output = Result<O, StepError>> + Send;

    /// A message bound for this step died at the step before it (this step gathers a fan-out:
    /// its hop has `gather`). Return output to send on (say, the fan-in completed without it),
    /// `None` to send nothing, or an error as from [`Handler::call`]. By default: nothing.
    fn dead_upstream(
        &self,
        ctx: Context,
        notice: envelope::DeadNotice,
    ) -> impl Future<Output = Result<Option<O>, StepError>> + Send {
        let _ = (ctx, notice);
        async { Ok(None) }
    }
}

impl<F, Fut, I, O> Handler<I, O> for F
where
    F: Fn(Context, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, StepError>> + Send,
{
    fn call(&self, ctx: Context, input: I) -> impl Future<Output = Result<O, StepError>> + Send {
        self(ctx, input)
    }
}
