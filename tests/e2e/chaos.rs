//! The chaos scenarios at a reduced size, on RabbitMQ nodes of their own (never the shared
//! broker): worker kills and closed connections, rolling restarts, a broker stopped and killed,
//! a cluster losing the node that leads the queues, and hostile input; then a node leading the
//! retry delay queues lost for good, a partition without a close, and resource alarms. The full size is
//! `warren-chaos` (docs/OPERATIONS.md). The conformance kit runs the same scenarios against the
//! Python probe step under `warren-exec`.

use std::path::PathBuf;

use warren_e2e::chaos::{self, Options, Scenario};

use crate::helpers::WORKER_BIN;

/// Runs `scenarios` and asserts every row meets the target: nothing lost, duplicated, healthy
/// dead-lettered or left over.
async fn run_scenarios(opts: &Options, scenarios: &[Scenario]) {
    let mut rows = Vec::new();
    for &scenario in scenarios {
        let row = chaos::run(scenario, opts).await.unwrap_or_else(|e| {
            panic!(
                "chaos scenario {} could not run: {e}\n(it starts its own RabbitMQ nodes: it needs root and Debian's \
                 rabbitmq-server, `apt-get install rabbitmq-server`)",
                scenario.name()
            )
        });
        println!("{}\n{}", chaos::Row::header(), row.line());
        rows.push(row);
    }
    for row in &rows {
        assert!(
            row.ok(),
            "{}\n{}\nhealthy dead letters: {:#?}\nleft in: {:?}",
            chaos::Row::header(),
            row.line(),
            row.healthy_dead,
            row.left_in
        );
    }
}

/// The reduced run of the test worker: 1,500 jobs, one round, 48 hostile messages of up to 8 MB.
fn reduced() -> Options {
    Options {
        worker_bin: PathBuf::from(WORKER_BIN),
        step_args: Vec::new(),
        max_concurrency: None,
        // Under /tmp: the nodes run as the `rabbitmq` user, who cannot reach a checkout under /root.
        dir: std::env::temp_dir().join("warren-chaos-e2e"),
        jobs: 1_500,
        rounds: 1,
        hostile: 48,
        huge_body: 8 * 1024 * 1024,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_duplicates_nothing_and_dead_letters_nothing_healthy() {
    let scenarios = [Scenario::Kills, Scenario::Rolling, Scenario::Broker, Scenario::Cluster, Scenario::Hostile];
    run_scenarios(&reduced(), &scenarios).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_outlive_a_lost_node_and_partitions_and_alarms_lose_nothing() {
    run_scenarios(&reduced(), &[Scenario::Retries, Scenario::Partition, Scenario::Alarm]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_step_under_warren_exec_passes_the_conformance_kit() {
    let probe = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/steps/probe_step.py");
    let opts = Options {
        worker_bin: crate::ml::worker_bin("exec"),
        step_args: vec!["--".into(), crate::exec::python().display().to_string(), probe.display().to_string()],
        max_concurrency: Some(2),
        dir: std::env::temp_dir().join("warren-conformance-e2e"),
        jobs: 2_000,
        rounds: 1,
        hostile: 48,
        huge_body: 8 * 1024 * 1024,
    };
    run_scenarios(&opts, &[Scenario::Kills, Scenario::Rolling, Scenario::Broker, Scenario::Hostile]).await;
}
