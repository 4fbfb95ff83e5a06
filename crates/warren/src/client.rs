//! Submitting jobs: a job's first message carries the routing slip of the whole pipeline.

use futures_util::{StreamExt, stream::FuturesUnordered};
use uuid::Uuid;

use crate::{
    Broker, BrokerError, Config, Names,
    broker::Publisher,
    envelope::{self, EnvelopeRef, Hop, Payload},
};

/// A job to submit: the pipeline's name, its steps with their parameters, and the first
/// step's input.
#[derive(Debug, Clone)]
pub struct JobSpec<P> {
    /// Pipeline name (reported in events).
    pub pipeline: String,
    /// The routing slip: every step, in order, with its parameters.
    pub slip: Vec<Hop>,
    /// The payload's schema id.
    pub schema: String,
    /// The first step's input.
    pub payload: P,
}

impl<P: Payload> JobSpec<P> {
    /// A job whose payload has `P`'s schema.
    pub fn new(pipeline: impl Into<String>, slip: Vec<Hop>, payload: P) -> Self {
        Self { pipeline: pipeline.into(), slip, schema: P::SCHEMA.to_owned(), payload }
    }
}

/// Submission failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The routing slip names no step.
    #[error("the job has no steps")]
    NoSteps,
    /// The payload could not be encoded.
    #[error("cannot encode the job: {0}")]
    Encode(String),
    /// No worker has declared the first step's queue yet.
    #[error(
        "unroutable: no queue for step {step:?} ({queue}): start a worker of the step or run `warren topology declare` first"
    )]
    NoQueue {
        /// The job's first step.
        step: String,
        /// The queue the job was published to.
        queue: String,
    },
    /// The broker failed.
    #[error("{0}")]
    Broker(#[from] BrokerError),
}

/// An RPC call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The request could not be sent.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The reply was not a valid envelope of the expected schema.
    #[error("bad reply: {0}")]
    Decode(#[from] envelope::DecodeError),
    /// No reply in time (the step failed, or has no worker).
    #[error("no reply within {0:?}")]
    Timeout(std::time::Duration),
    /// The reply channel closed.
    #[error("the reply channel closed")]
    NoReply,
    /// The step refused the request and said why (the request is in its dead-letter queue).
    #[error("{} refused the request ({}): {}", .0.step, .0.kind, .0.message)]
    Remote(envelope::RemoteError),
}

/// Publishes jobs. One connection; publishes are confirmed.
#[derive(Debug, Clone)]
pub struct Client {
    broker: Broker,
    names: Names,
    events_version: u16,
}

impl Client {
    /// Connects with `config`.
    pub async fn connect(config: &Config) -> Result<Self, BrokerError> {
        Ok(Self {
            broker: Broker::connect(config, "client").await?,
            names: Names::new(&config.namespace),
            events_version: config.events_version,
        })
    }

    /// The event batch version this deployment writes (`events_version`), for a tool that
    /// records what it did on the events stream.
    pub fn events_version(&self) -> u16 {
        self.events_version
    }

    /// The underlying broker connection.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The namespace's names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Publishes a job's first message and returns its id once the broker has confirmed it.
    pub async fn submit<P: Payload>(&self, job: &JobSpec<P>) -> Result<Uuid, SubmitError> {
        let publisher = self.broker.publisher().await?;
        let (id, step, body, props) = self.prepare(job)?;
        publisher.publish("", &self.names.step_queue(&step), &body, props).await.map_err(|e| self.explain(e, &step))?;
        Ok(id)
    }

    /// Publishes many jobs keeping up to 1,000 confirms in flight (a sliding window); returns the
    /// ids in order once every job is confirmed.
    pub async fn submit_many<P: Payload>(&self, jobs: &[JobSpec<P>]) -> Result<Vec<Uuid>, SubmitError> {
        const WINDOW: usize = 1000;
        let publisher = self.broker.publisher().await?;
        let mut ids = Vec::with_capacity(jobs.len());
        let mut in_flight = FuturesUnordered::new();
        for job in jobs {
            let (id, step, body, props) = self.prepare(job)?;
            ids.push(id);
            let queue = self.names.step_queue(&step);
            let confirm = publisher.send("", &queue, &body, props).await?;
            in_flight.push(async move {
                let c = confirm.await.map_err(BrokerError::amqp("publisher confirm"))?;
                Publisher::check(c, "", &queue).map_err(|e| self.explain(e, &step))
            });
            while in_flight.len() >= WINDOW {
                if let Some(r) = in_flight.next().await {
                    r?;
                }
            }
        }
        while let Some(r) = in_flight.next().await {
            r?;
        }
        Ok(ids)
    }

    /// Calls a step as a remote procedure: publishes a one-hop job with `reply_to` set (RabbitMQ's
    /// direct reply-to) and waits up to `timeout` for the step's output.
    pub async fn call<Req: Payload, Resp: Payload>(
        &self,
        step: &str,
        params: rmpv::Value,
        request: Req,
        timeout: std::time::Duration,
    ) -> Result<Resp, CallError> {
        const REPLY_TO: &str = "amq.rabbitmq.reply-to";
        let channel = self.broker.channel().await?;
        let mut replies = channel
            .basic_consume(
                REPLY_TO.into(),
                "".into(),
                lapin::options::BasicConsumeOptions { no_ack: true, ..Default::default() },
                lapin::types::FieldTable::default(),
            )
            .await
            .map_err(BrokerError::amqp("consume replies"))?;
        let publisher = Publisher::new(channel.clone()).await?;
        let mut hop = Hop::new(step);
        hop.params = params;
        let job = JobSpec::new("rpc", vec![hop], request);
        let (job_id, step, body, props) = self.prepare(&job)?;
        let props = props.with_reply_to(REPLY_TO.into());
        publisher.publish("", &self.names.step_queue(&step), &body, props).await.map_err(|e| self.explain(e, &step))?;
        let wait = async {
            while let Some(delivery) = replies.next().await {
                let delivery = delivery.map_err(BrokerError::amqp("reply"))?;
                if delivery.properties.kind().as_ref().map(|k| k.as_str()) == Some(envelope::ERROR_SCHEMA) {
                    let env = envelope::Envelope::<envelope::RemoteError>::decode(&delivery.data)?;
                    if env.job_id == job_id {
                        return Err(CallError::Remote(env.payload));
                    }
                    continue;
                }
                let env = envelope::Envelope::<Resp>::decode(&delivery.data)?;
                if env.job_id == job_id {
                    return Ok(env.payload);
                }
            }
            Err(CallError::NoReply)
        };
        let result = tokio::time::timeout(timeout, wait).await.unwrap_or(Err(CallError::Timeout(timeout)));
        let _ = channel.close(200, "done".into()).await;
        result
    }

    fn prepare<P: Payload>(
        &self,
        job: &JobSpec<P>,
    ) -> Result<(Uuid, String, Vec<u8>, lapin::BasicProperties), SubmitError> {
        let step = job.slip.first().ok_or(SubmitError::NoSteps)?.step.clone();
        let job_id = Uuid::now_v7();
        let message_id = envelope::derive_message_id(job_id, "submit", 0);
        let env = EnvelopeRef {
            v: envelope::ENVELOPE_VERSION,
            job_id,
            message_id,
            causation_id: None,
            pipeline: &job.pipeline,
            slip: &job.slip,
            schema: &job.schema,
            payload: &job.payload,
        };
        let (body, props) = env.to_message(&step).map_err(|e| SubmitError::Encode(e.to_string()))?;
        Ok((job_id, step, body, props))
    }

    /// A publish to `step`'s queue came back unroutable: the step has no queue yet.
    fn explain(&self, e: BrokerError, step: &str) -> SubmitError {
        match e {
            BrokerError::Unroutable { .. } => {
                SubmitError::NoQueue { step: step.to_owned(), queue: self.names.step_queue(step) }
            }
            other => SubmitError::Broker(other),
        }
    }
}
