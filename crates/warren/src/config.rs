//! Process configuration, in layers where the later one wins: Warren's defaults, the step's own
//! defaults (say, train's concurrency of 1), an optional TOML file, `WARREN_*` environment
//! variables, then command-line flags. Every key goes through every layer.
//!
//! Every key has the same name everywhere: `prefetch` in the file, `WARREN_PREFETCH` in the
//! environment, `--prefetch` on the command line. A bad value is a [`ConfigError`] whose one-line
//! message names the key and where it came from. Broker URLs are redacted whenever printed.

use std::{collections::BTreeMap, fmt, path::Path, time::Duration};

/// The default broker: a local RabbitMQ with the stock guest account.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Every key the configuration knows, in file form (`WARREN_` + upper case in the environment).
pub const KEYS: &[&str] = &[
    "amqp_url",
    "namespace",
    "artifacts",
    "concurrency",
    "prefetch",
    "max_attempts",
    "retry_base_ms",
    "retry_max_ms",
    "delivery_limit",
    "max_duration_ms",
    "shutdown_grace_ms",
    "events",
    "dedup_window",
    "health_addr",
    "data_root",
    "tls_ca_file",
    "log_format",
];

/// The keys whose values are whole numbers.
const NUMERIC_KEYS: &[&str] = &[
    "concurrency",
    "prefetch",
    "max_attempts",
    "retry_base_ms",
    "retry_max_ms",
    "delivery_limit",
    "max_duration_ms",
    "shutdown_grace_ms",
    "dedup_window",
];

/// The configuration of one Warren process.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Broker URLs, tried in turn (a cluster). Key `amqp_url`, comma-separated.
    pub amqp_urls: Vec<String>,
    /// Prefix of every exchange and queue name, so deployments and tests stay apart. Key `namespace`.
    pub namespace: String,
    /// Where artifacts live: a directory or an `object_store` URL. Key `artifacts`.
    pub artifacts: String,
    /// Messages a worker handles at once (a semaphore). Key `concurrency`.
    pub concurrency: usize,
    /// Messages the broker sends ahead of acks (`basic.qos`, per consumer). Key `prefetch`.
    /// Unset, it follows `concurrency` (see [`Config::effective_prefetch`]): a worker then holds
    /// only messages it is running, so a queue's ready count is its backlog and a hard kill
    /// returns no message that was never started.
    pub prefetch: Option<u16>,
    /// Attempts before a retryable error dead-letters the message. Key `max_attempts`.
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles with each attempt. Key `retry_base_ms`.
    pub retry_base: Duration,
    /// Upper bound of a retry delay. Key `retry_max_ms`.
    pub retry_max: Duration,
    /// Deliveries without an ack (worker crashes) before the broker dead-letters a message.
    /// Key `delivery_limit`.
    pub delivery_limit: u32,
    /// The longest one message may run before the handler is stopped and the message retried;
    /// unset, the step's own (train: 2 h), and never above it. Key `max_duration_ms`.
    pub max_duration: Option<Duration>,
    /// How long a stopping worker waits for messages in flight. Key `shutdown_grace_ms`.
    pub shutdown_grace: Duration,
    /// Publish job events to the events exchange. Key `events`.
    pub events: bool,
    /// Completed message ids remembered per worker to drop redelivered duplicates. Key `dedup_window`.
    pub dedup_window: usize,
    /// Address of the health and metrics endpoint, if any (`127.0.0.1:9000`). Key `health_addr`.
    pub health_addr: Option<String>,
    /// The directory a worker may read local input files from (`data:` names and relative paths
    /// resolve inside it). Unset, workers read inputs only from the artifact store. Key `data_root`.
    pub data_root: Option<std::path::PathBuf>,
    /// A PEM file of certificate authorities to trust for `amqps://` (default: the system's).
    /// Key `tls_ca_file`.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Log lines as `text` (colour on a terminal only) or `json`. Key `log_format`.
    pub log_format: String,
    /// Where each key's value came from, for keys that did not keep Warren's default.
    origins: BTreeMap<&'static str, Origin>,
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Warren's own default.
    Default,
    /// The step's default (from its worker binary).
    Step,
    /// The configuration file (its path).
    File(String),
    /// A `WARREN_*` environment variable.
    Env,
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Step => f.write_str("step default"),
            Origin::File(p) => write!(f, "file {p}"),
            Origin::Env => f.write_str("environment"),
            Origin::Flag => f.write_str("command line"),
        }
    }
}

fn default_concurrency() -> usize {
    64
}

impl Default for Config {
    fn default() -> Self {
        Self {
            amqp_urls: vec![DEFAULT_AMQP_URL.to_owned()],
            namespace: "warren".to_owned(),
            artifacts: "./artifacts".to_owned(),
            concurrency: default_concurrency(),
            prefetch: None,
            max_attempts: 5,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            delivery_limit: 5,
            max_duration: None,
            shutdown_grace: Duration::from_secs(30),
            events: true,
            dedup_window: 10_000,
            health_addr: None,
            data_root: None,
            tls_ca_file: None,
            log_format: "text".to_owned(),
            origins: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.amqp_urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("Config")
            .field("amqp_urls", &urls)
            .field("namespace", &self.namespace)
            .field("artifacts", &self.artifacts)
            .field("concurrency", &self.concurrency)
            .field("prefetch", &self.prefetch)
            .field("max_attempts", &self.max_attempts)
            .field("retry_base", &self.retry_base)
            .field("retry_max", &self.retry_max)
            .field("delivery_limit", &self.delivery_limit)
            .field("max_duration", &self.max_duration)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("events", &self.events)
            .field("dedup_window", &self.dedup_window)
            .field("health_addr", &self.health_addr)
            .field("data_root", &self.data_root)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// A configuration value that could not be used. The message is one line and names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key has a value of the wrong form.
    #[error("invalid {key} ({source_name}): {reason}")]
    Invalid {
        /// The key as its source spells it (`WARREN_PREFETCH`, `prefetch`, `--prefetch`).
        key: String,
        /// Where the value came from.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration file names a key that does not exist.
    #[error("unknown key `{key}` in {file} (known keys: {})", KEYS.join(", "))]
    UnknownKey {
        /// The unknown key.
        key: String,
        /// The file it was found in.
        file: String,
    },
    /// The configuration file cannot be read or parsed.
    #[error("cannot read config file {file}: {reason}")]
    File {
        /// The file.
        file: String,
        /// Why (first line of the parser's message).
        reason: String,
    },
}

impl ConfigError {
    fn invalid(key: &str, source: &Origin, reason: impl Into<String>) -> Self {
        let key = match source {
            Origin::Env => format!("WARREN_{}", key.to_uppercase()),
            Origin::Flag => format!("--{}", key.replace('_', "-")),
            Origin::File(_) | Origin::Step | Origin::Default => key.to_owned(),
        };
        let source_name = match source {
            Origin::File(p) => format!("in {p}"),
            other => other.to_string(),
        };
        ConfigError::Invalid { key, source_name, reason: reason.into() }
    }
}

impl Config {
    /// Whether a configuration file, the environment or a flag set `key` (as opposed to Warren's
    /// or the step's default).
    pub fn is_set(&self, key: &str) -> bool {
        matches!(self.origin(key), Origin::File(_) | Origin::Env | Origin::Flag)
    }

    /// Where `key`'s value came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// `key`'s value as the file, the environment and flags spell it (`None`: unset). Broker URLs
    /// keep their passwords: use [`Config::render`] to show a configuration.
    pub fn value(&self, key: &str) -> Option<String> {
        let ms = |d: Duration| d.as_millis().to_string();
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        Some(match key {
            "amqp_url" => self.amqp_urls.join(","),
            "namespace" => self.namespace.clone(),
            "artifacts" => self.artifacts.clone(),
            "concurrency" => self.concurrency.to_string(),
            "prefetch" => return self.prefetch.map(|p| p.to_string()),
            "max_attempts" => self.max_attempts.to_string(),
            "retry_base_ms" => ms(self.retry_base),
            "retry_max_ms" => ms(self.retry_max),
            "delivery_limit" => self.delivery_limit.to_string(),
            "max_duration_ms" => return self.max_duration.map(ms),
            "shutdown_grace_ms" => ms(self.shutdown_grace),
            "events" => self.events.to_string(),
            "dedup_window" => self.dedup_window.to_string(),
            "health_addr" => return self.health_addr.clone(),
            "data_root" => return path(&self.data_root),
            "tls_ca_file" => return path(&self.tls_ca_file),
            "log_format" => self.log_format.clone(),
            _ => return None,
        })
    }

    /// Every key set by a file, the environment or a flag, with its value: what a process hands
    /// to the processes it starts (`warren up`) so they resolve the same configuration.
    pub fn set_values(&self) -> Vec<(&'static str, String)> {
        KEYS.iter().filter(|k| self.is_set(k)).filter_map(|k| Some((*k, self.value(k)?))).collect()
    }

    /// The effective configuration as TOML, each key with where its value came from, passwords
    /// redacted (`--print-config`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for key in KEYS {
            let origin = self.origin(key);
            let line = match self.value(key) {
                None => format!("# {key} (unset)"),
                Some(_) if *key == "amqp_url" => {
                    let urls: Vec<String> = self.amqp_urls.iter().map(|u| redact_url(u)).collect();
                    format!("{key} = {}", toml::Value::from(urls.join(",")))
                }
                Some(v) if NUMERIC_KEYS.contains(key) || *key == "events" => format!("{key} = {v}"),
                Some(v) => format!("{key} = {}", toml::Value::from(v)),
            };
            out.push_str(&format!("{line:<60} # {origin}\n"));
        }
        out
    }

    /// The prefetch a consumer asks for: `prefetch` if set, else `concurrency` (at most 65,535).
    pub fn effective_prefetch(&self) -> u16 {
        self.prefetch.unwrap_or_else(|| u16::try_from(self.concurrency).unwrap_or(u16::MAX))
    }

    /// Loads the configuration from the process environment, an optional file and overrides
    /// (`(key, value)` pairs, typically from command-line flags).
    ///
    /// The file is `file` if given, else `$WARREN_CONFIG` if set.
    pub fn load(file: Option<&Path>, overrides: &[(&str, String)]) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars(), overrides)
    }

    /// Like [`Config::load`] with an explicit environment, for tests and embedding.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, String)],
    ) -> Result<Self, ConfigError> {
        Self::load_layers(&[], file, env, overrides)
    }

    /// Every layer: a step's defaults, then the file (`file`, else `$WARREN_CONFIG`), the
    /// environment and the overrides (flags).
    pub fn load_layers(
        step_defaults: &[(&str, String)],
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, String)],
    ) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = env.into_iter().collect();
        let mut layers: BTreeMap<String, (String, Origin)> = BTreeMap::new();
        // Step defaults and flags name keys in code: an unknown one is a mistake there.
        let add = |layers: &mut BTreeMap<String, (String, Origin)>, pairs: &[(&str, String)], origin: Origin| {
            for (key, value) in pairs {
                if !KEYS.contains(key) {
                    return Err(ConfigError::Invalid {
                        key: (*key).to_owned(),
                        source_name: origin.to_string(),
                        reason: "unknown key".into(),
                    });
                }
                layers.insert((*key).to_owned(), (value.clone(), origin.clone()));
            }
            Ok(())
        };
        add(&mut layers, step_defaults, Origin::Step)?;

        let file = file.map(|p| p.to_path_buf()).or_else(|| env.get("WARREN_CONFIG").map(Into::into));
        if let Some(path) = file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::File { file: shown.clone(), reason: e.to_string() })?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::File {
                file: shown.clone(),
                reason: e.to_string().lines().next().unwrap_or_default().to_owned(),
            })?;
            for (key, value) in table {
                if !KEYS.contains(&key.as_str()) {
                    return Err(ConfigError::UnknownKey { key, file: shown });
                }
                let value = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                layers.insert(key, (value, Origin::File(shown.clone())));
            }
        }
        for key in KEYS {
            if let Some(v) = env.get(&format!("WARREN_{}", key.to_uppercase())) {
                layers.insert((*key).to_owned(), (v.clone(), Origin::Env));
            }
        }
        add(&mut layers, overrides, Origin::Flag)?;

        let mut config = Config::default();
        for (key, (value, source)) in &layers {
            config.set(key, value.trim(), source)?;
            if let Some(k) = KEYS.iter().find(|k| **k == key.as_str()) {
                config.origins.insert(k, source.clone());
            }
        }
        Ok(config)
    }

    fn set(&mut self, key: &str, value: &str, source: &Origin) -> Result<(), ConfigError> {
        fn num<T>(key: &str, v: &str, s: &Origin, min: T) -> Result<T, ConfigError>
        where
            T: std::str::FromStr + PartialOrd + fmt::Display,
        {
            let n: T =
                v.parse().map_err(|_| ConfigError::invalid(key, s, format!("expected a whole number, got {v:?}")))?;
            if n < min {
                return Err(ConfigError::invalid(key, s, format!("must be at least {min}, got {v}")));
            }
            Ok(n)
        }
        match key {
            "amqp_url" => {
                let urls: Vec<String> =
                    value.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
                if urls.is_empty() {
                    return Err(ConfigError::invalid(key, source, "no broker URL given"));
                }
                for url in &urls {
                    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                        return Err(ConfigError::invalid(
                            key,
                            source,
                            format!("{} is not an amqp:// or amqps:// URL", redact_url(url)),
                        ));
                    }
                }
                self.amqp_urls = urls;
            }
            "namespace" => {
                let ok = !value.is_empty()
                    && value.len() <= 100
                    && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !ok {
                    return Err(ConfigError::invalid(
                        key,
                        source,
                        format!("{value:?} must be 1-100 characters of a-z, 0-9, '-', '_' or '.'"),
                    ));
                }
                self.namespace = value.to_owned();
            }
            "artifacts" => {
                if value.is_empty() {
                    return Err(ConfigError::invalid(key, source, "must not be empty"));
                }
                self.artifacts = value.to_owned();
            }
            "concurrency" => self.concurrency = num(key, value, source, 1usize)?,
            "prefetch" => {
                let n = num(key, value, source, 1u64)?;
                let n = u16::try_from(n).map_err(|_| {
                    ConfigError::invalid(key, source, format!("must be at most 65535 (the AMQP limit), got {n}"))
                })?;
                self.prefetch = Some(n);
            }
            "max_attempts" => self.max_attempts = num(key, value, source, 1u32)?,
            "retry_base_ms" => self.retry_base = Duration::from_millis(num(key, value, source, 1u64)?),
            "retry_max_ms" => self.retry_max = Duration::from_millis(num(key, value, source, 1u64)?),
            "delivery_limit" => self.delivery_limit = num(key, value, source, 1u32)?,
            "max_duration_ms" => self.max_duration = Some(Duration::from_millis(num(key, value, source, 1u64)?)),
            "shutdown_grace_ms" => self.shutdown_grace = Duration::from_millis(num(key, value, source, 0u64)?),
            "dedup_window" => self.dedup_window = num(key, value, source, 0usize)?,
            "events" => {
                self.events = match value.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => true,
                    "false" | "0" | "no" | "off" => false,
                    _ => {
                        return Err(ConfigError::invalid(
                            key,
                            source,
                            format!("expected true or false, got {value:?}"),
                        ));
                    }
                }
            }
            "health_addr" => {
                if value.is_empty() {
                    self.health_addr = None;
                } else if value.parse::<std::net::SocketAddr>().is_err() {
                    return Err(ConfigError::invalid(
                        key,
                        source,
                        format!("expected host:port such as 127.0.0.1:9000, got {value:?}"),
                    ));
                } else {
                    self.health_addr = Some(value.to_owned());
                }
            }
            "data_root" => self.data_root = (!value.is_empty()).then(|| value.into()),
            "tls_ca_file" => self.tls_ca_file = (!value.is_empty()).then(|| value.into()),
            "log_format" => {
                if !["text", "json"].contains(&value) {
                    return Err(ConfigError::invalid(key, source, format!("expected text or json, got {value:?}")));
                }
                self.log_format = value.to_owned();
            }
            _ => unreachable!("key list and match arms agree"),
        }
        Ok(())
    }
}

/// Returns `url` with its password replaced by `***`, safe to print or log.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}{}:***{}", &url[..scheme_end + 3], &authority[..colon], &url[scheme_end + 3 + at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_point_at_a_local_broker() {
        let c = Config::load_from(None, env(&[]), &[]).unwrap();
        assert_eq!(c.amqp_urls, vec![DEFAULT_AMQP_URL.to_owned()]);
        assert_eq!(c.namespace, "warren");
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let dir = std::env::temp_dir().join(format!("warren-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("w.toml");
        std::fs::write(
            &file,
            "prefetch = 10\nconcurrency = 3\nnamespace = \"file\"\namqp_url = [\"amqp://a\", \"amqp://b\"]\n",
        )
        .unwrap();
        let c = Config::load_from(
            Some(&file),
            env(&[("WARREN_PREFETCH", "20"), ("WARREN_NAMESPACE", "env")]),
            &[("namespace", "flag".to_owned())],
        )
        .unwrap();
        assert_eq!(c.concurrency, 3);
        assert_eq!(c.prefetch, Some(20));
        assert_eq!(c.effective_prefetch(), 20);
        assert!(c.is_set("concurrency") && c.is_set("prefetch") && !c.is_set("max_attempts"));
        assert_eq!(c.namespace, "flag");
        assert_eq!(c.amqp_urls, vec!["amqp://a".to_owned(), "amqp://b".to_owned()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prefetch_follows_concurrency_unless_set() {
        let c = Config::load_from(None, env(&[("WARREN_CONCURRENCY", "1")]), &[]).unwrap();
        assert_eq!(c.effective_prefetch(), 1, "a one-at-a-time step holds one message");
        let c = Config::load_from(None, env(&[("WARREN_CONCURRENCY", "100000")]), &[]).unwrap();
        assert_eq!(c.effective_prefetch(), u16::MAX);
        let c = Config::load_from(None, env(&[("WARREN_CONCURRENCY", "4"), ("WARREN_PREFETCH", "9")]), &[]).unwrap();
        assert_eq!(c.effective_prefetch(), 9);
    }

    #[test]
    fn a_bad_value_names_its_key_in_one_line() {
        let err = Config::load_from(None, env(&[("WARREN_PREFETCH", "lots")]), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("WARREN_PREFETCH") && msg.contains("lots"), "{msg}");
        assert!(!msg.contains('\n'));
        let err = Config::load_from(None, env(&[]), &[("concurrency", "0".into())]).unwrap_err();
        assert!(err.to_string().contains("--concurrency"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let file = std::env::temp_dir().join(format!("warren-cfg-unknown-{}.toml", std::process::id()));
        std::fs::write(&file, "prefetsh = 1\n").unwrap();
        let err = Config::load_from(Some(&file), env(&[]), &[]).unwrap_err();
        assert!(err.to_string().contains("prefetsh"), "{err}");
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn passwords_never_print() {
        assert_eq!(redact_url("amqp://bob:s3cret@host:5672/%2f"), "amqp://bob:***@host:5672/%2f");
        assert_eq!(redact_url("amqp://host/%2f"), "amqp://host/%2f");
        let err = Config::load_from(None, env(&[("WARREN_AMQP_URL", "http://u:s3cret@h")]), &[]).unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let c = Config::load_from(None, env(&[("WARREN_AMQP_URL", "amqp://u:s3cret@h")]), &[]).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
