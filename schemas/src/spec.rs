//! Typed checks of the ML steps' parameters, for tests and tools that link the contracts.
//! Pipeline specs themselves are generic (`warren_ops::spec`), checked at submit against the JSON
//! Schema each step's workers announce (generated from the types here).

use serde::{Serialize, de::DeserializeOwned};

use crate::params::*;

/// The steps Warren's ML workers implement.
pub const KNOWN_STEPS: &[&str] =
    &["ingest", "validate", "features", "tune", "train", "select", "evaluate", "register", "predict"];

/// A serde value as MessagePack on the wire (named fields, enum variants as strings).
pub fn to_wire_value<T: Serialize + ?Sized>(value: &T) -> Result<rmpv::Value, String> {
    let bytes = rmp_serde::to_vec_named(value).map_err(|e| e.to_string())?;
    rmpv::decode::read_value(&mut bytes.as_slice()).map_err(|e| e.to_string())
}

/// A MessagePack value decoded as the wire decoder would.
pub fn from_wire_value<T: DeserializeOwned>(value: &rmpv::Value) -> Result<T, String> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).map_err(|e| e.to_string())?;
    rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())
}

fn check<T: DeserializeOwned + Serialize>(params: rmpv::Value) -> Result<rmpv::Value, String> {
    let typed: T = from_wire_value(&params)?;
    to_wire_value(&typed)
}

/// Checks `params` against step `name`'s parameter type; `Ok(None)` for an unknown step. The
/// error names the offending key as serde does (`unknown field `x``, `invalid type … for key`).
pub fn check_step(name: &str, params: rmpv::Value) -> Result<Option<rmpv::Value>, String> {
    let checked = match name {
        "ingest" => check::<IngestParams>(params).and_then(|v| {
            let p: IngestParams = from_wire_value(&v)?;
            match (&p.dataset, &p.csv) {
                (Some(_), None) | (None, Some(_)) => Ok(v),
                _ => Err("ingest takes exactly one of `dataset` and `csv`".to_owned()),
            }
        }),
        "validate" => check::<ValidateParams>(params),
        "features" => check::<FeaturesParams>(params),
        "tune" => check::<TuneParams>(params),
        "train" => check::<TrainParams>(params),
        "register" => check::<RegisterParams>(params),
        "select" => check::<SelectParams>(params),
        "evaluate" | "predict" => check::<NoParams>(params),
        _ => return Ok(None),
    };
    checked.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(toml_text: &str) -> rmpv::Value {
        let table: toml::Table = toml_text.parse().unwrap();
        to_wire_value(&table).unwrap()
    }

    #[test]
    fn typed_checks_name_the_key() {
        let f = check_step("features", params("test_fraction = 0.3\nseed = 7")).unwrap().unwrap();
        let f: FeaturesParams = from_wire_value(&f).unwrap();
        assert_eq!((f.test_fraction, f.seed, f.scale.scaling()), (0.3, 7, crate::params::Scaling::Standard));
        let e = check_step("features", params("seed = \"seven\"")).unwrap_err();
        assert!(!e.is_empty());
        assert!(check_step("features", params("sed = 7")).unwrap_err().contains("sed"));
        assert!(check_step("register", params("min_metrics = {}")).unwrap_err().contains("model"));
        assert!(check_step("validat", params("")).unwrap().is_none());
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    #[test]
    fn every_shipped_pipeline_parses_and_its_params_fit_the_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let spec = warren_ops::spec::PipelineSpec::load(&path).unwrap_or_else(|e| panic!("{e}"));
                for s in &spec.steps {
                    let value = warren_ops::spec::to_wire_value(&s.params).unwrap();
                    let checked = check_step(&s.step, value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    assert!(checked.is_some(), "{}: unknown step {}", path.display(), s.step);
                }
                n += 1;
            }
        }
        assert!(n >= 4, "pipelines/ holds the shipped specs");
    }
}
