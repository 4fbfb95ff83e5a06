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
//! [`PipelineSpec::parse`] reads any pipeline: it knows no step. [`PipelineSpec::check`]
//! (feature `check`) holds a spec against the step descriptors of the registry: every step
//! announced, parameters valid under each step's JSON Schema, the first step taking the job's
//! start payload and each step the one before it sends. Every error names the line.

use serde::Serialize;
use toml::Spanned;

/// A pipeline spec, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    /// Pipeline name.
    pub name: String,
    /// Steps in order.
    pub steps: Vec<StepSpec>,
    /// The file (or `<spec>`), for errors.
    pub file: String,
}

/// One step of a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    /// Step name (the queue `{ns}.step.{name}`).
    pub step: String,
    /// Reuse an earlier run's output when input, parameters and step version match.
    pub cache: bool,
    /// The step gathers what the step before it fanned out (`gather = true`, or the step's
    /// descriptor says so).
    pub gather: bool,
    /// Parameters (a JSON object).
    pub params: serde_json::Value,
    /// Line of the step's `step = …`.
    pub line: usize,
    /// Line of its `params` (else the step's line).
    pub params_line: usize,
}

/// A spec that cannot be used. The message names the line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct SpecError {
    /// The file (or `<spec>`).
    pub file: String,
    /// 1-based line (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    steps: Vec<Spanned<RawStep>>,
}

#[derive(serde::Deserialize)]
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

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A serde value as MessagePack on the wire (named fields, enum variants as strings).
pub fn to_wire_value<T: Serialize + ?Sized>(value: &T) -> Result<rmpv::Value, String> {
    warren::envelope::to_msgpack_value(value).map_err(|e| e.to_string())
}

impl PipelineSpec {
    /// Parses a spec; `file` names it in errors. Steps are not checked (see [`PipelineSpec::check`]).
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
            let raw = entry.into_inner();
            let line = line_of(text, raw.step.span().start);
            let name = raw.step.into_inner();
            let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
            if !valid {
                return Err(err(line, format!("`{name}` is not a step name (letters, digits, '-' and '_')")));
            }
            let (table, params_line) = match raw.params {
                Some(p) => {
                    let l = line_of(text, p.span().start);
                    (p.into_inner(), l)
                }
                None => (toml::Table::new(), line),
            };
            let params = serde_json::to_value(&table).map_err(|e| err(params_line, e.to_string()))?;
            steps.push(StepSpec { step: name, cache: raw.cache, gather: raw.gather, params, line, params_line });
        }
        Ok(PipelineSpec { name: raw.name, steps, file: file.to_owned() })
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

    fn error(&self, line: usize, message: impl Into<String>) -> SpecError {
        SpecError { file: self.file.clone(), line, message: message.into() }
    }

    /// Sets `step.param = value` (from `--set`; `value` is TOML, else a plain string).
    pub fn set(&mut self, path: &str, value: &str) -> Result<(), String> {
        let (step, key) = path.split_once('.').ok_or_else(|| format!("`{path}` is not step.param"))?;
        let hop = self.steps.iter_mut().find(|s| s.step == step).ok_or_else(|| format!("no step `{step}`"))?;
        let parsed: toml::Value = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_owned()));
        let v = serde_json::to_value(parsed).map_err(|e| e.to_string())?;
        match &mut hop.params {
            serde_json::Value::Object(map) => {
                map.insert(key.to_owned(), v);
            }
            other => *other = serde_json::json!({ key: v }),
        }
        Ok(())
    }

    /// The routing slip of a job of this pipeline.
    pub fn slip(&self) -> Vec<warren::Hop> {
        self.steps
            .iter()
            .map(|s| {
                let mut hop = warren::Hop::new(s.step.clone());
                // A JSON value always has a MessagePack form.
                hop.params = to_wire_value(&s.params).unwrap_or(rmpv::Value::Nil);
                hop.cache = s.cache;
                hop.gather = s.gather;
                hop
            })
            .collect()
    }

    /// A job of this pipeline, started with [`warren::Start`], ready for `warren::Client::submit`.
    pub fn job(&self) -> warren::JobSpec<warren::Start> {
        warren::JobSpec::new(self.name.clone(), self.slip(), warren::Start::default())
    }

    /// Checks the spec against the registry's step descriptors: each step announced, its
    /// parameters valid, the first step taking [`warren::Start`] and each step taking what the
    /// one before it sends. Steps whose descriptor says they gather get `gather`.
    pub fn check(&mut self, registry: &warren::registry::Registry) -> Result<(), SpecError> {
        let known = || registry.steps.keys().cloned().collect::<Vec<_>>().join(", ");
        let mut previous: Option<(&warren::registry::StepDescriptor, String)> = None;
        for s in self.steps.iter_mut() {
            let Some(d) = registry.descriptor(&s.step) else {
                let known = known();
                let hint = if known.is_empty() { "none yet".to_owned() } else { known };
                return Err(SpecError {
                    file: self.file.clone(),
                    line: s.line,
                    message: format!(
                        "unknown step `{}`: no worker has announced it in this namespace (registered: {hint}); \
                         start its workers, or submit with --no-check",
                        s.step
                    ),
                });
            };
            check_params(d, &s.params).map_err(|m| SpecError {
                file: self.file.clone(),
                line: s.params_line,
                message: format!("step `{}`: {m}", s.step),
            })?;
            let takes = |schema: &str| d.input == "*" || schema == "*" || d.input == schema;
            match previous {
                None if !takes(warren::START_SCHEMA) => {
                    return Err(SpecError {
                        file: self.file.clone(),
                        line: s.line,
                        message: format!(
                            "step `{}` cannot start a pipeline: it takes {}, and a job starts with {}",
                            s.step,
                            d.input,
                            warren::START_SCHEMA
                        ),
                    });
                }
                Some((p, before)) if !takes(&p.output) => {
                    return Err(SpecError {
                        file: self.file.clone(),
                        line: s.line,
                        message: format!(
                            "step `{}` takes {}, but `{}` before it sends {}",
                            s.step, d.input, before, p.output
                        ),
                    });
                }
                _ => {}
            }
            s.gather |= d.gather;
            previous = Some((d, s.step.clone()));
        }
        self.check_gathered(registry)
    }

    /// A fan-out must be gathered before the slip ends: otherwise every branch runs the rest of
    /// the pipeline on its own, and the job ends (and registers a model) once per branch.
    fn check_gathered(&self, registry: &warren::registry::Registry) -> Result<(), SpecError> {
        let mut open: Option<&StepSpec> = None;
        for s in &self.steps {
            // A gathering step closes the fan-out; what it sends on (select's one best model, or
            // none) goes once per job, even when its output type could be many.
            if s.gather {
                open = None;
            } else if registry.descriptor(&s.step).is_some_and(|d| d.fan_out) {
                open = Some(s);
            }
        }
        match open {
            None => Ok(()),
            Some(f) => Err(self.error(
                f.line,
                format!(
                    "step `{}` fans out, but no step after it gathers the branches (a step whose workers gather, such \
                     as `select`, or `gather = true`): each branch would run the rest of the pipeline and end the job \
                     on its own",
                    f.step
                ),
            )),
        }
    }

    /// An error about step `i`'s parameters, naming their line.
    pub fn params_error(&self, i: usize, message: impl Into<String>) -> SpecError {
        self.error(self.steps.get(i).map_or(0, |s| s.params_line), message)
    }
}

/// Checks `params` against a descriptor's JSON Schema; the message names each offending
/// parameter (`test_fraction: 2.5 is greater than or equal to the maximum of 1`).
pub fn check_params(descriptor: &warren::registry::StepDescriptor, params: &serde_json::Value) -> Result<(), String> {
    let validator = jsonschema::validator_for(&descriptor.params)
        .map_err(|e| format!("its workers announced a parameter schema that cannot be used: {e}"))?;
    let problems: Vec<String> = validator
        .iter_errors(params)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = at.trim_start_matches('/').replace('/', ".");
            if at.is_empty() { e.to_string() } else { format!("{at}: {e}") }
        })
        .collect();
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "text"

[[steps]]
step = "fetch"
cache = true
params = { url = "https://example.com", tries = 3 }

[[steps]]
step = "count"
"#;

    #[test]
    fn any_step_parses_and_errors_name_the_line() {
        let spec = PipelineSpec::parse(GOOD, "text.toml").unwrap();
        assert_eq!(spec.steps.len(), 2);
        assert_eq!((spec.steps[0].line, spec.steps[0].params_line, spec.steps[1].line), (5, 7, 10));
        assert_eq!(spec.steps[0].params["tries"], 3);
        let slip = spec.slip();
        assert!(slip[0].cache);

        let e = PipelineSpec::parse(&GOOD.replace("step = \"count\"", "step = \"co unt\""), "t.toml").unwrap_err();
        assert_eq!(e.line, 10, "{e}");
        let e = PipelineSpec::parse(&GOOD.replace("cache = true", "cach = true"), "t.toml").unwrap_err();
        assert!(e.message.contains("cach"), "{e}");
    }

    #[test]
    fn set_adds_or_replaces_a_param() {
        let mut spec = PipelineSpec::parse(GOOD, "text.toml").unwrap();
        spec.set("fetch.tries", "5").unwrap();
        spec.set("count.word", "hello").unwrap();
        assert_eq!(spec.steps[0].params["tries"], 5);
        assert_eq!(spec.steps[1].params["word"], "hello");
        assert!(spec.set("nope.x", "1").is_err());
    }

    #[test]
    fn check_holds_the_spec_against_descriptors() {
        use warren::registry::{Registry, StepDescriptor, StepEntry};
        let mut fetch = StepDescriptor::new("fetch", "1");
        fetch.input = warren::START_SCHEMA.into();
        fetch.output = "t.Page/1".into();
        fetch.params = serde_json::json!({
            "type": "object", "additionalProperties": false,
            "properties": { "url": { "type": "string" }, "tries": { "type": "integer", "minimum": 1, "maximum": 5 } }
        });
        let mut count = StepDescriptor::new("count", "1");
        count.input = "t.Page/1".into();
        let mut registry = Registry::default();
        for d in [fetch, count] {
            registry.steps.insert(d.step.clone(), StepEntry { descriptor: d, announced_ms: 0, workers: vec![] });
        }
        PipelineSpec::parse(GOOD, "t.toml").unwrap().check(&registry).unwrap();

        let e = PipelineSpec::parse(&GOOD.replace("tries = 3", "tries = 9"), "t.toml").unwrap().check(&registry);
        let e = e.unwrap_err();
        assert_eq!(e.line, 7);
        assert!(e.message.contains("tries") && e.message.contains('9'), "{e}");
        let e = PipelineSpec::parse(&GOOD.replace("tries = 3", "tries = \"3\""), "t.toml").unwrap().check(&registry);
        assert!(e.unwrap_err().message.contains("tries"));
        let e = PipelineSpec::parse(&GOOD.replace("\"count\"", "\"cuont\""), "t.toml").unwrap().check(&registry);
        let e = e.unwrap_err();
        assert_eq!(e.line, 10);
        assert!(e.message.contains("unknown step `cuont`"), "{e}");
        let reversed = "name = \"x\"\n[[steps]]\nstep = \"count\"\n[[steps]]\nstep = \"fetch\"\n";
        let e = PipelineSpec::parse(reversed, "t.toml").unwrap().check(&registry).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("cannot start a pipeline"), "{e}");
    }

    #[test]
    fn a_fan_out_must_be_gathered_before_the_slip_ends() {
        use warren::registry::{Registry, StepDescriptor, StepEntry};
        let mut registry = Registry::default();
        let mut tune = StepDescriptor::new("tune", "1");
        tune.input = warren::START_SCHEMA.into();
        tune.output = "t.Task/1".into();
        tune.fan_out = true;
        let mut train = StepDescriptor::new("train", "1");
        train.input = "t.Task/1".into();
        train.output = "t.Model/1".into();
        let mut select = StepDescriptor::new("select", "1");
        select.input = "t.Model/1".into();
        select.output = "t.Model/1".into();
        select.gather = true;
        select.fan_out = true; // as the real one: a best model, or none
        for d in [tune, train, select] {
            registry.steps.insert(d.step.clone(), StepEntry { descriptor: d, announced_ms: 0, workers: vec![] });
        }
        let spec = |steps: &[&str]| {
            let body: String = steps.iter().map(|s| format!("[[steps]]\nstep = \"{s}\"\n")).collect();
            PipelineSpec::parse(&format!("name = \"p\"\n{body}"), "p.toml").unwrap()
        };
        spec(&["tune", "train", "select"]).check(&registry).unwrap();
        let e = spec(&["tune", "train"]).check(&registry).unwrap_err();
        assert_eq!(e.line, 3, "names the fan-out's line: {e}");
        assert!(e.message.contains("step `tune` fans out") && e.message.contains("gather"), "{e}");
    }
}
