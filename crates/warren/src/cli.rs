//! Command-line flags shared by every Warren binary (feature `cli`).

use std::path::PathBuf;

use crate::{Config, ConfigError};

/// The configuration flags every worker and the `warren` command take. Each overrides the
/// file and the `WARREN_*` environment variable of the same name.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file (default: $WARREN_CONFIG, if set).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Broker URL(s), comma-separated, tried in turn.
    #[arg(long, value_name = "URL", global = true)]
    pub amqp_url: Option<String>,
    /// Namespace prefixing every exchange and queue.
    #[arg(long, value_name = "NS", global = true)]
    pub namespace: Option<String>,
    /// Artifact store: a directory or an object-store URL.
    #[arg(long, value_name = "DIR|URL", global = true)]
    pub artifacts: Option<String>,
    /// Messages handled at once.
    #[arg(long, value_name = "N", global = true)]
    pub concurrency: Option<String>,
    /// Messages the broker sends ahead of acks.
    #[arg(long, value_name = "N", global = true)]
    pub prefetch: Option<String>,
    /// Health and metrics address (host:port).
    #[arg(long, value_name = "ADDR", global = true)]
    pub health_addr: Option<String>,
}

impl ConfigArgs {
    /// Loads the configuration with these flags on top.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut overrides = Vec::new();
        let flags = [
            ("amqp_url", &self.amqp_url),
            ("namespace", &self.namespace),
            ("artifacts", &self.artifacts),
            ("concurrency", &self.concurrency),
            ("prefetch", &self.prefetch),
            ("health_addr", &self.health_addr),
        ];
        for (key, value) in flags {
            if let Some(v) = value {
                overrides.push((key, v.clone()));
            }
        }
        Config::load(self.config.as_deref(), &overrides)
    }
}
