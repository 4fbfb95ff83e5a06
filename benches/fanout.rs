//! Fan-out pays off: a tune job of `FANOUT_TRIALS` trials (default 16) on the wine-quality data,
//! run with one train worker and then with two, each a separate process (release builds). Prints
//! the wall time of each, from submit to the job's last step.
//!
//! ```sh
//! cargo bench -p warren-e2e --bench fanout
//! ```

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use warren::{Config, EventKind, Names};
use warren_ops::spec::PipelineSpec;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const STEPS: &[&str] = &["ingest", "validate", "features", "tune", "train", "select", "evaluate", "register"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn build_workers() -> Res<PathBuf> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--release", "--quiet", "--bins"]).current_dir(repo());
    for s in STEPS {
        cmd.args(["-p", &format!("warren-{s}")]);
    }
    if !cmd.status()?.success() {
        return Err("building the worker binaries failed".into());
    }
    let exe = std::env::current_exe()?;
    Ok(exe.parent().and_then(Path::parent).ok_or("no target dir")?.to_path_buf())
}

fn spec(trials: usize) -> Res<PipelineSpec> {
    let alphas: Vec<String> = (0..trials).map(|i| format!("{:.4}", 0.001 * 1.6f64.powi(i as i32))).collect();
    let text = format!(
        r#"
name = "fanout-bench"
[[steps]]
step = "ingest"
params = {{ dataset = "winequality" }}
[[steps]]
step = "validate"
params = {{ min_rows = 500, min_class_count = 5 }}
[[steps]]
step = "features"
params = {{ test_fraction = 0.25, seed = 1 }}
[[steps]]
step = "tune"
params = {{ metric = "accuracy", search = [{{ algorithm = "logistic", grid = {{ alpha = [{}], max_iterations = [300] }} }}] }}
[[steps]]
step = "train"
[[steps]]
step = "select"
gather = true
[[steps]]
step = "evaluate"
[[steps]]
step = "register"
params = {{ model = "fanout-bench" }}
"#,
        alphas.join(", ")
    );
    Ok(PipelineSpec::parse(&text, "fanout-bench")?)
}

fn spawn(bin: &Path, step: &str, ns: &str, artifacts: &Path) -> Res<Child> {
    Ok(Command::new(bin.join(format!("warren-{step}")))
        .current_dir(repo())
        .env("WARREN_NAMESPACE", ns)
        .env("WARREN_ARTIFACTS", artifacts)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// Worker processes of one run, killed if the run fails half-way.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn run(bin: &Path, train_workers: usize, trials: usize) -> Res<Duration> {
    let ns = format!("bench-fanout-{}-{train_workers}", std::process::id());
    let artifacts = std::env::temp_dir().join(&ns);
    let mut children = Children(Vec::new());
    for step in STEPS {
        let copies = if *step == "train" { train_workers } else { 1 };
        for _ in 0..copies {
            children.0.push(spawn(bin, step, &ns, &artifacts)?);
        }
    }
    let mut config = Config::load(None, &[])?;
    config.namespace = ns.clone();
    let names = Names::new(&ns);
    let client = warren::Client::connect(&config).await?;
    let mut events = warren::events::subscribe(client.broker(), &names).await?;
    // Every step's queue has its consumers before the clock starts.
    let end = Instant::now() + Duration::from_secs(60);
    for step in STEPS {
        loop {
            let ch = client.broker().channel().await?;
            let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
            let q = ch.queue_declare(names.step_queue(step).as_str().into(), passive, Default::default()).await;
            let want = if *step == "train" { train_workers as u32 } else { 1 };
            if q.is_ok_and(|q| q.consumer_count() >= want) {
                break;
            }
            if Instant::now() > end {
                return Err(format!("no worker for {step}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let start = Instant::now();
    let job = client.submit(&spec(trials)?.job()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) if e.job_id == job && e.kind == EventKind::Succeeded && e.last_step => break,
            Ok(Some(e)) if e.job_id == job && e.kind == EventKind::Dead => {
                return Err(format!("the job died at {}: {:?}", e.step, e.error).into());
            }
            Ok(Some(_)) => {}
            _ => return Err("the job did not finish in 10 minutes".into()),
        }
    }
    let elapsed = start.elapsed();
    for c in &children.0 {
        Command::new("kill").arg("-TERM").arg(c.id().to_string()).status()?;
    }
    for mut c in std::mem::take(&mut children.0) {
        c.wait()?;
    }
    let mut declarer = warren::Declarer::new(client.broker(), &names);
    declarer.delete(STEPS).await?;
    let _ = std::fs::remove_dir_all(&artifacts);
    Ok(elapsed)
}

fn main() -> Res<()> {
    let trials: usize = std::env::var("FANOUT_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let bin = build_workers()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        println!("tune fan-out: {trials} logistic-regression trials on winequality (1,599 rows), release builds");
        let one = run(&bin, 1, trials).await?;
        let two = run(&bin, 2, trials).await?;
        println!("1 train worker : {:>8.2} s", one.as_secs_f64());
        println!("2 train workers: {:>8.2} s", two.as_secs_f64());
        println!("speed-up       : {:>8.2}x", one.as_secs_f64() / two.as_secs_f64());
        Ok(())
    })
}
