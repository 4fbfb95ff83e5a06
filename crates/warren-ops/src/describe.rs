//! A step's parameters as a person reads them: name, type, default, allowed range or values,
//! and what it does, from the JSON Schema its workers announce.

use serde_json::Value;
use warren::registry::StepDescriptor;

/// One parameter of a step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// `integer`, `number`, `boolean`, `string`, `array`, `object`, or `a | b` (`null` left out).
    pub kind: String,
    /// The default, as JSON (`-` when it has none).
    pub default: String,
    /// The allowed range or values (`0 < x < 1`, `≥ 0`, `"gini", "entropy"`), or empty.
    pub allowed: String,
    /// Whether a spec must give it.
    pub required: bool,
    /// What it does (its first line).
    pub about: String,
}

fn kind(schema: &Value) -> String {
    let mut kinds: Vec<String> = match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        // An enum without a type (`Literal[...]` in Python) is of its values' types.
        _ => schema["enum"].as_array().map_or_else(Vec::new, |values| values.iter().map(json_type).collect()),
    };
    for alt in ["anyOf", "oneOf"].iter().filter_map(|k| schema[*k].as_array()).flatten() {
        if let Some(r) = alt["$ref"].as_str() {
            kinds.push(r.rsplit('/').next().unwrap_or(r).to_owned());
        } else {
            kinds.extend(kind(alt).split(" | ").filter(|k| !k.is_empty()).map(str::to_owned));
        }
    }
    if let Some(r) = schema["$ref"].as_str() {
        kinds.push(r.rsplit('/').next().unwrap_or(r).to_owned());
    }
    kinds.retain(|k| k != "null");
    kinds.dedup();
    kinds.join(" | ")
}

fn json_type(v: &Value) -> String {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
    .to_owned()
}

fn allowed(schema: &Value) -> String {
    // The values of an enum, also when it is one of the alternatives (`Optional[Literal[...]]`).
    let alternatives = ["anyOf", "oneOf"].iter().filter_map(|k| schema[*k].as_array()).flatten();
    let values: Vec<String> = std::iter::once(schema)
        .chain(alternatives)
        .filter_map(|s| s["enum"].as_array())
        .flatten()
        .filter(|v| !v.is_null())
        .map(Value::to_string)
        .collect();
    if !values.is_empty() {
        return values.join(", ");
    }
    let bound = |k: &str| schema.get(k).filter(|v| v.is_number()).map(Value::to_string);
    let low = bound("exclusiveMinimum").map(|v| (v, "<")).or_else(|| bound("minimum").map(|v| (v, "≤")));
    let high = bound("exclusiveMaximum").map(|v| (v, "<")).or_else(|| bound("maximum").map(|v| (v, "≤")));
    match (low, high) {
        (Some((l, lo)), Some((h, hi))) => format!("{l} {lo} x {hi} {h}"),
        (Some((l, lo)), None) => format!("x {} {l}", if lo == "<" { ">" } else { "≥" }),
        (None, Some((h, hi))) => format!("x {hi} {h}"),
        (None, None) => String::new(),
    }
}

/// The parameters of `descriptor`, in name order (empty when it announces no properties).
pub fn params(descriptor: &StepDescriptor) -> Vec<Param> {
    let schema = &descriptor.params;
    let required: Vec<&str> =
        schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let Some(props) = schema["properties"].as_object() else { return Vec::new() };
    props
        .iter()
        .map(|(name, p)| Param {
            name: name.clone(),
            kind: kind(p),
            default: p.get("default").map_or_else(|| "-".to_owned(), Value::to_string),
            allowed: allowed(p),
            required: required.contains(&name.as_str()),
            about: p["description"].as_str().and_then(|d| d.lines().next()).unwrap_or("").to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_read_as_name_type_default_range_and_purpose() {
        let mut d = StepDescriptor::new("features", "1");
        d.params = serde_json::json!({
            "type": "object", "required": ["target"],
            "properties": {
                "test_fraction": { "type": "number", "default": 0.25, "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                                   "description": "Share of rows held out.\nMore text." },
                "seed": { "type": "integer", "default": 42, "minimum": 0 },
                "criterion": { "type": ["string", "null"], "enum": ["gini", "entropy"] },
                "target": { "type": "string" },
                "algorithm": { "anyOf": [{ "$ref": "#/$defs/Algorithm" }, { "type": "null" }] },
                "stop_words": { "anyOf": [{ "enum": ["english"] }, { "type": "null" }], "default": "english" }
            }
        });
        let p = params(&d);
        let row = |n: &str| p.iter().find(|r| r.name == n).cloned().unwrap();
        assert_eq!(row("test_fraction").allowed, "0 < x < 1");
        assert_eq!(row("test_fraction").about, "Share of rows held out.");
        assert_eq!(
            (row("seed").kind.as_str(), row("seed").default.as_str(), row("seed").allowed.as_str()),
            ("integer", "42", "x ≥ 0")
        );
        assert_eq!(
            (row("criterion").kind.as_str(), row("criterion").allowed.as_str()),
            ("string", "\"gini\", \"entropy\"")
        );
        assert!(row("target").required && !row("seed").required);
        assert_eq!((row("target").default.as_str(), row("algorithm").kind.as_str()), ("-", "Algorithm"));
        assert_eq!(
            (row("stop_words").kind.as_str(), row("stop_words").allowed.as_str()),
            ("string", "\"english\""),
            "an optional Literal from a Python step"
        );
        assert!(params(&StepDescriptor::new("bare", "1")).is_empty());
    }
}
