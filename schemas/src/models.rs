//! The model registry: its layout in the artifact store and the only code that writes it
//! (the `register` step, `warren models`) or reads it (`predict`, the console).
//!
//! ```text
//! registry/{ns}/{name}/versions/{000001}.json           an entry: model, metrics, signature, lineage
//! registry/{ns}/{name}/versions/{000001}.decision.json  what register decided about promoting it
//! registry/{ns}/{name}/aliases/{alias}/{000001}.json    the alias's moves, one file each
//! ```
//!
//! `{ns}` is the deployment's namespace (or its `registry_namespace`, which deployments that
//! mean to share their models set to the same value), so two namespaces on one store never share
//! model versions by accident.
//!
//! Every file is written once, with a create that fails when the key exists (`If-None-Match` on
//! S3, an exclusive create on a file system), never overwritten. A version number is taken by
//! creating its entry; an alias moves by creating its next move file after reading the current
//! one, so two writers racing on the same alias cannot both win: the loser reads the winner's
//! move, decides again against it, and tries the next number. An alias points at the version
//! of its highest move; `rollback` is one more move, so the history stays whole.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use warren::artifacts::{ArtifactError, ArtifactStore};

use crate::{ArtifactRef, Task};

/// What can go wrong with the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The store failed (may work another time).
    #[error(transparent)]
    Store(#[from] ArtifactError),
    /// No such model, version or alias.
    #[error("{0}")]
    NotFound(String),
    /// A file of the registry does not read.
    #[error("registry file {key} is damaged: {error}")]
    Damaged {
        /// Its key.
        key: String,
        /// Why.
        error: String,
    },
    /// The move was refused (a worse model, say).
    #[error("{0}")]
    Refused(String),
}

/// Result of registry calls.
pub type Result<T> = std::result::Result<T, RegistryError>;

/// What a model takes and gives: checked on every prediction request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Signature {
    /// The raw columns a row gives, in this order unless it names them (the features, for
    /// models from before preprocessing).
    pub features: Vec<String>,
    /// Each column's kind: `numeric`, `categorical`, `boolean` (`f64` before preprocessing).
    pub types: Vec<String>,
    /// Classification or regression.
    pub task: Task,
    /// Class labels by index (classification).
    pub classes: Vec<String>,
}

pub use crate::onnx::{ModelFormat, OnnxElem, OnnxInput, OnnxSignature};

/// One registered version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u32,
    /// The model artifact.
    pub model: ArtifactRef,
    /// Held-out metrics.
    pub metrics: BTreeMap<String, f64>,
    /// The metric trials were compared on (and promotion compares on).
    pub metric: String,
    /// Algorithm and hyperparameters.
    pub candidate: serde_json::Value,
    /// What the model takes and gives.
    #[serde(default)]
    pub signature: Option<Signature>,
    /// How the model is stored (`warren` for entries from before ONNX).
    #[serde(default)]
    pub format: ModelFormat,
    /// How to feed an ONNX model and read its answer (`format = onnx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<OnnxSignature>,
    /// Lineage: the dataset's content hash.
    pub dataset_hash: String,
    /// The split's seed.
    pub seed: u64,
    /// The job that produced it.
    pub job_id: String,
    /// Its pipeline.
    pub pipeline: String,
    /// The code that trained it (the step's version).
    #[serde(default)]
    pub code_version: String,
    /// The register step's version and worker.
    pub registered_by: String,
    /// When (ms since the epoch).
    pub registered_at_ms: u64,
}

/// How a version compared with an alias's model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The alias.
    pub alias: String,
    /// The metric compared (higher is better; `neg_rmse` for errors).
    pub metric: String,
    /// This version's score.
    pub score: f64,
    /// The alias's version at the time, if any.
    pub against: Option<u32>,
    /// Its score.
    pub against_score: Option<f64>,
    /// How much better it had to be.
    pub margin: f64,
    /// Whether the alias moved to this version.
    pub promoted: bool,
    /// In words.
    pub reason: String,
}

/// One move of an alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasMove {
    /// The alias.
    pub alias: String,
    /// Its move number, from 1.
    pub seq: u32,
    /// The version it points at from now.
    pub version: u32,
    /// The version it pointed at before.
    pub previous: Option<u32>,
    /// Why: `register`, `promote`, `rollback`.
    pub action: String,
    /// Who: a worker or an operator.
    pub by: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The comparison that allowed it, when there was one.
    #[serde(default)]
    pub comparison: Option<Comparison>,
}

/// The comparison score named `metric` (higher is better): `neg_rmse` is minus `rmse`.
pub fn score(metrics: &BTreeMap<String, f64>, metric: &str) -> Option<f64> {
    match metric.strip_prefix("neg_") {
        Some(base) => metrics.get(base).map(|v| -v),
        None => metrics.get(metric).copied(),
    }
}

/// One model's registry.
#[derive(Debug, Clone)]
pub struct ModelRegistry<'a> {
    store: &'a ArtifactStore,
    /// The registry's namespace: `registry/{scope}/{name}/…`.
    scope: String,
    name: String,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn number(key: &str) -> Option<u32> {
    key.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()
}

impl<'a> ModelRegistry<'a> {
    /// The registry of model `name` in namespace `scope` of `store` (a deployment's namespace,
    /// or the `registry_namespace` deployments share on purpose).
    pub fn new(store: &'a ArtifactStore, scope: &str, name: &str) -> Self {
        ModelRegistry { store, scope: scope.to_owned(), name: name.to_owned() }
    }

    /// Every model name with a registry in namespace `scope` of `store`.
    pub async fn names(store: &ArtifactStore, scope: &str) -> Result<Vec<String>> {
        let prefix = format!("registry/{scope}/");
        let mut names: Vec<String> = store
            .list(prefix.trim_end_matches('/'))
            .await?
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix)?.split('/').next().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Key for a model artifact brought into the registry (an imported ONNX file), by content.
    pub fn import_key(&self, hash: &str, extension: &str) -> String {
        format!("registry/{}/{}/imports/{}.{extension}", self.scope, self.name, hash.trim_start_matches("sha256:"))
    }

    /// Stores an imported model's bytes under [`Self::import_key`].
    pub async fn put_import(&self, bytes: Vec<u8>, extension: &str) -> Result<ArtifactRef> {
        let key = self.import_key(&warren::artifacts::content_hash(&bytes), extension);
        let size = bytes.len() as u64;
        let stored = self.store.put(&key, bytes).await?;
        Ok(ArtifactRef { uri: stored.uri, hash: stored.hash, bytes: size })
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Key of version `v`'s entry.
    pub fn version_key(&self, v: u32) -> String {
        format!("registry/{}/{}/versions/{v:06}.json", self.scope, self.name)
    }
    fn decision_key(&self, v: u32) -> String {
        format!("registry/{}/{}/versions/{v:06}.decision.json", self.scope, self.name)
    }
    fn alias_dir(&self, alias: &str) -> String {
        format!("registry/{}/{}/aliases/{alias}", self.scope, self.name)
    }

    async fn read<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.store.get_opt(key).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| RegistryError::Damaged { key: key.to_owned(), error: e.to_string() }),
        }
    }

    async fn create<T: Serialize>(&self, key: &str, value: &T) -> Result<bool> {
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| RegistryError::Damaged { key: key.to_owned(), error: e.to_string() })?;
        Ok(self.store.create(key, bytes).await?)
    }

    /// Every version's entry, oldest first.
    pub async fn versions(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut keys = self.store.list(&format!("registry/{}/{}/versions", self.scope, self.name)).await?;
        keys.sort();
        for key in keys.iter().filter(|k| number(k).is_some()) {
            if let Some(e) = self.read::<Entry>(key).await? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Version `v`'s entry.
    pub async fn entry(&self, v: u32) -> Result<Entry> {
        self.read(&self.version_key(v))
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("model `{}` has no version {v}", self.name)))
    }

    /// What register decided about version `v`, once it has.
    pub async fn decision(&self, v: u32) -> Result<Option<Comparison>> {
        self.read(&self.decision_key(v)).await
    }

    /// Records register's decision about version `v` (once; a second call keeps the first).
    pub async fn decide(&self, v: u32, c: &Comparison) -> Result<()> {
        self.create(&self.decision_key(v), c).await.map(|_| ())
    }

    /// Registers `entry` under the next free version number, which it returns.
    pub async fn add(&self, entry: &mut Entry) -> Result<u32> {
        let keys = self.store.list(&format!("registry/{}/{}/versions", self.scope, self.name)).await?;
        let mut v = keys.iter().filter_map(|k| number(k)).max().unwrap_or(0) + 1;
        loop {
            entry.version = v;
            if self.create(&self.version_key(v), entry).await? {
                return Ok(v);
            }
            v += 1;
        }
    }

    /// An alias's moves, oldest first.
    pub async fn history(&self, alias: &str) -> Result<Vec<AliasMove>> {
        let mut keys = self.store.list(&self.alias_dir(alias)).await?;
        keys.sort_by_key(|k| number(k));
        let mut out = Vec::new();
        for key in keys.iter().filter(|k| number(k).is_some()) {
            if let Some(m) = self.read::<AliasMove>(key).await? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Where an alias points now.
    pub async fn alias(&self, alias: &str) -> Result<Option<AliasMove>> {
        let keys = self.store.list(&self.alias_dir(alias)).await?;
        match keys.iter().filter_map(|k| number(k).map(|n| (n, k))).max() {
            Some((_, key)) => self.read(key).await,
            None => Ok(None),
        }
    }

    /// Every alias and where it points.
    pub async fn aliases(&self) -> Result<BTreeMap<String, AliasMove>> {
        let prefix = format!("registry/{}/{}/aliases/", self.scope, self.name);
        let mut names: Vec<String> = self
            .store
            .list(&prefix)
            .await?
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix)?.split('/').next().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        let mut out = BTreeMap::new();
        for a in names {
            if let Some(m) = self.alias(&a).await? {
                out.insert(a, m);
            }
        }
        Ok(out)
    }

    /// A version number, or an alias's version.
    pub async fn resolve(&self, version: &str) -> Result<u32> {
        if let Ok(v) = version.parse::<u32>() {
            return Ok(v);
        }
        match self.alias(version).await? {
            Some(m) => Ok(m.version),
            None if self.versions().await?.is_empty() => {
                Err(RegistryError::NotFound(format!("no model `{}` is registered", self.name)))
            }
            None => Err(RegistryError::NotFound(format!("model `{}` has no alias `{version}`", self.name))),
        }
    }

    /// Moves `alias` from `current` (what the caller read) to `version`. `None` when another
    /// writer moved it first: read it again, decide again, and retry.
    pub async fn try_move(
        &self,
        alias: &str,
        current: Option<&AliasMove>,
        version: u32,
        action: &str,
        by: &str,
        comparison: Option<Comparison>,
    ) -> Result<Option<AliasMove>> {
        let seq = current.map_or(1, |c| c.seq + 1);
        let m = AliasMove {
            alias: alias.to_owned(),
            seq,
            version,
            previous: current.map(|c| c.version),
            action: action.to_owned(),
            by: by.to_owned(),
            at_ms: now_ms(),
            comparison,
        };
        let created = self.create(&format!("{}/{seq:06}.json", self.alias_dir(alias)), &m).await?;
        Ok(created.then_some(m))
    }

    /// Compares version `entry` with the alias's current version on `metric`: better by more
    /// than `margin` (or no current version) promotes.
    pub async fn compare(
        &self,
        alias: &str,
        entry: &Entry,
        metric: &str,
        margin: f64,
        current: Option<&AliasMove>,
    ) -> Result<Comparison> {
        let new = score(&entry.metrics, metric).ok_or_else(|| {
            RegistryError::Refused(format!("version {} has no metric `{metric}` to compare on", entry.version))
        })?;
        let mut c = Comparison {
            alias: alias.to_owned(),
            metric: metric.to_owned(),
            score: new,
            against: None,
            against_score: None,
            margin,
            promoted: true,
            reason: format!("`{alias}` had no version"),
        };
        if let Some(cur) = current {
            let old_entry = self.entry(cur.version).await?;
            let old = score(&old_entry.metrics, metric);
            c.against = Some(cur.version);
            c.against_score = old;
            match old {
                Some(old) if cur.version == entry.version => {
                    c.promoted = false;
                    c.reason = format!("`{alias}` is already version {} ({metric} {old:.4})", cur.version);
                }
                Some(old) if new > old + margin => {
                    c.reason =
                        format!("{metric} {new:.4} beats version {} ({old:.4}) by more than {margin}", cur.version);
                }
                Some(old) => {
                    c.promoted = false;
                    c.reason = format!(
                        "{metric} {new:.4} does not beat version {} ({old:.4}) by more than {margin}; `{alias}` stays there",
                        cur.version
                    );
                }
                None => c.reason = format!("version {} has no `{metric}` to compare with", cur.version),
            }
        }
        Ok(c)
    }

    /// Moves `alias` to `version` when it beats the alias's model (see [`Self::compare`]), or
    /// whatever it scores with `force`, however many writers race: on a lost race it compares
    /// again against the winner. Returns the comparison that stood and the move, if one was made
    /// (none when refused, or when the alias already points there).
    pub async fn promote(&self, alias: &str, version: u32, p: &Promote<'_>) -> Result<(Comparison, Option<AliasMove>)> {
        let entry = self.entry(version).await?;
        loop {
            let current = self.alias(alias).await?;
            let c = self.compare(alias, &entry, p.metric, p.margin, current.as_ref()).await?;
            let already = current.as_ref().is_some_and(|m| m.version == version);
            if already || !(c.promoted || p.force) {
                return Ok((c, None));
            }
            let action = if c.promoted { p.action.to_owned() } else { format!("{} --force", p.action) };
            if let Some(m) = self.try_move(alias, current.as_ref(), version, &action, p.by, Some(c.clone())).await? {
                return Ok((c, Some(m)));
            }
        }
    }
}

/// How [`ModelRegistry::promote`] decides and records a move.
#[derive(Debug, Clone)]
pub struct Promote<'a> {
    /// The metric compared (higher is better).
    pub metric: &'a str,
    /// How much better the version must score.
    pub margin: f64,
    /// Move even when it does not score better.
    pub force: bool,
    /// What the move is recorded as (`register`, `promote`).
    pub action: &'a str,
    /// Who moves it.
    pub by: &'a str,
}
