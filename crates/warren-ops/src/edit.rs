//! Values as an operator types them, and edits of dead letters checked against what the step
//! announced (its parameters' JSON Schema, its input payload's schema) before anything moves.

use warren::registry::{Registry, StepDescriptor};

use crate::{
    OpsError,
    dlq::{DeadLetter, Edit},
};

/// A value as typed on a command line or in a form: a TOML inline value as a spec file takes it
/// (`7`, `0.5`, `true`, `"text"`, `[1, 2]`, `{ depth = 3 }`), or else the text as it is. One
/// syntax for `submit --set`, `rerun --set`, `dlq replay --set/--payload-set` and the console.
pub fn parse_value(text: &str) -> Result<rmpv::Value, OpsError> {
    let t = text.trim();
    let parsed: toml::Value = format!("v = {t}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(t.to_owned()));
    warren::envelope::to_msgpack_value(&parsed).map_err(|e| OpsError::usage(format!("{t}: {e}")))
}

/// `NAME=VALUE` items of `flag` as names and values.
pub fn parse_assignments(flag: &str, items: &[String]) -> Result<Vec<(String, rmpv::Value)>, OpsError> {
    items
        .iter()
        .map(|item| {
            let (k, v) = item
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| OpsError::usage(format!("{flag} {item}: expected NAME=VALUE")))?;
            let value = parse_value(v).map_err(|e| OpsError::usage(format!("{flag} {k}: {e}")))?;
            Ok((k.trim().to_owned(), value))
        })
        .collect()
}

/// The parameter names a step's descriptor declares, if it declares them.
fn declared_params(descriptor: &StepDescriptor) -> Option<Vec<&str>> {
    let props = descriptor.params.get("properties")?.as_object()?;
    Some(props.keys().map(String::as_str).collect())
}

/// Every `--set`/`--unset` key must be a parameter of each step it may reach, as the steps'
/// descriptors say, whatever the dead-letter queues hold. Returns notes for steps whose
/// parameters are not known here.
pub fn check_keys(edit: &Edit, steps: &[String], registry: &Registry) -> Result<Vec<String>, OpsError> {
    let mut notes = Vec::new();
    let keys =
        edit.set.iter().map(|(k, _)| ("--set", k.as_str())).chain(edit.unset.iter().map(|k| ("--unset", k.as_str())));
    let keys: Vec<(&str, &str)> = keys.collect();
    if keys.is_empty() {
        return Ok(notes);
    }
    for step in steps {
        let Some(params) = registry.descriptor(step).and_then(declared_params) else {
            notes.push(format!("step {step} has no parameter schema here; --set/--unset not checked"));
            continue;
        };
        if let Some((flag, key)) = keys.iter().find(|(_, k)| !params.contains(k)) {
            return Err(OpsError::usage(format!(
                "{flag} {key}: step {step} has no parameter `{key}` (its parameters: {})",
                params.join(", ")
            )));
        }
    }
    Ok(notes)
}

/// Whether the edited letter's parameters fit its step (`Ok(false)`: not known here).
fn params_fit(edit: &Edit, d: &DeadLetter, step: &str, registry: &Registry) -> Result<bool, String> {
    let env = edit.apply_value(&d.body)?;
    let params = env.slip.first().map(|h| h.params.clone()).unwrap_or(rmpv::Value::Nil);
    let params = if params.is_nil() { rmpv::Value::Map(Vec::new()) } else { params };
    let Some(descriptor) = registry.descriptor(step) else { return Ok(false) };
    let json = serde_json::to_value(&params).map_err(|e| e.to_string())?;
    crate::spec::check_params(descriptor, &json).map(|()| true)
}

/// Whether the edited letter's payload fits its step's input schema (`Ok(false)`: not known).
fn payload_fits(edit: &Edit, d: &DeadLetter, step: &str, registry: &Registry) -> Result<bool, String> {
    let env = edit.apply_value(&d.body)?;
    let schema =
        registry.descriptor(step).filter(|desc| desc.input == env.schema).and_then(|desc| desc.input_schema.clone());
    let Some(schema) = schema else { return Ok(false) };
    let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
    let json = serde_json::to_value(&env.payload).map_err(|e| e.to_string())?;
    let problems: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| format!("{}: {e}", e.instance_path().to_string().trim_start_matches('/').replace('/', ".")))
        .collect();
    if problems.is_empty() { Ok(true) } else { Err(problems.join("; ")) }
}

type Fits<'a> = dyn Fn(&Edit) -> Result<bool, String> + 'a;

/// The change to blame for `error`: the one whose removal makes the rest fit.
fn culprit(edit: &Edit, fits: &Fits<'_>, step: &str, schema: &str, id: &str, error: String) -> OpsError {
    let without = |f: &dyn Fn(&mut Edit)| {
        let mut e = edit.clone();
        f(&mut e);
        fits(&e).is_ok()
    };
    for (i, (k, v)) in edit.set.iter().enumerate() {
        if without(&|e| drop(e.set.remove(i))) {
            return OpsError::usage(format!("--set {k}={v}: not accepted by step {step}: {error}"));
        }
    }
    for (i, k) in edit.unset.iter().enumerate() {
        if without(&|e| drop(e.unset.remove(i))) {
            return OpsError::usage(format!("--unset {k}: step {step} needs it: {error}"));
        }
    }
    for (i, (k, v)) in edit.payload_set.iter().enumerate() {
        if without(&|e| drop(e.payload_set.remove(i))) {
            return OpsError::usage(format!("--payload-set {k}={v}: the payload no longer fits {schema}: {error}"));
        }
    }
    OpsError::usage(format!("the edit does not fit dead letter {id}: {error}"))
}

/// An edit must fit the letter: the step's parameters and the payload's schema, where Warren
/// knows them. A misfit is a usage error naming the flag and key; returns notes for what could
/// not be checked.
pub fn check(edit: &Edit, d: &DeadLetter, registry: &Registry) -> Result<Vec<String>, OpsError> {
    let mut notes = Vec::new();
    if edit.is_empty() {
        return Ok(notes);
    }
    let env =
        edit.apply_value(&d.body).map_err(|e| OpsError::usage(format!("cannot edit dead letter {}: {e}", d.id)))?;
    let step = env.slip.first().map(|h| h.step.clone()).unwrap_or_else(|| d.step.clone());
    if !(edit.set.is_empty() && edit.unset.is_empty()) {
        let fits = |e: &Edit| params_fit(e, d, &step, registry);
        match fits(edit) {
            Ok(true) => {}
            Ok(false) => notes.push(format!("step {step} has no parameter schema here; --set/--unset not checked")),
            Err(e) => return Err(culprit(edit, &fits, &step, &env.schema, &d.id, e)),
        }
    }
    if !edit.payload_set.is_empty() {
        let fits = |e: &Edit| payload_fits(e, d, &step, registry);
        match fits(edit) {
            Ok(true) => {}
            Ok(false) => {
                notes.push(format!("payload schema {} is not known here; --payload-set not checked", env.schema))
            }
            Err(e) => return Err(culprit(edit, &fits, &step, &env.schema, &d.id, e)),
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use warren::registry::StepEntry;

    use super::*;

    fn registry() -> Registry {
        let mut train = StepDescriptor::new("train", "1");
        train.input = "t.Task/1".into();
        train.params = serde_json::json!({
            "type": "object", "additionalProperties": false,
            "properties": { "depth": { "type": "integer", "minimum": 1, "maximum": 8 }, "seed": { "type": "integer" } }
        });
        train.input_schema = Some(serde_json::json!({
            "type": "object", "required": ["trial"],
            "properties": { "trial": { "type": "integer" }, "name": { "type": "string" } }
        }));
        let mut registry = Registry::default();
        registry.steps.insert("train".into(), StepEntry { descriptor: train, announced_ms: 0, workers: vec![] });
        registry
    }

    fn letter(params: &[(&str, i64)]) -> DeadLetter {
        let params: std::collections::BTreeMap<&str, i64> = params.iter().copied().collect();
        let payload = warren::envelope::to_msgpack_value(&serde_json::json!({ "trial": 2, "name": "a" })).unwrap();
        let env = warren::Envelope {
            v: 1,
            job_id: uuid::Uuid::now_v7(),
            message_id: uuid::Uuid::now_v7(),
            causation_id: None,
            pipeline: "p".into(),
            slip: vec![warren::Hop::with_params("train", &params).unwrap()],
            schema: "t.Task/1".into(),
            payload,
        };
        crate::dlq::dead_letter("train", Default::default(), env.encode().unwrap())
    }

    fn edit(set: &[(&str, rmpv::Value)], payload_set: &[(&str, rmpv::Value)]) -> Edit {
        let own = |l: &[(&str, rmpv::Value)]| l.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        Edit { set: own(set), unset: vec![], payload_set: own(payload_set) }
    }

    #[test]
    fn values_read_as_a_spec_file_reads_them() {
        assert_eq!(parse_value("7").unwrap(), rmpv::Value::from(7));
        assert_eq!(parse_value("0.5").unwrap(), rmpv::Value::from(0.5));
        assert_eq!(parse_value("true").unwrap(), rmpv::Value::from(true));
        assert_eq!(parse_value("\"7\"").unwrap(), rmpv::Value::from("7"));
        assert_eq!(parse_value("[1, 2]").unwrap(), rmpv::Value::Array(vec![1.into(), 2.into()]));
        assert_eq!(parse_value("{ depth = 3 }").unwrap(), rmpv::Value::Map(vec![("depth".into(), 3.into())]));
        assert_eq!(parse_value("data:iris.csv").unwrap(), rmpv::Value::from("data:iris.csv"), "bare text");
        let e = parse_assignments("--set", &["=3".into()]).unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("expected NAME=VALUE"), "{e}");
    }

    #[test]
    fn an_unknown_key_is_refused_from_the_descriptor_whatever_the_queue_holds() {
        let e = check_keys(&edit(&[("no_such_param", 1.into())], &[]), &["train".into()], &registry()).unwrap_err();
        assert!(e.is_usage(), "{e}");
        assert_eq!(
            e.to_string(),
            "--set no_such_param: step train has no parameter `no_such_param` (its parameters: depth, seed)"
        );
        let notes = check_keys(&edit(&[("x", 1.into())], &[]), &["custom".into()], &registry()).unwrap();
        assert_eq!(notes, ["step custom has no parameter schema here; --set/--unset not checked"]);
        assert!(check_keys(&edit(&[("depth", 3.into())], &[]), &["train".into()], &registry()).unwrap().is_empty());
    }

    #[test]
    fn an_edit_that_does_not_fit_names_the_change_to_blame() {
        let d = letter(&[("seed", 1)]);
        let e = check(&edit(&[("seed", 2.into()), ("depth", 99.into())], &[]), &d, &registry()).unwrap_err();
        assert!(e.to_string().starts_with("--set depth=99: not accepted by step train"), "{e}");
        let e = check(&edit(&[], &[("trial", "first".into())]), &d, &registry()).unwrap_err();
        assert!(e.to_string().starts_with("--payload-set trial=\"first\": the payload no longer fits t.Task/1"), "{e}");
        let e = check(&edit(&[], &[("trail", 3.into())]), &d, &registry()).unwrap_err();
        assert!(e.to_string().contains("trail"), "a typo is not a new field: {e}");
        let fits = check(&edit(&[("depth", 3.into())], &[("name", "b".into())]), &d, &registry()).unwrap();
        assert!(fits.is_empty(), "{fits:?}");
    }
}
