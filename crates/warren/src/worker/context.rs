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
    /// The message whose handling sent this one (`None` for a job's first message).
    pub(super) causation_id: Option<Uuid>,
    pub(super) events: EventSink,
    pub(super) artifacts: Option<ArtifactStore>,
    pub(super) data_root: Option<Arc<std::path::Path>>,
    pub(super) stop: Arc<std::sync::atomic::AtomicBool>,
    pub(super) registry: Arc<str>,
}

impl Context {
    /// A context outside any worker, for a handler's unit tests and for embedding: a fresh job
    /// and message of pipeline `test`, attempt 1, `params` as the spec would give them
    /// (MessagePack, say from [`crate::envelope::to_msgpack_value`]), no broker (its reports go
    /// nowhere), no artifact store and no data root until [`Context::with_store`] and
    /// [`Context::with_data_root`] give them.
    pub fn detached(step: &str, params: rmpv::Value) -> Self {
        Self {
            job_id: Uuid::now_v7(),
            message_id: Uuid::now_v7(),
            pipeline: "test".into(),
            step: step.into(),
            attempt: 1,
            delivery_count: 0,
            worker: format!("{step}@test").into(),
            next: Arc::new([]),
            params,
            causation_id: None,
            events: EventSink::disabled(),
            artifacts: None,
            data_root: None,
            stop: Arc::default(),
            registry: "test".into(),
        }
    }

    /// The namespace of the model registry this worker reads and writes (see
    /// [`crate::Config::registry_scope`]).
    pub fn registry_scope(&self) -> &str {
        &self.registry
    }

    /// The same context with an artifact store.
    pub fn with_store(mut self, store: ArtifactStore) -> Self {
        self.artifacts = Some(store);
        self
    }

    /// The same context with a data root for local input files.
    pub fn with_data_root(mut self, root: impl Into<std::path::PathBuf>) -> Self {
        self.data_root = Some(Arc::from(root.into().into_boxed_path()));
        self
    }

    /// The same context in pipeline `pipeline` (artifact keys begin with it).
    pub fn with_pipeline(mut self, pipeline: &str) -> Self {
        self.pipeline = pipeline.into();
        self
    }

    /// A flag the worker sets once this handler's run is over: when the step's maximum duration
    /// runs out, or the handler has returned. Work on a blocking thread (training, say) checks
    /// it and stops, so a timed-out run does not go on beside its retry.
    pub fn stop_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.stop.clone()
    }

    /// The worker's artifact store; a permanent error if the worker was built without one.
    pub fn store(&self) -> Result<&ArtifactStore, StepError> {
        self.artifacts.as_ref().ok_or_else(|| StepError::permanent(format!("step {} has no artifact store", self.step)))
    }

    /// Reads an input file a message names: an artifact URI of the worker's store, or a path
    /// (`data:sub/file.csv`, `sub/file.csv`) inside the configured `data_root`. Anything else —
    /// a host path outside the data root, or any path when no data root is configured — is a
    /// permanent error saying why: a message must not make a worker read arbitrary host files.
    pub async fn read_input(&self, name: &str) -> Result<Vec<u8>, StepError> {
        if let Some(store) = &self.artifacts
            && name.starts_with(store.base())
        {
            return store.fetch(name, None).await.map_err(|e| match e {
                crate::artifacts::ArtifactError::NotFound(_) => StepError::permanent(e),
                other => StepError::retryable(other),
            });
        }
        let root = self.data_root.as_deref().ok_or_else(|| {
            StepError::permanent(format!(
                "refused to read `{name}`: this worker reads input files only from the artifact store (no data_root is configured); submit the file with `warren submit`, which uploads it, or set data_root"
            ))
        })?;
        let rel = name.strip_prefix("data:").or_else(|| name.strip_prefix("file://")).unwrap_or(name);
        let path = resolve_in(root, rel).map_err(StepError::permanent)?;
        let read = tokio::task::spawn_blocking(move || std::fs::read(&path).map_err(|e| (path, e)))
            .await
            .map_err(|e| StepError::retryable(format!("reading `{name}` failed: {e}")))?;
        read.map_err(|(path, e)| StepError::permanent(format!("cannot read `{name}` ({}): {e}", path.display())))
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

    /// What the messages this handling sends come from.
    pub(super) fn cause(&self) -> crate::envelope::Cause<'_> {
        crate::envelope::Cause { job_id: self.job_id, message_id: self.message_id, pipeline: &self.pipeline }
    }

    pub(super) fn event_base(&self, kind: EventKind) -> JobEvent {
        // The message that caused this one, said once per message (its first attempt's start or
        // success): trace readers hang the message's span under that message's.
        let says_causation = self.attempt == 1 && matches!(kind, EventKind::Started | EventKind::Succeeded);
        JobEvent {
            delivery_count: self.delivery_count,
            causation_id: self.causation_id.filter(|_| says_causation),
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

/// `rel` inside `root`, refused when it would leave it (`..`, an absolute path elsewhere, a
/// symbolic link out).
pub fn resolve_in(root: &std::path::Path, rel: &str) -> Result<std::path::PathBuf, String> {
    let root = root.canonicalize().map_err(|e| format!("the data root {} cannot be used: {e}", root.display()))?;
    let candidate = root.join(rel);
    let resolved = candidate
        .canonicalize()
        .map_err(|e| format!("cannot read `{rel}` in the data root {}: {e}", root.display()))?;
    if resolved.starts_with(&root) {
        Ok(resolved)
    } else {
        Err(format!("refused to read `{rel}`: it is outside the data root {}", root.display()))
    }
}

/// What a handler returns on success: one payload, or a [`FanOut`] of any number.
pub trait StepOutput: Send + 'static {
    /// The payload type sent to the next step.
    type Payload: Payload;
    /// Whether one input becomes any number of outputs.
    const FAN_OUT: bool = false;
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
    const FAN_OUT: bool = true;
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
