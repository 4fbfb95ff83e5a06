//! One child process of a step: started, greeted, given calls one at a time, its stderr
//! forwarded to the worker's log.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, ChildStdin, ChildStdout},
};

use super::frame::{self, Call, FrameError, FromChild, PROTOCOL, ToChild};
use crate::{Context, StepError, registry::StepDescriptor};

/// How long a child may take to say hello (a Python program importing scikit-learn on a busy
/// machine takes seconds, not minutes).
pub const HELLO_WITHIN: Duration = Duration::from_secs(120);

/// The program a step runs as its children, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment for it, beside the worker's own.
    pub env: Vec<(String, String)>,
}

impl std::fmt::Display for ExecCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// Why a child could not be started or greeted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The program could not be run at all.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// It did not say hello as the protocol asks.
    #[error("`{command}` did not greet the runtime: {reason}")]
    NoHello {
        /// The command.
        command: String,
        /// Why (it exited, said something else, took too long).
        reason: String,
    },
    /// Its descriptor is not one.
    #[error("`{command}` described its step wrongly: {reason}")]
    BadDescriptor {
        /// The command.
        command: String,
        /// What is wrong.
        reason: String,
    },
}

impl ExecError {
    /// Whether starting again cannot help (the program is missing, or describes a wrong step).
    pub fn is_usage(&self) -> bool {
        !matches!(self, ExecError::NoHello { .. })
    }
}

/// A running child, between calls or in one.
#[derive(Debug)]
pub(super) struct ChildProc {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    pub(super) index: usize,
    pub(super) pid: u32,
    calls: u64,
}

impl ChildProc {
    /// Starts child number `index` of `command` and reads its hello.
    pub(super) async fn start(command: &ExecCommand, index: usize) -> Result<(Self, StepDescriptor), ExecError> {
        let shown = command.to_string();
        let mut child = tokio::process::Command::new(&command.program)
            .args(&command.args)
            .env("WARREN_EXEC_PROTOCOL", PROTOCOL.to_string())
            .env("WARREN_EXEC_CHILD", index.to_string())
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            // Its own process group: Ctrl-C in the worker's terminal is the worker's to handle,
            // and the worker tells its children when to stop.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ExecError::Spawn { command: shown.clone(), source })?;
        let pid = child.id().unwrap_or_default();
        let (Some(stdin), Some(mut stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ExecError::NoHello { command: shown, reason: "its pipes could not be opened".into() });
        };
        tokio::spawn(forward_log(stderr, index, pid));
        let no_hello = |reason: String| ExecError::NoHello { command: shown.clone(), reason };
        let hello = tokio::time::timeout(HELLO_WITHIN, frame::read::<_, FromChild>(&mut stdout))
            .await
            .map_err(|_| no_hello(format!("no hello within {HELLO_WITHIN:?}")))?;
        let descriptor = match hello {
            Ok(FromChild::Hello { protocol, descriptor }) if protocol == PROTOCOL => descriptor,
            Ok(FromChild::Hello { protocol, .. }) => {
                return Err(ExecError::BadDescriptor {
                    command: shown,
                    reason: format!("it speaks exec protocol {protocol}; this runtime speaks {PROTOCOL}"),
                });
            }
            Ok(other) => return Err(no_hello(format!("its first frame was {other:?}, not hello"))),
            Err(FrameError::Closed) => {
                let status = exit_status(&mut child).await;
                return Err(no_hello(format!("it exited before its hello ({status}; its stderr is in the log above)")));
            }
            Err(e) => return Err(no_hello(format!("{e} (does it write anything else to stdout?)"))),
        };
        let descriptor = read_descriptor(&descriptor)
            .map_err(|reason| ExecError::BadDescriptor { command: shown.clone(), reason })?;
        tracing::debug!(step = %descriptor.step, child = index, pid, "child ready");
        Ok((Self { child, stdin, stdout, index, pid, calls: 0 }, descriptor))
    }

    /// Whether the process is still running.
    pub(super) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Runs one message: sends the call, serves the child's reads, writes and reports, and
    /// returns its outputs or error. A child that dies or breaks the protocol is a crash.
    pub(super) async fn call(
        &mut self,
        ctx: &Context,
        input: rmpv::Value,
        schema: &str,
    ) -> Result<Vec<rmpv::Value>, Failure> {
        self.calls += 1;
        let id = self.calls;
        let call = Call {
            id,
            job_id: ctx.job_id.to_string(),
            message_id: ctx.message_id.to_string(),
            pipeline: ctx.pipeline.to_string(),
            step: ctx.step.to_string(),
            attempt: ctx.attempt,
            delivery_count: ctx.delivery_count,
            worker: ctx.worker.to_string(),
            params: ctx.raw_params().clone(),
            input,
            schema: schema.to_owned(),
            registry: ctx.registry_scope().to_owned(),
        };
        self.send(&ToChild::Call(Box::new(call))).await?;
        loop {
            match frame::read::<_, FromChild>(&mut self.stdout).await {
                Ok(FromChild::Ok { id: i, outputs }) if i == id => return Ok(outputs),
                Ok(FromChild::Error { id: i, retryable, message }) if i == id => {
                    let message = format!("{message} (in child {} of step {})", self.index, ctx.step);
                    return Err(Failure::Step(if retryable {
                        StepError::retryable(message)
                    } else {
                        StepError::permanent(message)
                    }));
                }
                Ok(FromChild::Report { id: i, detail }) if i == id => ctx.report(detail),
                Ok(FromChild::Read { id: i, req, name }) if i == id => {
                    let answer = match ctx.read_input(&name).await {
                        Ok(bytes) => ToChild::Data { req, data: rmpv::Value::Binary(bytes) },
                        Err(e) => failed(req, &e),
                    };
                    self.send(&answer).await?;
                }
                Ok(FromChild::Write { id: i, req, name, data }) if i == id => {
                    let answer = match write(ctx, &name, data).await {
                        Ok(stored) => ToChild::Written { req, uri: stored.uri, hash: stored.hash },
                        Err(e) => failed(req, &e),
                    };
                    self.send(&answer).await?;
                }
                Ok(other) => return Err(self.broken(format!("it answered call {id} with {other:?}")).await),
                Err(FrameError::Closed) => return Err(self.died().await),
                Err(e) => return Err(self.broken(e.to_string()).await),
            }
        }
    }

    async fn send(&mut self, frame: &ToChild) -> Result<(), Failure> {
        match frame::write(&mut self.stdin, frame).await {
            Ok(()) => Ok(()),
            Err(FrameError::Closed) => Err(self.died().await),
            Err(e) => Err(self.broken(e.to_string()).await),
        }
    }

    /// The child exited mid-message.
    async fn died(&mut self) -> Failure {
        let status = exit_status(&mut self.child).await;
        Failure::Crashed(StepError::crashed(format!(
            "the step's child process {} (pid {}) died while handling this message ({status})",
            self.index, self.pid
        )))
    }

    /// The child said something the protocol does not allow: it is killed.
    async fn broken(&mut self, what: String) -> Failure {
        let _ = self.child.kill().await;
        Failure::Crashed(StepError::crashed(format!(
            "the step's child process {} (pid {}) broke the exec protocol and was stopped: {what}",
            self.index, self.pid
        )))
    }

    /// Kills the child now (SIGKILL), without waiting.
    pub(super) fn kill(mut self) {
        if let Err(e) = self.child.start_kill() {
            tracing::error!(child = self.index, pid = self.pid, error = %e, "cannot kill the step's child");
        }
    }

    /// Asks the child to exit, then kills it after `grace`.
    pub(super) async fn stop(mut self, grace: Duration) {
        let _ = frame::write(&mut self.stdin, &ToChild::Stop).await;
        self.end(grace).await;
    }

    /// Closes the child's stdin, gives it `grace` to exit, then kills it.
    async fn end(mut self, grace: Duration) {
        drop(self.stdin);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // polling the child's exit within its grace
        }
        tracing::warn!(
            child = self.index,
            pid = self.pid,
            "the step's child did not stop within {grace:?}; killing it"
        );
        if let Err(e) = self.child.start_kill() {
            tracing::error!(child = self.index, pid = self.pid, error = %e, "cannot kill the step's child");
        }
        let _ = self.child.try_wait();
    }
}

/// How a call ended if not with outputs.
#[derive(Debug)]
pub(super) enum Failure {
    /// The step's own error: the child lives on.
    Step(StepError),
    /// The child died or broke the protocol: it is gone.
    Crashed(StepError),
}

fn failed(req: u64, e: &StepError) -> ToChild {
    ToChild::Failed { req, retryable: e.is_retryable(), message: e.message().to_owned() }
}

async fn write(ctx: &Context, name: &str, data: rmpv::Value) -> Result<crate::artifacts::Stored, StepError> {
    let rmpv::Value::Binary(bytes) = data else {
        return Err(StepError::permanent(format!("write {name}: data must be bytes (MessagePack bin)")));
    };
    if name.is_empty() || name.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Err(StepError::permanent(format!("write {name:?}: not a relative artifact name")));
    }
    ctx.store()?.put(&ctx.artifact_key(name), bytes).await.map_err(StepError::retryable)
}

/// A descriptor from the hello's map; the step name must be one a queue can have.
fn read_descriptor(value: &rmpv::Value) -> Result<StepDescriptor, String> {
    let json = serde_json::to_value(value).map_err(|e| e.to_string())?;
    let d: StepDescriptor = serde_json::from_value(json).map_err(|e| e.to_string())?;
    if d.step.is_empty() || !d.step.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("step name {:?}: use letters, digits, `-` and `_`", d.step));
    }
    if d.concurrency == Some(0) {
        return Err("concurrency 0: a step handles at least one message at a time".into());
    }
    Ok(d)
}

/// How the child ended, as a person reads it.
async fn exit_status(child: &mut Child) -> String {
    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                _ => status.to_string(),
            }
        }
        Ok(Err(e)) => format!("its status is unknown: {e}"),
        Err(_) => "it closed its stdout but is still running".into(),
    }
}

/// The child's stderr, line by line, into the worker's log (see [`classify`]).
async fn forward_log(stderr: tokio::process::ChildStderr, child: usize, pid: u32) {
    let mut lines = BufReader::new(stderr).lines();
    let mut traceback = false;
    while let Ok(Some(line)) = lines.next_line().await {
        match classify(&line, &mut traceback) {
            (tracing::Level::ERROR, text) => tracing::error!(child, pid, "{text}"),
            (tracing::Level::WARN, text) => tracing::warn!(child, pid, "{text}"),
            (tracing::Level::DEBUG | tracing::Level::TRACE, text) => tracing::debug!(child, pid, "{text}"),
            (_, text) => tracing::info!(child, pid, "{text}"),
        }
    }
}

/// The level of one line of a child's stderr and its text: a line that begins with a level
/// (`ERROR`, `CRITICAL`, `WARNING`, `INFO`, `DEBUG`) is at that level, without the word; a Python
/// traceback (an import that fails before the hello, say) is at ERROR from `Traceback` through
/// its closing, unindented line; anything else (a print) is at INFO.
fn classify<'a>(line: &'a str, traceback: &mut bool) -> (tracing::Level, &'a str) {
    if line.starts_with("Traceback (most recent call last):") {
        *traceback = true;
        return (tracing::Level::ERROR, line);
    }
    if *traceback {
        // The frames are indented; the exception's own line closes the traceback.
        *traceback = line.starts_with(' ') || line.is_empty() || line.starts_with("During handling");
        return (tracing::Level::ERROR, line);
    }
    let (word, text) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        "ERROR" | "CRITICAL" => (tracing::Level::ERROR, text),
        "WARNING" | "WARN" => (tracing::Level::WARN, text),
        "INFO" => (tracing::Level::INFO, text),
        "DEBUG" => (tracing::Level::DEBUG, text),
        _ => (tracing::Level::INFO, line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_needs_a_usable_step_name() {
        let ok = rmpv::Value::Map(vec![
            ("step".into(), "py-count".into()),
            ("version".into(), "1".into()),
            ("input".into(), "*".into()),
            ("output".into(), "*".into()),
            ("params".into(), rmpv::Value::Map(vec![("type".into(), "object".into())])),
        ]);
        assert_eq!(read_descriptor(&ok).unwrap().step, "py-count");
        let mut bad = ok.clone();
        if let rmpv::Value::Map(m) = &mut bad {
            m[0].1 = "a step".into();
        }
        assert!(read_descriptor(&bad).unwrap_err().contains("a step"));
        assert!(read_descriptor(&rmpv::Value::Map(vec![])).unwrap_err().contains("step"));
    }

    #[test]
    fn stderr_lines_keep_their_level_and_a_traceback_is_an_error_to_its_last_line() {
        use tracing::Level;
        let mut tb = false;
        let lines = [
            "WARNING disk almost full",
            "a print from the step",
            "Traceback (most recent call last):",
            "  File \"keywords.py\", line 3, in <module>",
            "    import sklearn",
            "ModuleNotFoundError: No module named 'sklearn'",
            "after it",
        ];
        let got: Vec<(Level, &str)> = lines.iter().map(|l| classify(l, &mut tb)).collect();
        assert_eq!(got[0], (Level::WARN, "disk almost full"));
        assert_eq!(got[1], (Level::INFO, "a print from the step"));
        assert!(got[2..6].iter().all(|(level, _)| *level == Level::ERROR), "{got:?}");
        assert_eq!(got[5].1, "ModuleNotFoundError: No module named 'sklearn'");
        assert_eq!(got[6], (Level::INFO, "after it"));
    }
}
