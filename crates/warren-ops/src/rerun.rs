//! [`Operator::rerun`]: a new job that starts at a step from what an old job handed to it, so
//! everything upstream (datasets, features, trained models) is reused, not recomputed.

use uuid::Uuid;
use warren::{
    Hop,
    artifacts::ArtifactStore,
    envelope::{self, EnvelopeRef},
    events::OperatorAction,
    registry::Registry,
    worker::inputs_prefix,
};

use crate::{Audit, Operator, OpsError, Selection, edit::parse_value};

/// A recorded step input (see `warren::worker::RecordedInput`).
#[derive(serde::Deserialize)]
struct Recorded {
    schema: String,
    slip: Vec<Hop>,
    payload: rmpv::Value,
}

/// One `step.param=value` change of a rerun.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamChange {
    /// The step (at or after the one the rerun starts at).
    pub step: String,
    /// The parameter.
    pub param: String,
    /// Its new value.
    pub value: rmpv::Value,
}

/// Parses `step.param=value` items (values as [`parse_value`] reads them).
pub fn parse_changes(items: &[String]) -> Result<Vec<ParamChange>, OpsError> {
    items
        .iter()
        .map(|item| {
            let bad = || OpsError::Usage(format!("--set {item}: expected STEP.PARAM=VALUE"));
            let (path, v) = item.split_once('=').ok_or_else(bad)?;
            let (step, param) = path.split_once('.').filter(|(s, p)| !s.is_empty() && !p.is_empty()).ok_or_else(bad)?;
            let value = parse_value(v).map_err(|e| OpsError::Usage(format!("--set {path}: {e}")))?;
            Ok(ParamChange { step: step.to_owned(), param: param.to_owned(), value })
        })
        .collect()
}

/// Applies `change` to the slip, checked against the step's descriptor where it is known.
fn apply(slip: &mut [Hop], change: &ParamChange, from: &str, registry: &Registry) -> Result<(), OpsError> {
    let ParamChange { step, param, value } = change;
    let hop = slip.iter_mut().find(|h| &h.step == step).ok_or_else(|| {
        OpsError::Usage(format!("--set {step}.{param}: step {step} does not come at or after {from}"))
    })?;
    let mut map = match std::mem::replace(&mut hop.params, rmpv::Value::Nil) {
        rmpv::Value::Map(m) => m,
        _ => Vec::new(),
    };
    map.retain(|(k, _)| k.as_str() != Some(param.as_str()));
    map.push((param.as_str().into(), value.clone()));
    if let Some(d) = registry.descriptor(step) {
        let json = serde_json::to_value(rmpv::Value::Map(map.clone())).map_err(|e| OpsError::Other(e.to_string()))?;
        crate::spec::check_params(d, &json).map_err(|e| OpsError::Usage(format!("--set {step}.{param}: {e}")))?;
    }
    hop.params = rmpv::Value::Map(map);
    Ok(())
}

impl Operator {
    /// A new job that starts at `from` from what job `old` handed to it, with `changes` applied
    /// and checked; recorded with `audit`. Returns the new job's id and how many messages it
    /// started with.
    pub async fn rerun(
        &self,
        old: Uuid,
        from: &str,
        changes: &[ParamChange],
        audit: &Audit,
    ) -> Result<(Uuid, usize), OpsError> {
        audit.check("rerunning", 1)?;
        let (pipeline, keys, store) = self.recorded_inputs(old, from).await?;
        let registry = self.registry().await?;
        let new_job = Uuid::now_v7();
        let publisher = self.client().broker().publisher().await?;
        for (i, key) in keys.iter().enumerate() {
            let bytes = store.get(key).await.map_err(|e| OpsError::Store(e.to_string()))?;
            let record: Recorded = rmp_serde::from_slice(&bytes).map_err(|e| OpsError::Store(format!("{key}: {e}")))?;
            let mut slip = record.slip;
            for change in changes {
                apply(&mut slip, change, from, &registry)?;
            }
            let env = EnvelopeRef {
                v: envelope::ENVELOPE_VERSION,
                job_id: new_job,
                message_id: envelope::derive_message_id(new_job, "rerun", i),
                causation_id: None,
                pipeline: &pipeline,
                slip: &slip,
                schema: &record.schema,
                payload: &record.payload,
            };
            let (body, props) = env.to_message(from).map_err(|e| OpsError::Other(format!("cannot encode: {e}")))?;
            publisher.publish(&self.names().steps_exchange(), from, &body, props).await?;
        }
        drop(publisher);
        let selection = Selection { steps: vec![from.to_owned()], ..Default::default() };
        let action = OperatorAction {
            job: Some(new_job),
            filter: format!("rerun of {old} from {from}"),
            changes: changes.iter().map(|c| format!("{}.{}={}", c.step, c.param, c.value)).collect(),
            ..self.action("rerun", audit, &selection, keys.len(), vec![old.to_string()])
        };
        self.record(&action).await?;
        Ok((new_job, keys.len()))
    }

    /// The old job's pipeline and the keys of what it handed to `from`, in the artifact store.
    async fn recorded_inputs(&self, old: Uuid, from: &str) -> Result<(String, Vec<String>, ArtifactStore), OpsError> {
        let events = self.job_events(old).await?;
        let pipeline =
            events.iter().find(|e| !e.pipeline.is_empty()).map(|e| e.pipeline.to_string()).ok_or_else(|| {
                OpsError::NotFound(format!("no events for job {old} in namespace {}", self.namespace()))
            })?;
        let store = ArtifactStore::open(self.artifacts()).map_err(|e| OpsError::Usage(format!("--artifacts: {e}")))?;
        let keys =
            store.list(&inputs_prefix(&pipeline, old, from)).await.map_err(|e| OpsError::Store(e.to_string()))?;
        if keys.is_empty() {
            let ran: std::collections::BTreeSet<&str> = events.iter().map(|e| &*e.step).collect();
            return Err(OpsError::Usage(format!(
                "job {old} recorded no input for step {from} in {} (its steps: {}; the first step has none: submit its spec again)",
                self.artifacts(),
                ran.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok((pipeline, keys, store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_as_step_param_value_in_one_syntax() {
        let c =
            parse_changes(&["register.model=iris-b".into(), "train.depth=3".into(), "t.grid=[1, 2]".into()]).unwrap();
        assert_eq!((c[0].step.as_str(), c[0].param.as_str()), ("register", "model"));
        assert_eq!(c[0].value, rmpv::Value::from("iris-b"));
        assert_eq!(c[1].value, rmpv::Value::from(3));
        assert_eq!(c[2].value, rmpv::Value::Array(vec![1.into(), 2.into()]));
        for bad in ["depth=3", "train.depth", ".depth=3", "train.=3"] {
            let e = parse_changes(&[bad.into()]).unwrap_err();
            assert!(e.is_usage() && e.to_string().contains("STEP.PARAM=VALUE"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_change_must_reach_a_step_on_the_slip() {
        let mut slip = vec![Hop::new("evaluate"), Hop::new("register")];
        let change = ParamChange { step: "train".into(), param: "depth".into(), value: 3.into() };
        let e = apply(&mut slip, &change, "evaluate", &Registry::default()).unwrap_err();
        assert!(e.to_string().contains("does not come at or after evaluate"), "{e}");
        let change = ParamChange { step: "register".into(), param: "model".into(), value: "b".into() };
        apply(&mut slip, &change, "evaluate", &Registry::default()).unwrap();
        assert_eq!(slip[1].params, rmpv::Value::Map(vec![("model".into(), "b".into())]));
    }
}
