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

/// One configuration key: its name in the file (`WARREN_` + upper case in the environment,
/// `--` + dashes on the command line), how a value of it is read into a [`Config`], and how it is
/// read back out. [`Config::set`], [`Config::value`], [`Config::render`] and the key lists all
/// walk this one table.
struct Key {
    name: &'static str,
    /// Printed bare in TOML (a number or a boolean), else as a string.
    bare: bool,
    /// Reads a (trimmed) value; the error says what is wrong with it.
    set: fn(&mut Config, &str) -> Result<(), String>,
    /// The value as the file, the environment and flags spell it (`None`: unset).
    get: fn(&Config) -> Option<String>,
}

/// A whole number of at least `min`.
fn num<T>(v: &str, min: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + fmt::Display,
{
    let n: T = v.parse().map_err(|_| format!("expected a whole number, got {v:?}"))?;
    if n < min {
        return Err(format!("must be at least {min}, got {v}"));
    }
    Ok(n)
}

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

fn path(p: &Option<std::path::PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.display().to_string())
}

fn set_amqp_urls(c: &mut Config, value: &str) -> Result<(), String> {
    let urls: Vec<String> = value.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
    if urls.is_empty() {
        return Err("no broker URL given".into());
    }
    if let Some(bad) = urls.iter().find(|u| !(u.starts_with("amqp://") || u.starts_with("amqps://"))) {
        return Err(format!("{} is not an amqp:// or amqps:// URL", redact_url(bad)));
    }
    c.amqp_urls = urls;
    Ok(())
}

fn set_namespace(c: &mut Config, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 100
        && value.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
    if !ok {
        return Err(format!("{value:?} must be 1-100 characters of a-z, 0-9, '-', '_' or '.'"));
    }
    c.namespace = value.to_owned();
    Ok(())
}

fn set_prefetch(c: &mut Config, value: &str) -> Result<(), String> {
    let n = num(value, 1u64)?;
    let n = u16::try_from(n).map_err(|_| format!("must be at most 65535 (the AMQP limit), got {n}"))?;
    c.prefetch = Some(n);
    Ok(())
}

fn set_events(c: &mut Config, value: &str) -> Result<(), String> {
    c.events = match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => true,
        "false" | "0" | "no" | "off" => false,
        _ => return Err(format!("expected true or false, got {value:?}")),
    };
    Ok(())
}

fn set_health_addr(c: &mut Config, value: &str) -> Result<(), String> {
    if !value.is_empty() && value.parse::<std::net::SocketAddr>().is_err() {
        return Err(format!("expected host:port such as 127.0.0.1:9000, got {value:?}"));
    }
    c.health_addr = (!value.is_empty()).then(|| value.to_owned());
    Ok(())
}

fn set_log_format(c: &mut Config, value: &str) -> Result<(), String> {
    if !["text", "json"].contains(&value) {
        return Err(format!("expected text or json, got {value:?}"));
    }
    c.log_format = value.to_owned();
    Ok(())
}

/// Every key, in the order `--print-config` shows them.
const TABLE: &[Key] = &[
    Key { name: "amqp_url", bare: false, set: set_amqp_urls, get: |c| Some(c.amqp_urls.join(",")) },
    Key { name: "namespace", bare: false, set: set_namespace, get: |c| Some(c.namespace.clone()) },
    Key {
        name: "artifacts",
        bare: false,
        set: |c, v| {
            if v.is_empty() {
                return Err("must not be empty".into());
            }
            c.artifacts = v.to_owned();
            Ok(())
        },
        get: |c| Some(c.artifacts.clone()),
    },
    Key {
        name: "concurrency",
        bare: true,
        set: |c, v| {
            c.concurrency = num(v, 1usize)?;
            Ok(())
        },
        get: |c| Some(c.concurrency.to_string()),
    },
    Key { name: "prefetch", bare: true, set: set_prefetch, get: |c| c.prefetch.map(|p| p.to_string()) },
    Key {
        name: "max_attempts",
        bare: true,
        set: |c, v| {
            c.max_attempts = num(v, 1u32)?;
            Ok(())
        },
        get: |c| Some(c.max_attempts.to_string()),
    },
    Key {
        name: "retry_base_ms",
        bare: true,
        set: |c, v| {
            c.retry_base = Duration::from_millis(num(v, 1u64)?);
            Ok(())
        },
        get: |c| Some(ms(c.retry_base)),
    },
    Key {
        name: "retry_max_ms",
        bare: true,
        set: |c, v| {
            c.retry_max = Duration::from_millis(num(v, 1u64)?);
            Ok(())
        },
        get: |c| Some(ms(c.retry_max)),
    },
    Key {
        name: "delivery_limit",
        bare: true,
        set: |c, v| {
            c.delivery_limit = num(v, 1u32)?;
            Ok(())
        },
        get: |c| Some(c.delivery_limit.to_string()),
    },
    Key {
        name: "max_duration_ms",
        bare: true,
        set: |c, v| {
            c.max_duration = Some(Duration::from_millis(num(v, 1u64)?));
            Ok(())
        },
        get: |c| c.max_duration.map(ms),
    },
    Key {
        name: "shutdown_grace_ms",
        bare: true,
        set: |c, v| {
            c.shutdown_grace = Duration::from_millis(num(v, 0u64)?);
            Ok(())
        },
        get: |c| Some(ms(c.shutdown_grace)),
    },
    Key { name: "events", bare: true, set: set_events, get: |c| Some(c.events.to_string()) },
    Key {
        name: "envelope_version",
        bare: false,
        set: |c, v| {
            c.envelope_version = match v {
                "auto" | "" => None,
                "1" => Some(1),
                "2" => Some(2),
                _ => return Err(format!("expected auto, 1 or 2 (the envelope version to write), got {v:?}")),
            };
            Ok(())
        },
        get: |c| Some(c.envelope_version.map_or("auto".to_owned(), |v| v.to_string())),
    },
    Key {
        name: "events_version",
        bare: true,
        set: |c, v| {
            c.events_version = match v {
                "1" => 1,
                "2" => 2,
                _ => return Err(format!("expected 1 or 2 (the events batch version to write), got {v:?}")),
            };
            Ok(())
        },
        get: |c| Some(c.events_version.to_string()),
    },
    Key {
        name: "dedup_window",
        bare: true,
        set: |c, v| {
            c.dedup_window = num(v, 0usize)?;
            Ok(())
        },
        get: |c| Some(c.dedup_window.to_string()),
    },
    Key { name: "health_addr", bare: false, set: set_health_addr, get: |c| c.health_addr.clone() },
    Key {
        name: "data_root",
        bare: false,
        set: |c, v| {
            c.data_root = (!v.is_empty()).then(|| v.into());
            Ok(())
        },
        get: |c| path(&c.data_root),
    },
    Key {
        name: "tls_ca_file",
        bare: false,
        set: |c, v| {
            c.tls_ca_file = (!v.is_empty()).then(|| v.into());
            Ok(())
        },
        get: |c| path(&c.tls_ca_file),
    },
    Key { name: "log_format", bare: false, set: set_log_format, get: |c| Some(c.log_format.clone()) },
    Key {
        name: "registry_namespace",
        bare: false,
        set: |c, v| {
            if v.is_empty() {
                c.registry_namespace = None;
                return Ok(());
            }
            let mut probe = Config::default();
            set_namespace(&mut probe, v)?;
            c.registry_namespace = Some(probe.namespace);
            Ok(())
        },
        get: |c| c.registry_namespace.clone(),
    },
];

/// Every key the configuration knows, in file form (`WARREN_` + upper case in the environment).
pub fn keys() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|k| k.name)
}

fn key_of(name: &str) -> Option<&'static Key> {
    TABLE.iter().find(|k| k.name == name)
}

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
    /// The envelope version a worker writes to the next step: `None` (`auto`, the default) the
    /// compact version 2 once every live reader of that step reads it, else 1; `Some(1)` pins
    /// version 1 (before rolling back to workers that read only 1); `Some(2)` writes 2 whoever
    /// reads. Key `envelope_version`.
    pub envelope_version: Option<u16>,
    /// The version of event batches this process writes: 2 (the default), or 1 while a
    /// deployment still has readers written before version 2 (see docs/PROTOCOL.md,
    /// "Compatibility"). Warren's own readers take both. Key `events_version`.
    pub events_version: u16,
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
    /// The model registry's namespace: unset, the process's own `namespace`, so deployments and
    /// tests never share model versions by accident; deployments that set the same value share
    /// their models on purpose. Key `registry_namespace`.
    pub registry_namespace: Option<String>,
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
            events_version: 2,
            envelope_version: None,
            dedup_window: 10_000,
            health_addr: None,
            data_root: None,
            tls_ca_file: None,
            log_format: "text".to_owned(),
            registry_namespace: None,
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
            .field("events_version", &self.events_version)
            .field("envelope_version", &self.envelope_version)
            .field("dedup_window", &self.dedup_window)
            .field("health_addr", &self.health_addr)
            .field("data_root", &self.data_root)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("log_format", &self.log_format)
            .field("registry_namespace", &self.registry_namespace)
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
    #[error("unknown key `{key}` in {file} (known keys: {})", keys().collect::<Vec<_>>().join(", "))]
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
        (key_of(key)?.get)(self)
    }

    /// Every key set by a file, the environment or a flag, with its value: what a process hands
    /// to the processes it starts (`warren up`) so they resolve the same configuration.
    pub fn set_values(&self) -> Vec<(&'static str, String)> {
        keys().filter(|k| self.is_set(k)).filter_map(|k| Some((k, self.value(k)?))).collect()
    }

    /// The effective configuration as TOML, each key with where its value came from, passwords
    /// redacted (`--print-config`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for k in TABLE {
            let (key, origin) = (k.name, self.origin(k.name));
            let line = match (k.get)(self) {
                None => format!("# {key} (unset)"),
                Some(_) if key == "amqp_url" => {
                    let urls: Vec<String> = self.amqp_urls.iter().map(|u| redact_url(u)).collect();
                    format!("{key} = {}", toml::Value::from(urls.join(",")))
                }
                Some(v) if k.bare => format!("{key} = {v}"),
                Some(v) => format!("{key} = {}", toml::Value::from(v)),
            };
            out.push_str(&format!("{line:<60} # {origin}\n"));
        }
        out
    }

    /// The namespace whose model registry this process reads and writes: `registry_namespace`,
    /// else `namespace`.
    pub fn registry_scope(&self) -> &str {
        self.registry_namespace.as_deref().unwrap_or(&self.namespace)
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
                if key_of(key).is_none() {
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
            for (key, value) in file_layer(&path)? {
                layers.insert(key, (value, Origin::File(shown.clone())));
            }
        }
        for key in keys() {
            if let Some(v) = env.get(&format!("WARREN_{}", key.to_uppercase())) {
                layers.insert(key.to_owned(), (v.clone(), Origin::Env));
            }
        }
        add(&mut layers, overrides, Origin::Flag)?;

        let mut config = Config::default();
        for (key, (value, source)) in &layers {
            config.set(key, value.trim(), source)?;
            if let Some(k) = key_of(key) {
                config.origins.insert(k.name, source.clone());
            }
        }
        Ok(config)
    }

    fn set(&mut self, key: &str, value: &str, source: &Origin) -> Result<(), ConfigError> {
        let k = key_of(key).ok_or_else(|| ConfigError::invalid(key, source, "unknown key"))?;
        (k.set)(self, value).map_err(|reason| ConfigError::invalid(key, source, reason))
    }
}

/// The keys and values of a configuration file; an unknown key or a file that does not parse is
/// an error naming the file.
fn file_layer(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::File { file: shown.clone(), reason: e.to_string() })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::File {
        file: shown.clone(),
        reason: e.to_string().lines().next().unwrap_or_default().to_owned(),
    })?;
    let mut out = Vec::new();
    for (key, value) in table {
        if key_of(&key).is_none() {
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
        out.push((key, value));
    }
    Ok(out)
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
