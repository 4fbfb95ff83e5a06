//! RabbitMQ nodes of the chaos run's own: own ports, own data and log folders, never the shared
//! broker on 5672. Started with Debian's `rabbitmq-server` (which runs the node as the `rabbitmq`
//! user, so the folders are handed to that user) and driven with `rabbitmqctl -n NODE`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::process::Command;

use super::ChaosError;

/// One RabbitMQ node started by the chaos run.
#[derive(Debug)]
pub struct Node {
    /// `wchaos-…@localhost`.
    pub name: String,
    /// AMQP port on 127.0.0.1.
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
}

/// A port nobody listens on now (the kernel's choice, released at once).
pub fn free_port() -> Result<u16, ChaosError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| ChaosError(format!("no free port: {e}")))?;
    l.local_addr().map(|a| a.port()).map_err(|e| ChaosError(format!("no free port: {e}")))
}

async fn run(cmd: &mut Command, what: &str) -> Result<String, ChaosError> {
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .map_err(|_| ChaosError(format!("{what} did not finish within 120 s")))?
        .map_err(|e| {
            ChaosError(format!("{what}: {e} (is RabbitMQ installed? `apt-get install rabbitmq-server`, run as root)"))
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let text = String::from_utf8_lossy(&out.stdout);
        return Err(ChaosError(format!("{what} failed: {} {}", err.trim(), text.trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Node {
    /// Starts a node named `{prefix}-{i}` with its folders under `root`, and waits until it runs.
    pub async fn start(root: &Path, prefix: &str, i: usize) -> Result<Node, ChaosError> {
        Self::start_with(root, prefix, i, "").await
    }

    /// Like [`Node::start`], with `extra` appended to the node's `rabbitmq.conf` (a TLS listener).
    pub async fn start_with(root: &Path, prefix: &str, i: usize, extra: &str) -> Result<Node, ChaosError> {
        let name = format!("{prefix}-{i}@localhost");
        let dir = root.join(format!("node{i}"));
        std::fs::create_dir_all(dir.join("mnesia")).map_err(|e| ChaosError(format!("{}: {e}", dir.display())))?;
        std::fs::create_dir_all(dir.join("log")).map_err(|e| ChaosError(format!("{}: {e}", dir.display())))?;
        let (port, dist_port) = (free_port()?, free_port()?);
        let extra = extra.to_owned();
        let conf = format!(
            "listeners.tcp.default = 127.0.0.1:{port}\nvm_memory_high_watermark.absolute = 3GB\n\
             disk_free_limit.absolute = 1GB\nloopback_users = none\n{extra}"
        );
        let write = |f: &str, text: &str| {
            std::fs::write(dir.join(f), text).map_err(|e| ChaosError(format!("{}: {e}", dir.join(f).display())))
        };
        write("rabbitmq.conf", &conf)?;
        write("enabled_plugins", "[].\n")?;
        write("rabbitmq-env.conf", "")?;
        run(Command::new("chown").args(["-R", "rabbitmq:rabbitmq"]).arg(root), "chown the node folders").await?;
        let node = Node { name, port, dist_port, dir };
        node.boot().await?;
        Ok(node)
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let d = |f: &str| self.dir.join(f).display().to_string();
        vec![
            ("RABBITMQ_NODENAME", self.name.clone()),
            ("RABBITMQ_NODE_PORT", self.port.to_string()),
            ("RABBITMQ_DIST_PORT", self.dist_port.to_string()),
            ("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf")),
            ("RABBITMQ_MNESIA_BASE", d("mnesia")),
            ("RABBITMQ_LOG_BASE", d("log")),
            ("RABBITMQ_FEATURE_FLAGS_FILE", d("feature_flags")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins")),
            ("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf")),
            ("RABBITMQ_PID_FILE", d("pid")),
        ]
    }

    /// Starts the node's process (again, after a stop or a kill) and waits until it runs.
    pub async fn boot(&self) -> Result<(), ChaosError> {
        let _ = std::fs::remove_file(self.dir.join("pid"));
        run(Command::new("rabbitmq-server").arg("-detached").envs(self.env()), "rabbitmq-server -detached").await?;
        let pid = self.dir.join("pid").display().to_string();
        self.ctl(&["wait", "--timeout", "90", &pid]).await.map(|_| ())
    }

    /// `amqp://guest:guest@127.0.0.1:{port}/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Runs `rabbitmqctl -n NODE args…`.
    pub async fn ctl(&self, args: &[&str]) -> Result<String, ChaosError> {
        run(
            Command::new("rabbitmqctl").arg("-n").arg(&self.name).args(args),
            &format!("rabbitmqctl {}", args.join(" ")),
        )
        .await
    }

    /// Joins this (freshly started) node to `seed`'s cluster.
    pub async fn join(&self, seed: &Node) -> Result<(), ChaosError> {
        self.ctl(&["stop_app"]).await?;
        self.ctl(&["reset"]).await?;
        self.ctl(&["join_cluster", &seed.name]).await?;
        self.ctl(&["start_app"]).await.map(|_| ())
    }

    /// The OS processes of this node's Erlang VM (beam.smp), found by its node name.
    fn beam_pids(&self) -> Vec<u32> {
        let marker = format!("RABBITMQ_NODENAME={}", self.name);
        let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                exe.to_string_lossy().contains("beam") && environ.split(|b| *b == 0).any(|var| var == marker.as_bytes())
            })
            .collect()
    }

    /// Kills the node's VM with SIGKILL, as a lost machine would.
    pub async fn kill_hard(&self) -> Result<(), ChaosError> {
        for pid in self.beam_pids() {
            run(Command::new("kill").args(["-KILL", &pid.to_string()]), "kill -KILL").await?;
        }
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.beam_pids().is_empty() {
            if tokio::time::Instant::now() > end {
                return Err(ChaosError(format!("{} still runs 30 s after SIGKILL", self.name)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await; // polling interval
        }
        Ok(())
    }

    /// Stops the node for good: `rabbitmqctl stop`, then SIGKILL whatever is left.
    pub async fn shutdown(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(30), self.ctl(&["stop"])).await;
        let _ = self.kill_hard().await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A run that failed half-way still leaves no node behind.
        for pid in self.beam_pids() {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}
