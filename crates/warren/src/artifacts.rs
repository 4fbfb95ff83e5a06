//! The artifact store: large data lives here and messages carry a reference to it (the claim
//! check). A local directory by default; `s3://bucket/prefix` with the `s3` feature, through the
//! same `object_store` code.
//!
//! Keys are chosen by the caller to be deterministic (pipeline, job, step, content), so a
//! redelivered message writes the same bytes to the same key and changes nothing.

use std::{fmt, sync::Arc};

use futures_util::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, path::Path};
use sha2::{Digest, Sha256};

/// An artifact operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// The store location cannot be used.
    #[error("artifact store {location}: {reason}")]
    Open {
        /// The location as configured.
        location: String,
        /// Why.
        reason: String,
    },
    /// No artifact at that key.
    #[error("no artifact at {0}")]
    NotFound(String),
    /// The bytes read do not have the hash the reference promised.
    #[error("artifact {uri} has hash {found}, expected {expected}")]
    HashMismatch {
        /// The URI.
        uri: String,
        /// What the reference said.
        expected: String,
        /// What the bytes hash to.
        found: String,
    },
    /// A URI that does not belong to this store.
    #[error("{uri} is not in this artifact store ({base})")]
    Foreign {
        /// The URI.
        uri: String,
        /// This store's base URI.
        base: String,
    },
    /// The store failed (I/O, network).
    #[error("artifact store: {0}")]
    Store(String),
}

impl From<object_store::Error> for ArtifactError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => ArtifactError::NotFound(path),
            other => ArtifactError::Store(other.to_string()),
        }
    }
}

/// Where an artifact was stored and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// `file:///…/key` or `s3://bucket/…/key`.
    pub uri: String,
    /// `sha256:{hex}`.
    pub hash: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// `sha256:{hex}` of `bytes`.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// An artifact store.
#[derive(Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    base: String,
}

impl fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactStore").field("base", &self.base).finish_non_exhaustive()
    }
}

impl ArtifactStore {
    /// Opens `location`: a directory path or `file://` URL (created if missing), or, with the `s3`
    /// feature, `s3://bucket[/prefix]` with credentials from the usual AWS environment variables.
    pub fn open(location: &str) -> Result<Self, ArtifactError> {
        let open_err = |reason: String| ArtifactError::Open { location: location.to_owned(), reason };
        if location.starts_with("s3://") {
            #[cfg(feature = "s3")]
            {
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(location)
                    .build()
                    .map_err(|e| open_err(e.to_string()))?;
                let prefix = location.trim_start_matches("s3://").split_once('/').map(|(_, p)| p).unwrap_or("");
                let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(store)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
                };
                return Ok(Self { store, base: location.trim_end_matches('/').to_owned() });
            }
            #[cfg(not(feature = "s3"))]
            return Err(open_err("this build has no S3 support (build with the `s3` feature)".into()));
        }
        let dir = location.strip_prefix("file://").unwrap_or(location);
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let dir = std::fs::canonicalize(dir).map_err(|e| open_err(e.to_string()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|e| open_err(e.to_string()))?;
        Ok(Self { store: Arc::new(store), base: format!("file://{}", dir.display()) })
    }

    /// The URI of the store's root.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URI of `key`.
    pub fn uri(&self, key: &str) -> String {
        format!("{}/{}", self.base, key.trim_start_matches('/'))
    }

    /// The key of a URI of this store.
    pub fn key_of(&self, uri: &str) -> Result<String, ArtifactError> {
        uri.strip_prefix(&self.base)
            .map(|k| k.trim_start_matches('/').to_owned())
            .ok_or_else(|| ArtifactError::Foreign { uri: uri.to_owned(), base: self.base.clone() })
    }

    /// Writes `bytes` at `key` (replacing what is there) and returns the reference.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<Stored, ArtifactError> {
        let hash = content_hash(&bytes);
        let len = bytes.len() as u64;
        self.store.put(&Path::from(key), PutPayload::from(bytes)).await?;
        Ok(Stored { uri: self.uri(key), hash, bytes: len })
    }

    /// Writes `bytes` at `key` only if nothing is there: `Ok(true)` if this call created it,
    /// `Ok(false)` if it existed. The building block of once-only decisions across workers.
    pub async fn create(&self, key: &str, bytes: Vec<u8>) -> Result<bool, ArtifactError> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&Path::from(key), PutPayload::from(bytes), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the artifact at `key`.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, ArtifactError> {
        Ok(self.store.get(&Path::from(key)).await?.bytes().await?.to_vec())
    }

    /// Reads the artifact at `key`, or `None` if there is none.
    pub async fn get_opt(&self, key: &str) -> Result<Option<Vec<u8>>, ArtifactError> {
        match self.get(key).await {
            Ok(b) => Ok(Some(b)),
            Err(ArtifactError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads the artifact at `uri` and checks it against `hash` (when given).
    pub async fn fetch(&self, uri: &str, hash: Option<&str>) -> Result<Vec<u8>, ArtifactError> {
        let bytes = self.get(&self.key_of(uri)?).await?;
        if let Some(expected) = hash {
            let found = content_hash(&bytes);
            if found != expected {
                return Err(ArtifactError::HashMismatch { uri: uri.to_owned(), expected: expected.to_owned(), found });
            }
        }
        Ok(bytes)
    }

    /// Keys under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ArtifactError> {
        let mut keys: Vec<String> =
            self.store.list(Some(&Path::from(prefix))).map_ok(|m| m.location.to_string()).try_collect().await?;
        keys.sort();
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_create_list() {
        let dir = std::env::temp_dir().join(format!("warren-artifacts-{}", uuid::Uuid::now_v7()));
        let store = ArtifactStore::open(dir.to_str().unwrap()).unwrap();
        let stored = store.put("p/j/s/a.bin", b"hello".to_vec()).await.unwrap();
        assert_eq!(stored.hash, content_hash(b"hello"));
        assert_eq!(store.fetch(&stored.uri, Some(&stored.hash)).await.unwrap(), b"hello");
        assert!(store.fetch(&stored.uri, Some("sha256:00")).await.is_err());
        assert!(store.create("p/j/decision", b"1".to_vec()).await.unwrap());
        assert!(!store.create("p/j/decision", b"2".to_vec()).await.unwrap());
        assert_eq!(store.get("p/j/decision").await.unwrap(), b"1");
        assert_eq!(store.list("p/j").await.unwrap(), vec!["p/j/decision".to_owned(), "p/j/s/a.bin".to_owned()]);
        assert!(store.get_opt("nope").await.unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
