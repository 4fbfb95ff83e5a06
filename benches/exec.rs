//! What a step in another language costs: the same pass-through step as a Python child of
//! `warren-exec` and as Rust (`warren-test-step`), each one worker with one message at a time
//! (one child), over a real broker; and the child's round trip alone, without a broker. Prints
//! messages per second per child and the per-message overhead in µs.
//!
//! ```sh
//! WARREN_PYTHON=.venv/bin/python cargo bench -p warren-e2e --bench exec    # a Python with warren-step
//! ```

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions},
    types::FieldTable,
};
use warren::{Broker, Client, Config, Declarer, FanOut, Handler, Hop, JobSpec, Names, StepTopology};
use warren_e2e::Probe;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const MESSAGES: u64 = 3_000;
const ROUND_TRIPS: u64 = 20_000;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    std::env::var_os("WARREN_PYTHON").map(PathBuf::from).unwrap_or_else(|| "python3".into())
}

fn probe_step() -> PathBuf {
    repo().join("tests/steps/probe_step.py")
}

fn build_exec() -> Res<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--bin", "warren-exec", "-p", "warren-exec"])
        .current_dir(repo())
        .status()?;
    if !status.success() {
        return Err("building warren-exec failed".into());
    }
    let exe = std::env::current_exe()?;
    Ok(exe.parent().and_then(Path::parent).ok_or("no target dir")?.join("warren-exec"))
}

fn config(ns: &str) -> Res<Config> {
    let url = std::env::var("WARREN_AMQP_URL").unwrap_or_else(|_| warren::config::DEFAULT_AMQP_URL.to_owned());
    Ok(Config::load_from(
        None,
        [("WARREN_AMQP_URL".to_owned(), url), ("WARREN_NAMESPACE".to_owned(), ns.to_owned())],
        &[],
    )?)
}

/// `MESSAGES` probes through one worker of step `pt` (started as `cmd`, which names the step), counted at a sink queue:
/// messages per second from the first submit to the last arrival.
async fn through(label: &str, mut cmd: Command) -> Res<f64> {
    let ns = format!("bench-exec-{label}-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let config = config(&ns)?;
    let names = Names::new(&ns);
    let broker = Broker::connect(&config, "bench").await?;
    let mut declarer = Declarer::new(&broker, &names);
    declarer.base().await?;
    for step in ["pt", "sink"] {
        let topology = StepTopology { step: step.into(), delivery_limit: config.delivery_limit, max_duration: None };
        declarer.step(&topology).await?;
    }
    let mut worker: Child = cmd
        .env("WARREN_NAMESPACE", &ns)
        .env("WARREN_CONCURRENCY", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    let ch = broker.channel().await?;
    let ready = Instant::now();
    loop {
        let q = ch
            .queue_declare(
                names.step_queue("pt").as_str().into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        if q.consumer_count() > 0 {
            break;
        }
        if ready.elapsed() > Duration::from_secs(60) {
            return Err(format!("{label}: no worker consumed within a minute").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // polling for the worker's consumer
    }
    ch.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut sink = ch
        .basic_consume(
            names.step_queue("sink").as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let client = Client::connect(&config).await?;
    let slip = vec![Hop::new("pt"), Hop::new("sink")];
    let jobs: Vec<JobSpec<Probe>> =
        (0..MESSAGES).map(|seq| JobSpec::new("bench", slip.clone(), Probe { seq, hops: 0 })).collect();
    let start = Instant::now();
    client.submit_many(&jobs).await?;
    let mut seen = 0;
    while seen < MESSAGES {
        match tokio::time::timeout(Duration::from_secs(120), sink.next()).await {
            Ok(Some(Ok(d))) => {
                d.acker.ack(BasicAckOptions::default()).await?;
                seen += 1;
            }
            _ => return Err(format!("{label}: {seen} of {MESSAGES} arrived").into()),
        }
    }
    let rate = MESSAGES as f64 / start.elapsed().as_secs_f64();
    let _ = worker.kill();
    let _ = worker.wait();
    Declarer::new(&broker, &names).delete(&["pt", "sink"]).await?;
    client.broker().close().await;
    broker.close().await;
    Ok(rate)
}

/// The child's round trip without a broker: calls through `warren-exec`'s handler to one
/// Python child, in µs per call.
async fn round_trip() -> Res<f64> {
    let command = warren::exec::ExecCommand {
        program: python().display().to_string(),
        args: vec![probe_step().display().to_string()],
        env: vec![("WARREN_STEP".into(), "pt".into())],
    };
    let exec = warren::exec::Exec::start(command).await?;
    let input = warren::envelope::to_msgpack_value(&Probe { seq: 1, hops: 0 })?;
    let start = Instant::now();
    for _ in 0..ROUND_TRIPS {
        let ctx = warren::Context::detached("pt", rmpv::Value::Nil);
        let out =
            <warren::exec::Exec as Handler<rmpv::Value, FanOut<rmpv::Value>>>::call(&exec, ctx, input.clone()).await?;
        if out.0.len() != 1 {
            return Err("the child did not pass the probe on".into());
        }
    }
    let per_call = start.elapsed().as_secs_f64() * 1e6 / ROUND_TRIPS as f64;
    exec.close().await;
    Ok(per_call)
}

fn main() -> Res<()> {
    let exec_bin = build_exec()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let per_call = round_trip().await?;
        println!("child round trip (no broker): {per_call:.1} µs per call, {:.0} calls/s per child", 1e6 / per_call);
        let mut rust_cmd = Command::new(env!("CARGO_BIN_EXE_warren-test-step"));
        rust_cmd.args(["--step", "pt"]);
        let rust = through("rust", rust_cmd).await?;
        let mut exec_cmd = Command::new(&exec_bin);
        exec_cmd.args(["--step", "pt", "--"]).arg(python()).arg(probe_step());
        let python = through("python", exec_cmd).await?;
        println!("pass-through, one worker, one message at a time, {MESSAGES} messages through a real broker:");
        println!("  {:<34} {:>10.0} msg/s  {:>8.1} µs/msg", "Rust (warren-test-step)", rust, 1e6 / rust);
        println!("  {:<34} {:>10.0} msg/s  {:>8.1} µs/msg", "Python child (warren-exec)", python, 1e6 / python);
        println!("  per-message overhead of the child: {:.1} µs", 1e6 / python - 1e6 / rust);
        Ok(())
    })
}
