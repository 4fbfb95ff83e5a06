//! Pipeline specs: a name and its steps, each with parameters, in TOML.
//!
//! ```toml
//! name = "iris"
//!
//! [[steps]]
//! step = "ingest"
//! cache = true
//! params = { dataset = "iris" }
//! ```
//!
//! [`PipelineSpec::parse`] checks every step's parameters against the step's type and refuses an
//! unknown step, an unknown or mistyped parameter, or a missing required one, naming the line.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use toml::Spanned;

use crate::params::*;

/// A checked pipeline spec.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    /// Pipeline name.
    pub name: String,
    /// Steps in order.
    pub steps: Vec<StepSpec>,
}

/// One step of a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    /// Step name (the queue `{ns}.step.{name}`).
    pub step: String,
    /// Reuse an earlier run's output when input, parameters and step version match.
    pub cache: bool,
    /// The step gathers what the step before it fanned out, and is told when a part died there
    /// (`gather = true`; always so for `select`).
    pub gather: bool,
    /// Parameters, checked, as a MessagePack value for the routing slip.
    pub params: rmpv::Value,
}

/// A spec that cannot be used. The message names the line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct SpecError {
    /// The file (or `<spec>`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    step: Spanned<String>,
    #[serde(default)]
    cache: bool,
    #[serde(default)]
    gather: bool,
    #[serde(default)]
    params: Option<Spanned<toml::Table>>,
}

/// The steps Warren's ML workers implement.
pub const KNOWN_STEPS: &[&str] =
    &["ingest", "validate", "features", "tune", "train", "select", "evaluate", "register", "predict"];

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

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

impl PipelineSpec {
    /// Parses and checks a spec; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, SpecError> {
        let err = |line: usize, message: String| SpecError { file: file.to_owned(), line, message };
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            err(line, e.message().to_owned())
        })?;
        if raw.steps.is_empty() {
            return Err(err(1, "the pipeline has no steps".into()));
        }
        let mut steps = Vec::with_capacity(raw.steps.len());
        for entry in raw.steps {
            let step_line = line_of(text, entry.span().start);
            let raw = entry.into_inner();
            let name = raw.step.get_ref().clone();
            let name_line = line_of(text, raw.step.span().start);
            let (table, params_line) = match raw.params {
                Some(p) => {
                    let line = line_of(text, p.span().start);
                    (p.into_inner(), line)
                }
                None => (toml::Table::new(), step_line),
            };
            let value = to_wire_value(&table).map_err(|e| err(params_line, e))?;
            let checked = match check_step(&name, value) {
                Ok(Some(v)) => Ok(v),
                Ok(None) => {
                    return Err(err(
                        name_line,
                        format!("unknown step `{name}` (known steps: {})", KNOWN_STEPS.join(", ")),
                    ));
                }
                Err(m) => Err(m),
            };
            let params = checked.map_err(|m| err(params_line, format!("step `{name}`: {m}")))?;
            let gather = raw.gather || name == "select";
            steps.push(StepSpec { step: name, cache: raw.cache, gather, params });
        }
        Ok(PipelineSpec { name: raw.name, steps })
    }

    /// Reads and parses a spec file.
    pub fn load(path: &std::path::Path) -> Result<Self, SpecError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: file.clone(),
            line: 0,
            message: e.to_string(),
        })?;
        Self::parse(&text, &file)
    }

    /// The routing slip of a job of this pipeline.
    #[cfg(feature = "warren")]
    pub fn slip(&self) -> Vec<warren::Hop> {
        self.steps
            .iter()
            .map(|s| {
                let mut hop = warren::Hop::new(s.step.clone());
                hop.params = s.params.clone();
                hop.cache = s.cache;
                hop.gather = s.gather;
                hop
            })
            .collect()
    }

    /// A job of this pipeline, ready for `warren::Client::submit`.
    #[cfg(feature = "warren")]
    pub fn job(&self) -> warren::JobSpec<crate::Start> {
        warren::JobSpec::new(self.name.clone(), self.slip(), crate::Start::default())
    }

    /// Sets `step.param = value` (from `--set`), re-checking the step's parameters.
    pub fn set(&mut self, path: &str, value: &str) -> Result<(), String> {
        let (step, key) = path.split_once('.').ok_or_else(|| format!("`{path}` is not step.param"))?;
        let hop = self.steps.iter_mut().find(|s| s.step == step).ok_or_else(|| format!("no step `{step}`"))?;
        let parsed: toml::Value = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_owned()));
        let mut map = match &hop.params {
            rmpv::Value::Map(m) => m.clone(),
            _ => Vec::new(),
        };
        let v = to_wire_value(&parsed)?;
        map.retain(|(k, _)| k.as_str() != Some(key));
        map.push((rmpv::Value::from(key), v));
        hop.params = check_step(step, rmpv::Value::Map(map))
            .map_err(|e| format!("step `{step}`: {e}"))?
            .unwrap_or(rmpv::Value::Nil);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "iris"

[[steps]]
step = "ingest"
cache = true
params = { dataset = "iris" }

[[steps]]
step = "validate"

[[steps]]
step = "features"
params = { test_fraction = 0.3, seed = 7 }
"#;

    #[test]
    fn a_good_spec_parses_with_typed_params() {
        let spec = PipelineSpec::parse(GOOD, "iris.toml").unwrap();
        assert_eq!(spec.steps.len(), 3);
        assert!(spec.steps[0].cache);
        let f: FeaturesParams = from_wire_value(&spec.steps[2].params).unwrap();
        assert_eq!((f.test_fraction, f.seed, f.scale), (0.3, 7, true));
    }

    #[test]
    fn errors_name_the_line() {
        let bad_step = GOOD.replace("step = \"validate\"", "step = \"validat\"");
        let e = PipelineSpec::parse(&bad_step, "iris.toml").unwrap_err();
        assert_eq!(e.line, 10, "{e}");
        assert!(e.to_string().contains("unknown step `validat`"), "{e}");

        let wrong_type = GOOD.replace("seed = 7", "seed = \"seven\"");
        let e = PipelineSpec::parse(&wrong_type, "iris.toml").unwrap_err();
        assert_eq!(e.line, 14, "{e}");
        assert!(e.to_string().contains("features"), "{e}");

        let missing = "name = \"x\"\n[[steps]]\nstep = \"register\"\nparams = { min_metrics = {} }\n";
        let e = PipelineSpec::parse(missing, "x.toml").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("model"), "{e}");

        let unknown_param = GOOD.replace("seed = 7", "sed = 7");
        let e = PipelineSpec::parse(&unknown_param, "iris.toml").unwrap_err();
        assert!(e.message.contains("sed"), "{e}");
    }

    #[test]
    fn set_overrides_a_param() {
        let mut spec = PipelineSpec::parse(GOOD, "iris.toml").unwrap();
        spec.set("features.seed", "11").unwrap();
        assert!(spec.set("features.seed", "\"eleven\"").is_err(), "re-checked against the type");
        let f: FeaturesParams = from_wire_value(&spec.steps[2].params).unwrap();
        assert_eq!(f.seed, 11);
        assert!(spec.set("nope.seed", "1").is_err());
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    #[test]
    fn every_shipped_pipeline_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                PipelineSpec::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 4, "pipelines/ holds the shipped specs");
    }
}
