//! The chaos scenarios at a reduced size, on RabbitMQ nodes of their own (never the shared
//! broker): worker kills and closed connections, rolling restarts, a broker stopped and killed,
//! a cluster losing the node that leads the queues, and hostile input. The full size is
//! `warren-chaos` (docs/OPERATIONS.md).

use std::path::PathBuf;

use warren_e2e::chaos::{self, Options, Scenario};

use crate::helpers::WORKER_BIN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_duplicates_nothing_and_dead_letters_nothing_healthy() {
    let opts = Options {
        worker_bin: PathBuf::from(WORKER_BIN),
        // Under /tmp: the nodes run as the `rabbitmq` user, who cannot reach a checkout under /root.
        dir: std::env::temp_dir().join("warren-chaos-e2e"),
        jobs: 1_500,
        rounds: 1,
        hostile: 48,
        huge_body: 8 * 1024 * 1024,
    };
    let mut rows = Vec::new();
    for scenario in Scenario::ALL {
        let row = chaos::run(scenario, &opts).await.unwrap_or_else(|e| {
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
