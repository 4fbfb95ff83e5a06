//! The exec runtime: a step written in any language, run as long-lived child processes that
//! keep every guarantee of a Rust step.
//!
//! The worker is an ordinary [`Worker`](crate::Worker): it consumes, decodes, dedups, counts
//! crashes, retries, dead-letters, hands off with confirms, emits events and metrics. Its
//! handler, [`Exec`], passes each message to one of the step's children (one per unit of
//! concurrency, started on demand and kept warm) over the framed protocol of [`frame`], and
//! serves the child's reads and writes of artifacts through the worker's own store and data
//! root, so the store's backends and the data root's rules are written once, here.
//!
//! - A child that dies mid-message ([`StepError::Crashed`]) is replaced; the message is
//!   retried through the delay queues and dead-lettered as `crash` once its attempts are used.
//! - A call past the step's maximum duration fails as retryable; its child is killed (it may
//!   hold the call's half-done state) and a new one takes the next message.
//! - The first child's hello carries the step's descriptor: the worker announces it, so
//!   `warren submit` checks a job against it like any step's.

pub mod child;
pub mod frame;

#[cfg(feature = "cli")]
mod main;
#[cfg(feature = "cli")]
pub use main::exec_main;

use std::{
    sync::{Arc, Mutex, atomic::AtomicUsize},
    time::Duration,
};

use child::{ChildProc, Failure};
pub use child::{ExecCommand, ExecError};

use crate::{Context, FanOut, Handler, StepError, registry::StepDescriptor};

/// How long a child told to stop has before it is killed.
pub const GRACE: Duration = Duration::from_secs(2);

/// The handler of an exec step: a pool of child processes of one command.
#[derive(Debug, Clone)]
pub struct Exec {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    command: ExecCommand,
    descriptor: StepDescriptor,
    idle: Mutex<Vec<ChildProc>>,
    started: AtomicUsize,
}

impl Exec {
    /// Starts the first child of `command` and reads the step's descriptor from its hello. The
    /// child is kept for the first message.
    pub async fn start(command: ExecCommand) -> Result<Self, ExecError> {
        let (first, descriptor) = ChildProc::start(&command, 0).await?;
        Ok(Self {
            inner: Arc::new(Inner { command, descriptor, idle: Mutex::new(vec![first]), started: AtomicUsize::new(1) }),
        })
    }

    /// The step's descriptor, as its first child gave it.
    pub fn descriptor(&self) -> &StepDescriptor {
        &self.inner.descriptor
    }

    /// Starts children until `n` run, so the first messages do not wait for a program's start
    /// (a Python step importing scikit-learn takes seconds). One that cannot start is left to
    /// the first message that needs it.
    pub async fn warm(&self, n: usize) {
        while self.inner.started.load(std::sync::atomic::Ordering::Relaxed) < n {
            let index = self.inner.started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match ChildProc::start(&self.inner.command, index).await {
                Ok((child, _)) => {
                    if let Ok(mut idle) = self.inner.idle.lock() {
                        idle.push(child);
                    }
                }
                Err(e) => {
                    tracing::warn!(step = %self.inner.descriptor.step, child = index, error = %e, "cannot start a child ahead of time");
                    return;
                }
            }
        }
    }

    /// Stops every idle child (a stop frame, then a kill after [`GRACE`]).
    pub async fn close(&self) {
        let idle: Vec<ChildProc> = self.inner.idle.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
        futures_util::future::join_all(idle.into_iter().map(|c| c.stop(GRACE))).await;
    }

    /// An idle child that still runs, or a new one.
    async fn take(&self) -> Result<ChildProc, StepError> {
        loop {
            let popped = self.inner.idle.lock().ok().and_then(|mut v| v.pop());
            match popped {
                Some(mut c) => {
                    if c.alive() {
                        return Ok(c);
                    }
                    tracing::warn!(step = %self.inner.descriptor.step, child = c.index, pid = c.pid,
                    "the step's child exited while idle; starting another");
                }
                None => break,
            }
        }
        let index = self.inner.started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (child, descriptor) = ChildProc::start(&self.inner.command, index)
            .await
            .map_err(|e| StepError::retryable(format!("cannot start the step's child process: {e}")))?;
        if descriptor.step != self.inner.descriptor.step || descriptor.version != self.inner.descriptor.version {
            tracing::warn!(step = %self.inner.descriptor.step, child = index, says = %descriptor.step,
                version = %descriptor.version, "a new child describes another step or version than the first; the first's holds");
        }
        Ok(child)
    }

    /// One message through one child.
    async fn run(&self, ctx: Context, input: rmpv::Value) -> Result<Vec<rmpv::Value>, StepError> {
        let child = self.take().await?;
        let mut lease = Lease { exec: self, child: Some(child), done: false };
        let Some(child) = lease.child.as_mut() else { return Err(StepError::retryable("no child")) };
        let result = child.call(&ctx, input, &self.inner.descriptor.input).await;
        match result {
            Ok(outputs) => {
                lease.done = true;
                Ok(outputs)
            }
            Err(Failure::Step(e)) => {
                lease.done = true;
                Err(e)
            }
            Err(Failure::Crashed(e)) => {
                lease.child = None;
                tracing::warn!(step = %ctx.step, job = %ctx.job_id, message = %ctx.message_id, error = %e.message(),
                    "the step's child process is gone; a new one takes the next message");
                Err(e)
            }
        }
    }
}

/// A child lent to one call: back to the pool when the call ended, else (the call was
/// abandoned at its maximum duration or the worker's stop) cancelled and killed.
struct Lease<'a> {
    exec: &'a Exec,
    child: Option<ChildProc>,
    done: bool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(child) = self.child.take() else { return };
        if self.done {
            if let Ok(mut idle) = self.exec.inner.idle.lock() {
                idle.push(child);
            }
            return;
        }
        tracing::warn!(step = %self.exec.inner.descriptor.step, child = child.index, pid = child.pid,
            "call abandoned (maximum duration, or the worker's stop grace ran out): killing its child");
        child.kill();
    }
}

impl Handler<rmpv::Value, rmpv::Value> for Exec {
    fn call(&self, ctx: Context, input: rmpv::Value) -> impl Future<Output = Result<rmpv::Value, StepError>> + Send {
        let this = self.clone();
        async move {
            let mut outputs = this.run(ctx, input).await?;
            match outputs.len() {
                1 => Ok(outputs.remove(0)),
                n => Err(StepError::permanent(format!(
                    "the step returned {n} outputs; a step that does not fan out returns exactly one (its descriptor says fan_out = false)"
                ))),
            }
        }
    }
}

impl Handler<rmpv::Value, FanOut<rmpv::Value>> for Exec {
    fn call(
        &self,
        ctx: Context,
        input: rmpv::Value,
    ) -> impl Future<Output = Result<FanOut<rmpv::Value>, StepError>> + Send {
        let this = self.clone();
        async move { this.run(ctx, input).await.map(FanOut) }
    }
}
