//! One broker user per role, with the permissions `deploy/rabbitmq-definitions.json` ships,
//! tried on a vhost of the test's own: a worker runs its step, a submitter submits and reads the
//! registry but cannot touch queues, an operator reads dead letters and declares topology.

use std::{process::Stdio, time::Duration};

use tokio::process::Command;
use uuid::Uuid;
use warren::{Client, Config, Declarer, Hop, JobSpec, Names, StepTopology};
use warren_e2e::{Behaviour, Probe};

use crate::{
    helpers::{WORKER_BIN, rabbitmqctl, wait_for},
    ml::warren_bin,
};

async fn ctl(args: &[&str]) {
    let out = rabbitmqctl().args(args).output().await.expect("run rabbitmqctl (as root)");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Messages ready in `queue` (a passive declare), if it exists.
async fn ready(broker: &warren::Broker, queue: &str) -> Option<u32> {
    let ch = broker.channel().await.ok()?;
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let q = ch.queue_declare(queue.into(), passive, Default::default()).await.ok()?;
    let _ = ch.close(200, "counted".into()).await;
    Some(q.message_count())
}

fn url(user: &str, password: &str, vhost: &str) -> String {
    format!("amqp://{user}:{password}@127.0.0.1:5672/{vhost}")
}

fn config(url: &str) -> Config {
    Config::load_from(None, [("WARREN_AMQP_URL".to_owned(), url.to_owned())], &[]).expect("config")
}

fn warren(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(warren_bin());
    cmd.args(args)
        .env("WARREN_AMQP_URL", url)
        .env_remove("WARREN_NAMESPACE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_can_do_its_work_and_no_more() {
    let defs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rabbitmq-definitions.json"))
            .expect("definitions"),
    )
    .expect("definitions are JSON");
    let suffix = &Uuid::now_v7().simple().to_string()[20..];
    let vhost = format!("t-roles-{suffix}");
    ctl(&["add_vhost", &vhost]).await;
    let mut cleanup = Cleanup { vhost: vhost.clone(), users: Vec::new() };
    // The test itself inspects as guest.
    ctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]).await;
    let mut users = std::collections::BTreeMap::new();
    for p in defs["permissions"].as_array().expect("permissions") {
        let role = p["user"].as_str().expect("user");
        if role == "admin" {
            continue;
        }
        let (user, password) = (format!("{role}-{suffix}"), format!("pw-{}", Uuid::now_v7().simple()));
        ctl(&["add_user", &user, &password]).await;
        cleanup.users.push(user.clone());
        let perm = |k: &str| p[k].as_str().expect("regex").to_owned();
        ctl(&["set_permissions", "-p", &vhost, &user, &perm("configure"), &perm("write"), &perm("read")]).await;
        users.insert(role.to_owned(), (user, password));
    }
    let role_url = |role: &str| {
        let (u, p) = &users[role];
        url(u, p, &vhost)
    };

    let outcome = async {
        // The worker role runs a step (it declares its own topology and announces itself).
        let log = std::fs::File::create(std::env::temp_dir().join(format!("{vhost}-worker.log"))).expect("log");
        let mut worker = Command::new(WORKER_BIN)
            .args(["--step", "echo"])
            .env("WARREN_AMQP_URL", role_url("warren"))
            .env_remove("WARREN_NAMESPACE")
            .env("RUST_LOG", "info,lapin=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("worker");
        let admin = config(&url("guest", "guest", &vhost));
        let guest = Client::connect(&admin).await.expect("guest on the vhost");
        let names = Names::new("warren");
        let mut declarer = Declarer::new(guest.broker(), &names);
        declarer.base().await.expect("base");
        declarer
            .step(&StepTopology { step: "sink".into(), delivery_limit: 5, max_duration: None })
            .await
            .expect("sink");
        wait_for("the worker consuming", Duration::from_secs(30), || async {
            let out =
                warren(&role_url("warren-operator"), &["queues", "--json", "--step", "echo"]).output().await.ok()?;
            let rows: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            rows.as_array()?.iter().any(|r| r["step"] == "echo" && r["consumers"] == 1).then_some(())
        })
        .await;

        // The submitter submits a job; the worker runs it on to the sink.
        let submitter = Client::connect(&config(&role_url("warren-submitter"))).await.expect("submitter connects");
        let slip = vec![
            Hop::with_params("echo", &Behaviour::default()).expect("hop"),
            Hop::with_params("sink", &Behaviour::default()).expect("hop"),
        ];
        submitter.submit(&JobSpec::new("roles", slip, Probe { seq: 1, hops: 0 })).await.expect("the submitter submits");
        wait_for("the job at the sink", Duration::from_secs(30), || async {
            (ready(guest.broker(), "warren.step.sink").await? == 1).then_some(())
        })
        .await;
        // A job that dies at echo leaves a dead letter.
        let doomed =
            vec![Hop::with_params("echo", &Behaviour { permanent_on: Some(2), ..Default::default() }).expect("hop")];
        submitter.submit(&JobSpec::new("roles", doomed, Probe { seq: 2, hops: 0 })).await.expect("submit");
        wait_for("a dead letter at echo", Duration::from_secs(30), || async {
            (ready(guest.broker(), "warren.dead.echo").await? == 1).then_some(())
        })
        .await;
        // It reads the registry (warren steps) ...
        let out = warren(&role_url("warren-submitter"), &["steps", "--json"]).output().await.expect("steps");
        assert!(out.status.success(), "a submitter reads the registry: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"echo\""));
        // ... but may not read, replay or purge dead letters, nor declare topology.
        for args in [
            vec!["dlq", "list", "--step", "echo"],
            vec!["dlq", "purge", "--step", "echo", "--yes", "--reason", "cleaning up after a test"],
            vec!["topology", "declare", "--step", "other"],
        ] {
            let out = warren(&role_url("warren-submitter"), &args).output().await.expect("run");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{args:?} as a submitter: {err} {}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(err.contains("ACCESS_REFUSED") || err.contains("access"), "{args:?}: {err}");
            assert!(!err.contains("pw-"), "no password in errors: {err}");
        }
        // The operator reads dead letters and declares topology.
        for args in [vec!["dlq", "list", "--step", "echo"], vec!["topology", "declare", "--step", "other"]] {
            let out = warren(&role_url("warren-operator"), &args).output().await.expect("run");
            assert!(out.status.success(), "{args:?} as the operator: {}", String::from_utf8_lossy(&out.stderr));
        }
        let _ = worker.kill().await;
        guest.broker().close().await;
    };
    let result = tokio::time::timeout(Duration::from_secs(120), outcome).await;
    drop(cleanup);
    result.expect("the roles check finished within 2 minutes");
}

/// Deletes the test's vhost and users when dropped, so a failing assertion leaves nothing behind.
struct Cleanup {
    vhost: String,
    users: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ctl = |args: &[&str]| {
            let line = std::env::var("WARREN_TEST_RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".to_owned());
            let mut words = line.split_whitespace();
            let mut cmd = std::process::Command::new(words.next().unwrap_or("rabbitmqctl"));
            let _ = cmd.args(words).args(args).output();
        };
        ctl(&["delete_vhost", &self.vhost]);
        for user in &self.users {
            ctl(&["delete_user", user]);
        }
    }
}
