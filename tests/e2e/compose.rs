//! docker-compose.yml on a real container engine, used as an operator would: the images the
//! Dockerfile builds, the compose file as shipped, the walkthrough of docs/OPERATIONS.md run as
//! written (a user's own spec and CSV submitted from the tools container, followed to a
//! prediction), then a 1-million-row table through every step under the compose memory limits,
//! train scaled to three copies, a worker container killed mid-job, a worker cut off from the
//! broker's network past its heartbeat, and a worker driven past its memory limit. It prints a
//! table of what it did and what it saw, like `warren-chaos`.
//!
//! The engine here is podman with podman-compose (`WARREN_COMPOSE`, default `podman-compose`)
//! behind a `docker` stand-in; it needs the images `.ci/image` builds and runs from `.ci/run`:
//!
//! ```sh
//! .ci/image && WARREN_COMPOSE=podman-compose cargo test --test e2e -- --ignored --nocapture compose::
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::process::Command;

use crate::{helpers::wait_every, ml::warren_bin};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The `docker` the walkthrough calls: `docker compose` is the compose command of
/// `WARREN_COMPOSE`, anything else podman. Where they differ from Docker, the stand-in does what
/// Docker does: `up --wait` waits for every container's health check (podman 4.3 without systemd
/// runs none on its own; the test's ticker runs them while the stack is up), and `run SERVICE`
/// enables the service's profiles (podman-compose finds no service of an inactive profile) and
/// leaves the running stack alone (podman-compose's `run` brings the dependencies `up` again,
/// which recreates every container of a scaled project; Docker starts only those not running,
/// and whenever the walkthrough runs a tool the stack is up).
const DOCKER: &str = r#"#!/usr/bin/env bash
set -uo pipefail
[ "${1:-}" = compose ] || exec podman "$@"
shift
wait=0
args=()
for a in "$@"; do if [ "$a" = --wait ]; then wait=1; else args+=("$a"); fi; done
profiles=()
if [ "${args[0]:-}" = run ]; then
  for p in $(grep -o 'profiles: *\[[^]]*\]' docker-compose.yml | grep -o '"[^"]*"' | tr -d '"' | sort -u); do
    profiles+=(--profile "$p")
  done
  args=(run --no-deps "${args[@]:1}")
fi
$WARREN_COMPOSE "${profiles[@]}" "${args[@]}" || exit $?
[ "$wait" = 1 ] || exit 0
for _ in $(seq 1 120); do
  pending=0
  for c in $(podman ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"); do
    podman healthcheck run "$c" >/dev/null 2>&1 || pending=1
  done
  [ "$pending" = 0 ] && exit 0
  sleep 2
done
echo "docker compose up --wait: not every container was healthy within 4 minutes" >&2
exit 1
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A penguins-like table of `rows` rows (three species, two text columns, gaps written `NA`),
/// the shape of what a user brings; the same seed gives the same bytes.
fn table(rows: usize, seed: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = String::with_capacity(rows * 56);
    out.push_str("species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year\n");
    let species = [
        ("Adelie", 38.8, 18.3, 190.0, 3700.0),
        ("Chinstrap", 48.8, 18.4, 196.0, 3733.0),
        ("Gentoo", 47.5, 15.0, 217.0, 5076.0),
    ];
    let islands = ["Biscoe", "Dream", "Torgersen"];
    for _ in 0..rows {
        let (name, bill, depth, flipper, mass) = species[rng.usize(0..3)];
        let mut cell = |v: f64, scale: f64, digits: usize| {
            let value = v + (rng.f64() - 0.5) * 2.0 * scale;
            if rng.u8(0..50) == 0 { "NA".to_owned() } else { format!("{value:.digits$}") }
        };
        let measures = [cell(bill, 3.0, 1), cell(depth, 1.2, 1), cell(flipper, 7.0, 0), cell(mass, 450.0, 0)];
        let sex = match rng.u8(0..50) {
            0 => "NA",
            n if n % 2 == 0 => "male",
            _ => "female",
        };
        let cells = [
            name.to_owned(),
            islands[rng.usize(0..3)].to_owned(),
            measures[0].clone(),
            measures[1].clone(),
            measures[2].clone(),
            measures[3].clone(),
            sex.to_owned(),
            (2007 + rng.u32(0..3)).to_string(),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// A job's spec for `csv` in the input folder: `trials` is the tune step's `search`.
fn spec(name: &str, csv: &str, trials: &str) -> String {
    format!(
        r#"name = "{name}"

[[steps]]
step = "ingest"
params = {{ csv = "data:{csv}", target = "species" }}

[[steps]]
step = "validate"
params = {{ min_rows = 100, min_class_count = 10 }}

[[steps]]
step = "features"
params = {{ test_fraction = 0.25, seed = 7 }}

[[steps]]
step = "tune"
params = {{ metric = "accuracy", search = [{trials}] }}

[[steps]]
step = "train"

[[steps]]
step = "select"
gather = true

[[steps]]
step = "evaluate"

[[steps]]
step = "register"
params = {{ model = "{name}" }}
"#
    )
}

/// One running container of the project.
#[derive(Debug, Clone)]
struct Container {
    name: String,
    /// What the worker names itself after (`{step}@{hostname}#{pid}`).
    hostname: String,
}

/// What one scenario did and saw, for the table.
struct Row {
    scenario: &'static str,
    did: String,
    saw: String,
    jobs: usize,
    done: usize,
    /// Dead-lettered jobs that could not succeed (a table too big for its step's limit).
    dead: usize,
    healthy_dead: usize,
    reruns: usize,
    secs: f64,
}

impl Row {
    /// The row of a scenario that ran the `healthy` jobs (which should finish) and the `doomed`
    /// ones (which cannot), from their statuses.
    fn of(
        scenario: &'static str,
        did: String,
        saw: String,
        healthy: &[&Value],
        doomed: &[&Value],
        started: Instant,
    ) -> Self {
        let state = |s: &&Value, want: &str| s["state"] == want;
        Row {
            scenario,
            did,
            saw,
            jobs: healthy.len() + doomed.len(),
            done: healthy.iter().chain(doomed).filter(|s| state(s, "done")).count(),
            dead: doomed.iter().filter(|s| state(s, "dead")).count(),
            healthy_dead: healthy.iter().filter(|s| state(s, "dead")).count(),
            reruns: healthy.iter().map(|s| reruns(s)).sum(),
            secs: started.elapsed().as_secs_f64(),
        }
    }
}

struct Stack {
    dir: PathBuf,
    project: String,
    amqp_port: u16,
    path: String,
    compose: String,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Stack {
    /// A compose project of its own (name, ports, volumes, network) in a folder holding what a
    /// checkout holds for compose: the compose file, deploy/, input/ and data/.
    async fn new() -> Stack {
        let compose = std::env::var("WARREN_COMPOSE").unwrap_or_else(|_| "podman-compose".into());
        for (tool, how) in [
            ("podman", "apt-get install podman runc"),
            (compose.as_str(), "pip install podman-compose (WARREN_COMPOSE names it)"),
        ] {
            let found = std::process::Command::new(tool).arg("--version").output().map(|o| o.status.success());
            assert!(matches!(found, Ok(true)), "the compose test needs `{tool}`: {how}; .ci/run installs it");
        }
        for image in ["warren:latest", "rabbitmq:4-management"] {
            let exists = std::process::Command::new("podman").args(["image", "exists", image]).status();
            assert!(matches!(exists, Ok(s) if s.success()), "no image {image}: build the images first with .ci/image");
        }
        let id = uuid::Uuid::now_v7().simple().to_string();
        let project = format!("warren-e2e-{}", &id[24..]);
        let dir = std::env::temp_dir().join(&project);
        std::fs::create_dir_all(dir.join("deploy")).expect("project folder");
        std::fs::create_dir_all(dir.join("input")).expect("input folder");
        std::fs::create_dir_all(dir.join("data")).expect("data folder");
        std::fs::create_dir_all(dir.join("bin")).expect("bin folder");
        for f in ["docker-compose.yml", "deploy/rabbitmq.conf", "deploy/rabbitmq-definitions.json", "data/penguins.csv"]
        {
            std::fs::copy(Path::new(REPO).join(f), dir.join(f)).unwrap_or_else(|e| panic!("copy {f}: {e}"));
        }
        let docker = dir.join("bin/docker");
        std::fs::write(&docker, DOCKER).expect("docker stand-in");
        std::process::Command::new("chmod").arg("+x").arg(&docker).status().expect("chmod");
        let path = format!("{}:{}", dir.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        let mut stack = Stack { dir, project, amqp_port: free_port(), path, compose, ticker: None };
        stack.ticker = Some(stack.health_ticker());
        stack
    }

    /// A command in the project folder with the project's environment.
    fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.dir)
            .env("PATH", &self.path)
            .env("COMPOSE_PROJECT_NAME", &self.project)
            .env("WARREN_COMPOSE", &self.compose)
            .env("WARREN_AMQP_PORT", self.amqp_port.to_string())
            .env("WARREN_MANAGEMENT_PORT", free_port().to_string())
            // This machine's podman settings (runc, ulimits): .ci/containers.conf says why.
            .env("CONTAINERS_CONF", Path::new(REPO).join(".ci/containers.conf"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, program: &str, args: &[&str]) -> Output {
        self.cmd(program).args(args).output().await.unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
    }

    async fn docker(&self, args: &[&str]) -> Output {
        self.run("docker", args).await
    }

    /// `docker compose ARGS`, which must succeed.
    async fn compose(&self, args: &[&str]) -> String {
        let mut all = vec!["compose"];
        all.extend_from_slice(args);
        let out = self.docker(&all).await;
        assert!(out.status.success(), "docker compose {}:\n{}", args.join(" "), text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the health checks of every container of the project every 5 s, as Docker's engine
    /// does on its own (podman 4.3 schedules them through systemd, which this machine lacks).
    fn health_ticker(&self) -> tokio::task::JoinHandle<()> {
        let (project, conf) = (self.project.clone(), Path::new(REPO).join(".ci/containers.conf"));
        tokio::spawn(async move {
            loop {
                let ids = Command::new("podman")
                    .args(["ps", "-q", "--filter", &format!("label=com.docker.compose.project={project}")])
                    .env("CONTAINERS_CONF", &conf)
                    .output()
                    .await;
                if let Ok(ids) = ids {
                    for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                        let _ = Command::new("podman")
                            .args(["healthcheck", "run", id])
                            .env("CONTAINERS_CONF", &conf)
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status()
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_secs(5)).await; // the engine's health-check interval
            }
        })
    }

    /// The running containers of one service.
    async fn containers(&self, service: &str) -> Vec<Container> {
        let project = format!("label=com.docker.compose.project={}", self.project);
        let service = format!("label=com.docker.compose.service={service}");
        let out =
            self.run("podman", &["ps", "--filter", &project, "--filter", &service, "--format", "{{.Names}}"]).await;
        let mut found = Vec::new();
        for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let host = self.inspect(name, "{{.Config.Hostname}}").await;
            found.push(Container { name: name.to_owned(), hostname: host });
        }
        found
    }

    async fn inspect(&self, name: &str, format: &str) -> String {
        let out = self.run("podman", &["inspect", "--format", format, name]).await;
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Restarts of every worker container so far, by name.
    async fn restarts(&self) -> BTreeMap<String, u32> {
        let project = format!("label=com.docker.compose.project={}", self.project);
        let out = self.run("podman", &["ps", "-a", "--filter", &project, "--format", "{{.Names}}"]).await;
        let mut counts = BTreeMap::new();
        for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if name.contains("_warren_tmp") || name.contains("-warren-run-") {
                continue; // a `compose run` of the tools
            }
            let n = self.inspect(name, "{{.RestartCount}}").await.parse().unwrap_or(0);
            counts.insert(name.to_owned(), n);
        }
        counts
    }

    /// The `warren` command on the host, as the operator's user, against the stack's broker
    /// (published on the host's loopback): for following jobs without a container per look.
    async fn warren(&self, args: &[&str]) -> Output {
        let url = format!("amqp://warren-operator:change-me-operator@127.0.0.1:{}/warren", self.amqp_port);
        Command::new(warren_bin())
            .args(args)
            .env("WARREN_AMQP_URL", url)
            .env("WARREN_NAMESPACE", "warren")
            .env("WARREN_ARTIFACTS", self.dir.join("host-artifacts"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run warren")
    }

    async fn status(&self, job: &str) -> Option<Value> {
        let out = self.warren(&["status", job, "--json"]).await;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Submits input/`file` from the tools container, as the walkthrough does; the job's id.
    async fn submit(&self, file: &str) -> String {
        let out = self.compose(&["run", "--rm", "warren", "--json", "submit", &format!("input/{file}")]).await;
        let v: Value = out
            .lines()
            .find_map(|l| serde_json::from_str::<Value>(l).ok().filter(|v| v.get("job").is_some()))
            .unwrap_or_else(|| panic!("no job id from submit: {out}"));
        v["job"].as_str().expect("job id").to_owned()
    }

    /// Writes a spec (and its table, when given) into the input folder both ingest and the tools
    /// container see.
    fn input(&self, file: &str, content: &str) {
        std::fs::write(self.dir.join("input").join(file), content).expect("input file");
    }

    /// Waits until `job` is done or dead; its status.
    async fn finished(&self, job: &str, deadline: Duration) -> Value {
        wait_every(&format!("job {job} to finish"), deadline, Duration::from_secs(2), || async {
            self.status(job).await.filter(|s| matches!(s["state"].as_str(), Some("done" | "dead")))
        })
        .await
    }

    /// Waits for a `started` event of `step` in `job` that has not `succeeded` yet; its worker.
    async fn running(&self, job: &str, step: &str, deadline: Duration) -> String {
        wait_every(&format!("{step} running in job {job}"), deadline, Duration::from_millis(500), || async {
            let s = self.status(job).await?;
            let events = s["events"].as_array()?;
            let done: BTreeSet<&str> = events
                .iter()
                .filter(|e| e["step"] == step && e["kind"] == "succeeded")
                .filter_map(|e| e["message_id"].as_str())
                .collect();
            events
                .iter()
                .filter(|e| e["step"] == step && e["kind"] == "started")
                .find(|e| !done.contains(e["message_id"].as_str().unwrap_or_default()))
                .and_then(|e| e["worker"].as_str().map(str::to_owned))
        })
        .await
    }

    /// The container a worker id (`{step}@{hostname}#{pid}`) belongs to.
    async fn container_of(&self, service: &str, worker: &str) -> Container {
        let host = worker.split_once('@').and_then(|(_, r)| r.split_once('#')).map(|(h, _)| h).unwrap_or_default();
        let all = self.containers(service).await;
        all.iter()
            .find(|c| c.hostname == host)
            .cloned()
            .unwrap_or_else(|| panic!("no {service} container is {worker}: {all:?}"))
    }

    async fn healthy(&self, name: &str) -> bool {
        self.run("podman", &["healthcheck", "run", name]).await.status.success()
    }

    async fn consumers(&self, step: &str) -> Option<u64> {
        let out = self.warren(&["queues", "--json"]).await;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let rows = v.as_array().or_else(|| v["queues"].as_array())?;
        rows.iter().find(|r| r["step"] == step).and_then(|r| r["consumers"].as_u64())
    }

    /// The peak resident memory of each worker's process (its container's PID 1), in MB.
    async fn peaks(&self) -> BTreeMap<String, u64> {
        let mut peaks = BTreeMap::new();
        for service in [
            "warren-ingest",
            "warren-validate",
            "warren-features",
            "warren-tune",
            "warren-train",
            "warren-select",
            "warren-evaluate",
            "warren-register",
            "warren-predict",
        ] {
            for c in self.containers(service).await {
                let out = self.run("podman", &["exec", &c.name, "cat", "/proc/1/status"]).await;
                let kb = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("VmHWM:")
                            .map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                let entry = peaks.entry(service.to_owned()).or_insert(0);
                *entry = (*entry).max(kb / 1024);
            }
        }
        peaks
    }

    async fn down(mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        let out = self.docker(&["compose", "down", "-v", "-t", "5"]).await;
        if !out.status.success() {
            eprintln!("docker compose down -v: {}", text(&out));
        }
        // What podman-compose's `down` leaves (containers past the file's replicas, which a
        // `--scale` made, and so the network and volumes they hold): found by the project label.
        // Twice: a container others depend on (the broker) is refused while they exist.
        let label = format!("label=com.docker.compose.project={}", self.project);
        for _ in 0..2 {
            let left = self.run("podman", &["ps", "-aq", "--filter", &label]).await;
            let ids: Vec<String> =
                String::from_utf8_lossy(&left.stdout).split_whitespace().map(str::to_owned).collect();
            if ids.is_empty() {
                break;
            }
            let mut args = vec!["rm", "-f", "-t", "5"];
            args.extend(ids.iter().map(String::as_str));
            self.run("podman", &args).await;
        }
        self.run("podman", &["network", "rm", "-f", &format!("{}_default", self.project)]).await;
        for volume in ["artifacts", "rabbitmq-data"] {
            self.run("podman", &["volume", "rm", "-f", &format!("{}_{volume}", self.project)]).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The message ids a step of the job ran to success more than once.
fn reruns(status: &Value) -> usize {
    let mut seen = BTreeMap::<(String, String), u32>::new();
    for e in status["events"].as_array().into_iter().flatten().filter(|e| e["kind"] == "succeeded") {
        let key = (
            e["step"].as_str().unwrap_or_default().to_owned(),
            e["message_id"].as_str().unwrap_or_default().to_owned(),
        );
        *seen.entry(key).or_default() += 1;
    }
    seen.values().filter(|n| **n > 1).count()
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<12} {:>4} {:>4} {:>4} {:>4} {:>7} {:>7} {:>6}  did / saw",
        "scenario", "jobs", "done", "dead", "lost", "h. dead", "re-runs", "time"
    );
    for r in rows {
        let lost = r.jobs - r.done - r.dead;
        println!(
            "{:<12} {:>4} {:>4} {:>4} {:>4} {:>7} {:>7} {:>5.0}s  {}",
            r.scenario, r.jobs, r.done, r.dead, lost, r.healthy_dead, r.reruns, r.secs, r.did
        );
        println!("{:<59}  -> {}", "", r.saw);
    }
}

/// The commands of the walkthrough in docs/OPERATIONS.md (the fenced block after its marker).
fn walkthrough() -> String {
    let doc = std::fs::read_to_string(Path::new(REPO).join("docs/OPERATIONS.md")).expect("docs/OPERATIONS.md");
    let marker = "<!-- compose walkthrough: tests/e2e/compose.rs runs this block as written -->";
    let after = &doc[doc.find(marker).expect("the walkthrough's marker in docs/OPERATIONS.md") + marker.len()..];
    let body = after.trim_start().strip_prefix("```sh\n").expect("a ```sh block after the marker");
    body[..body.find("\n```").expect("the block's end")].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs podman, podman-compose and the images of .ci/image; .ci/run runs it"]
async fn the_compose_stack_runs_a_users_csv_and_keeps_every_job_through_scaling_kills_partitions_and_oom() {
    let stack = Stack::new().await;
    let mut rows = Vec::new();
    let result = scenarios(&stack, &mut rows).await;
    print_table(&rows);
    if result.is_err() {
        let logs = stack.docker(&["compose", "logs", "--tail", "40"]).await;
        eprintln!("{}", text(&logs));
    }
    stack.down().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn scenarios(stack: &Stack, rows: &mut Vec<Row>) -> Result<(), Box<dyn std::any::Any + Send>> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(async {
        walk(stack, rows).await;
        million(stack, rows).await;
        scale_and_kill(stack, rows).await;
        partition(stack, rows).await;
        oom(stack, rows).await;
    })
    .catch_unwind()
    .await
}

/// The walkthrough, exactly as written: up, a user's CSV and spec in ./input, submitted from
/// the tools container, a prediction.
async fn walk(stack: &Stack, rows: &mut Vec<Row>) {
    let started = Instant::now();
    let script = walkthrough();
    // Traced with the time of each command (PS4), which the log shows.
    let out = stack
        .cmd("bash")
        .args(["-xeuo", "pipefail", "-c", &script])
        .env("PS4", "+ $(date +%T) ")
        .output()
        .await
        .expect("bash");
    let said = text(&out);
    assert!(out.status.success(), "the walkthrough of docs/OPERATIONS.md failed:\n{said}");
    for line in String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.starts_with("+ ")) {
        println!("walkthrough {line}");
    }
    // The prediction of the walkthrough's last `predict` (a Torgersen penguin is an Adelie).
    assert!(said.contains("Adelie"), "the walkthrough's prediction names the class: {said}");
    let jobs: Value =
        serde_json::from_slice(&stack.warren(&["jobs", "--json"]).await.stdout).expect("warren jobs --json");
    let job =
        jobs.as_array().and_then(|a| a.iter().find(|j| j["pipeline"] == "my-table")).expect("the walkthrough's job");
    assert_eq!(job["state"], "done", "{job}");
    let trains = stack.containers("warren-train").await.len();
    assert_eq!(trains, 3, "the walkthrough's last line scales train to 3");
    rows.push(Row::of(
        "walkthrough",
        "docs/OPERATIONS.md as written: up --wait, own CSV + spec in ./input, submit from the tools container, predict, scale train to 3".into(),
        "job done, model my-table v1, prediction Adelie; 3 train containers".into(),
        &[job],
        &[],
        started,
    ));
}

/// A 1-million-row table (49 MB, text columns and gaps) through every step under the compose
/// memory limits: no step is OOM-killed, and the peaks are printed.
async fn million(stack: &Stack, rows: &mut Vec<Row>) {
    let started = Instant::now();
    let before = stack.restarts().await;
    stack.input("million.csv", &table(1_000_000, 1));
    // A depth-4 tree trains in seconds on 750,000 rows (logistic regression takes minutes).
    stack.input(
        "million.toml",
        &spec("million", "million.csv", r#"{ algorithm = "decision_tree", grid = { max_depth = [4] } }"#),
    );
    let job = stack.submit("million.toml").await;
    let status = stack.finished(&job, Duration::from_secs(900)).await;
    assert_eq!(status["state"], "done", "the 1M-row job: {}", status["dead"]);
    let after = stack.restarts().await;
    assert_eq!(before, after, "no container restarted (OOM-killed) on 1M rows");
    let peaks = stack.peaks().await;
    let saw = peaks
        .iter()
        .map(|(s, mb)| format!("{} {mb} MB", s.trim_start_matches("warren-")))
        .collect::<Vec<_>>()
        .join(", ");
    rows.push(Row::of(
        "1M rows",
        "a 1,000,000-row CSV (49 MB, text columns, gaps) through every step under the compose limits".into(),
        format!("done, no restart; peak RSS: {saw}"),
        &[&status],
        &[],
        started,
    ));
}

/// The tune grid of the scale and partition jobs on 120,000 rows: six trials of a few seconds
/// each.
const TRIALS: &str =
    r#"{ algorithm = "random_forest", grid = { n_estimators = [100, 150], max_depth = [6, 8, 10], seed = [1] } }"#;

/// Four trials of several seconds each, for the kill.
const LONG_TRIALS: &str =
    r#"{ algorithm = "random_forest", grid = { n_estimators = [200, 250], max_depth = [8, 10], seed = [1] } }"#;

/// Train at three copies: one job's trials spread over them; then one train container killed
/// mid-trial: the job still finishes and the container comes back.
async fn scale_and_kill(stack: &Stack, rows: &mut Vec<Row>) {
    stack.input("work.csv", &table(120_000, 2));
    stack.input("spread.toml", &spec("spread", "work.csv", TRIALS));
    let started = Instant::now();
    let job = stack.submit("spread.toml").await;
    let status = stack.finished(&job, Duration::from_secs(600)).await;
    assert_eq!(status["state"], "done", "{}", status["dead"]);
    let workers: BTreeSet<&str> = status["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["step"] == "train" && e["kind"] == "succeeded")
        .filter_map(|e| e["worker"].as_str())
        .collect();
    assert_eq!(workers.len(), 3, "six trials spread over the three train containers: {workers:?}");
    rows.push(Row::of(
        "scale",
        "train at 3 copies (docker compose up -d --scale warren-train=3), a job of 6 trials".into(),
        format!("done; trials ran on {} train containers", workers.len()),
        &[&status],
        &[],
        started,
    ));

    let started = Instant::now();
    // Longer trials: the kill must land while one runs (seen started, not yet succeeded).
    stack.input("kill.toml", &spec("kill", "work.csv", LONG_TRIALS));
    let job = stack.submit("kill.toml").await;
    let worker = stack.running(&job, "train", Duration::from_secs(300)).await;
    let victim = stack.container_of("warren-train", &worker).await;
    let restarts = stack.inspect(&victim.name, "{{.RestartCount}}").await;
    // The worker's process killed from outside, as a crash or the kernel's OOM killer would:
    // `podman kill` instead counts as an operator's stop, which `restart: unless-stopped` obeys.
    let pid = stack.inspect(&victim.name, "{{.State.Pid}}").await;
    let killed = stack.run("kill", &["-KILL", &pid]).await;
    assert!(killed.status.success(), "kill -KILL {pid} ({}): {}", victim.name, text(&killed));
    let status = stack.finished(&job, Duration::from_secs(600)).await;
    assert_eq!(status["state"], "done", "{}", status["dead"]);
    let redelivered = status["events"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["step"] == "train" && e["delivery_count"].as_u64().unwrap_or(0) >= 1);
    assert!(redelivered, "the killed worker's trial was delivered again");
    let back =
        wait_every("the killed container to restart", Duration::from_secs(120), Duration::from_secs(2), || async {
            let n = stack.inspect(&victim.name, "{{.RestartCount}}").await;
            (n != restarts && stack.healthy(&victim.name).await).then_some(n)
        })
        .await;
    rows.push(Row::of(
        "kill",
        format!("kill -9 of {}'s worker process while it ran a trial", victim.name),
        format!("trial redelivered to another copy, job done; container restarted (restarts {restarts} -> {back}) and healthy"),
        &[&status],
        &[],
        started,
    ));
}

/// A train container cut off from the broker's network while it runs a trial, for longer than
/// two heartbeats, then connected again.
async fn partition(stack: &Stack, rows: &mut Vec<Row>) {
    let started = Instant::now();
    let network = format!("{}_default", stack.project);
    stack.input("partition.toml", &spec("partition", "work.csv", TRIALS));
    let job = stack.submit("partition.toml").await;
    let worker = stack.running(&job, "train", Duration::from_secs(300)).await;
    let victim = stack.container_of("warren-train", &worker).await;
    let before = stack.consumers("train").await.unwrap_or(0);
    let cut = stack.run("podman", &["network", "disconnect", &network, &victim.name]).await;
    assert!(cut.status.success(), "podman network disconnect: {}", text(&cut));
    let cut_at = Instant::now();
    // The broker notices after two missed heartbeats (heartbeat=15 in compose's URL).
    let fewer = wait_every(
        "the broker to drop the cut-off worker's consumer",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || async { stack.consumers("train").await.filter(|n| *n < before) },
    )
    .await;
    let noticed = cut_at.elapsed().as_secs();
    // The worker sees the missed heartbeats too (once the message it holds has settled): its
    // health check turns unhealthy while it waits for the broker, as `docker compose ps` says.
    wait_every(
        "the cut-off worker's health check to fail",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || async { (!stack.healthy(&victim.name).await).then_some(()) },
    )
    .await;
    let unhealthy_after = cut_at.elapsed().as_secs();
    let joined = stack.run("podman", &["network", "connect", &network, &victim.name]).await;
    assert!(joined.status.success(), "podman network connect: {}", text(&joined));
    wait_every(
        "the cut-off worker to consume again by itself",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || async {
            (stack.consumers("train").await == Some(before) && stack.healthy(&victim.name).await).then_some(())
        },
    )
    .await;
    let status = stack.finished(&job, Duration::from_secs(600)).await;
    assert_eq!(status["state"], "done", "{}", status["dead"]);
    let restarts = stack.inspect(&victim.name, "{{.RestartCount}}").await;
    rows.push(Row::of(
        "partition",
        format!("{} disconnected from {network} mid-trial, reconnected after the broker noticed", victim.name),
        format!(
            "broker dropped its consumer after {noticed} s ({before} -> {fewer}), unhealthy after {unhealthy_after} s; once connected it resumed by itself (restarts {restarts}, healthy, {before} consumers), job done"
        ),
        &[&status],
        &[],
        started,
    ));
    assert_eq!(reruns(&status), 0, "no step ran twice: {status}");
}

/// Ingest driven past its memory limit by a table several times the size it is sized for, with
/// a healthy job behind it: only ingest restarts, the healthy job finishes, the big one is
/// dead-lettered as `crash` after the delivery limit (not a healthy job).
async fn oom(stack: &Stack, rows: &mut Vec<Row>) {
    let started = Instant::now();
    let before = stack.restarts().await;
    stack.input("huge.csv", &table(4_000_000, 3));
    stack.input("huge.toml", &spec("huge", "huge.csv", r#"{ algorithm = "logistic", grid = { alpha = [1.0] } }"#));
    stack
        .input("healthy.toml", &spec("healthy", "work.csv", r#"{ algorithm = "logistic", grid = { alpha = [1.0] } }"#));
    let huge = stack.submit("huge.toml").await;
    let healthy = stack.submit("healthy.toml").await;
    let dead = stack.finished(&huge, Duration::from_secs(900)).await;
    let fine = stack.finished(&healthy, Duration::from_secs(600)).await;
    assert_eq!(fine["state"], "done", "the healthy job behind the OOM: {}", fine["dead"]);
    assert_eq!(dead["state"], "dead", "the job that cannot fit: {dead}");
    let reason = dead["dead"][0]["error"].as_str().unwrap_or_default().to_owned();
    assert_eq!(dead["dead"][0]["kind"], "crash", "dead-lettered as a crash: {}", dead["dead"]);
    let after = stack.restarts().await;
    let restarted: Vec<&String> = after.iter().filter(|(n, c)| before.get(*n) != Some(c)).map(|(n, _)| n).collect();
    assert!(restarted.iter().all(|n| n.contains("ingest")), "only ingest restarted: {restarted:?}");
    assert!(!restarted.is_empty(), "ingest was OOM-killed and restarted");
    rows.push(Row::of(
        "oom",
        "a 4,000,000-row CSV for ingest (sized for 1M rows), a healthy job behind it".into(),
        format!(
            "ingest OOM-killed and restarted ({} restarts), no other container restarted; healthy job done; the huge one dead ({}): {reason}",
            after.iter().filter(|(n, _)| n.contains("ingest")).map(|(_, c)| *c).sum::<u32>(),
            dead["dead"][0]["kind"].as_str().unwrap_or_default(),
        ),
        &[&fine],
        &[&dead],
        started,
    ));
}
