//! Warren's own models as ONNX graphs, with their fitted preprocessing as part of the graph, so
//! a model trained by Warren serves in onnxruntime, Triton or a browser.
//!
//! The graph takes one input per raw column, shaped `[N, 1]`: `double` for numeric columns
//! (NaN is a gap), `string` for categorical and boolean ones (the empty string is a gap). It
//! computes what Warren's predict computes:
//!
//! - numeric: a gap becomes the fill value, then `(x - center) / scale`, in doubles;
//! - categorical: the category's number (a gap is the fill category), one-hot or ordinal; an
//!   unknown category is all zeros (one-hot) or -1 (ordinal), also where Warren's preprocessing
//!   says `unknown = "error"`, since a graph cannot refuse a row;
//! - boolean: 1 for `true`, `yes`, `t`, `y`, `1` (lower, upper or title case), else 0;
//! - then the model: linear models as MatMul + Add in doubles (logistic regression's
//!   probabilities by Softmax), trees, forests and boosting as ONNX-ML tree ensembles on the
//!   features as `float`, exactly as Warren's trees read them (thresholds rounded down to
//!   `float`, so `x <= t` holds for the same `float` values).
//!
//! Outputs: `label` (string, `[N]`) and `probabilities` (`[N, classes]`) for classifiers;
//! `variable` (`[N, 1]`) for regressors.

use prost::Message;
use tract_onnx::pb::{self, attribute_proto::AttributeType, tensor_proto::DataType};
use warren_schemas::{ColumnKind, Encoding, Transform};

use super::lower::{Builder, int_attr, ints_attr, strings_attr, text_attr};
use crate::{
    MlError, Result,
    model::{Fitted, SavedModel},
    tree::{Node, Tree},
};

/// The default domain's opset and ONNX-ML's that exported graphs use.
pub const OPSET: i64 = 17;
/// ONNX-ML opset of exported graphs.
pub const ML_OPSET: i64 = 3;

fn doubles(b: &mut Builder, dims: &[i64], data: Vec<f64>) -> String {
    b.constant(pb::TensorProto {
        dims: dims.to_vec(),
        data_type: DataType::Double as i32,
        double_data: data,
        ..Default::default()
    })
}

fn floats_attr(name: &str, floats: Vec<f32>) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: AttributeType::Floats as i32, floats, ..Default::default() }
}

fn tensor_input(name: &str, elem: DataType, width: i64) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = vec![
        Dimension { value: Some(Value::DimParam("N".into())), ..Default::default() },
        Dimension { value: Some(Value::DimValue(width)), ..Default::default() },
    ];
    value_info(name, elem, dim)
}

pub(super) fn value_info(
    name: &str,
    elem: DataType,
    dim: Vec<pb::tensor_shape_proto::Dimension>,
) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The largest `f32` at most `t`: for every `f32` x, `x <= it` exactly when `x as f64 <= t`.
fn round_down(t: f64) -> f32 {
    let near = t as f32;
    if f64::from(near) > t { near.next_down() } else { near }
}

/// Each text's category number (-1 when it is none of them).
fn category_ids(b: &mut Builder, input: &str, (keys, numbers): (Vec<Vec<u8>>, Vec<i64>)) -> String {
    b.value(
        "CategoryMapper",
        &[input],
        vec![strings_attr("cats_strings", keys), ints_attr("cats_int64s", numbers), int_attr("default_int64", -1)],
    )
}

/// A raw column's features, as doubles `[N, width]`.
fn column(b: &mut Builder, t: &Transform, input: &str) -> Result<String> {
    let text_fill = t.fill.to_string();
    let categories_of = |categories: &[String]| -> (Vec<Vec<u8>>, Vec<i64>) {
        let mut keys: Vec<Vec<u8>> = categories.iter().map(|c| c.as_bytes().to_vec()).collect();
        let mut numbers: Vec<i64> = (0..categories.len() as i64).collect();
        if !categories.iter().any(String::is_empty) {
            // A gap (the empty string) is the fill category.
            keys.push(Vec::new());
            numbers.push(categories.iter().position(|c| *c == text_fill).map_or(-1, |i| i as i64));
        }
        (keys, numbers)
    };
    Ok(match &t.encode {
        Encoding::Numeric { center, scale } => {
            let fill = t.fill.as_f64().unwrap_or(0.0);
            let fill = doubles(b, &[1], vec![fill]);
            let same = b.value("Equal", &[input, input], vec![]);
            let gap = b.value("Not", &[&same], vec![]);
            let filled = b.value("Where", &[&gap, &fill, input], vec![]);
            let center = doubles(b, &[1], vec![*center]);
            let scale = doubles(b, &[1], vec![*scale]);
            let centred = b.value("Sub", &[&filled, &center], vec![]);
            b.value("Div", &[&centred, &scale], vec![])
        }
        Encoding::OneHot { categories, .. } => {
            let ids = category_ids(b, input, categories_of(categories));
            let n = categories.len() as i64;
            let all = b.ints(&[n], (0..n).collect());
            // [N, 1] == [n] broadcasts to [N, n].
            let hit = b.value("Equal", &[&ids, &all], vec![]);
            b.value("Cast", &[&hit], vec![int_attr("to", DataType::Double as i64)])
        }
        Encoding::Ordinal { categories, .. } => {
            let ids = category_ids(b, input, categories_of(categories));
            b.value("Cast", &[&ids], vec![int_attr("to", DataType::Double as i64)])
        }
        Encoding::Boolean => {
            let truthy = ["true", "yes", "t", "y", "1"];
            let keys: Vec<Vec<u8>> = truthy
                .iter()
                .flat_map(|w| {
                    let title = format!("{}{}", w[..1].to_uppercase(), &w[1..]);
                    [w.to_string(), w.to_uppercase(), title]
                })
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(String::into_bytes)
                .collect();
            let ones = vec![1; keys.len()];
            let ids = b.value(
                "CategoryMapper",
                &[input],
                vec![strings_attr("cats_strings", keys), ints_attr("cats_int64s", ones), int_attr("default_int64", 0)],
            );
            b.value("Cast", &[&ids], vec![int_attr("to", DataType::Double as i64)])
        }
    })
}

/// A leaf's `(target or class id, weight)` pairs, from its tree's number and its value.
type LeafWeights<'a> = &'a dyn Fn(usize, &[f64]) -> Vec<(i64, f32)>;

/// Leaves and splits of `trees` as ONNX-ML ensemble attributes (`prefix`: `class` or `target`).
fn ensemble(trees: &[&Tree], prefix: &str, leaf: LeafWeights<'_>) -> Vec<pb::AttributeProto> {
    let (mut tree_ids, mut node_ids, mut features, mut modes, mut values, mut trues, mut falses) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut l_tree, mut l_node, mut l_id, mut l_weight) = (vec![], vec![], vec![], vec![]);
    for (k, t) in trees.iter().enumerate() {
        for (i, n) in t.nodes.iter().enumerate() {
            tree_ids.push(k as i64);
            node_ids.push(i as i64);
            match n {
                Node::Split { feature, threshold, left, right } => {
                    features.push(*feature as i64);
                    modes.push(b"BRANCH_LEQ".to_vec());
                    values.push(round_down(*threshold));
                    trues.push(*left as i64);
                    falses.push(*right as i64);
                }
                Node::Leaf { value } => {
                    features.push(0);
                    modes.push(b"LEAF".to_vec());
                    values.push(0.0);
                    trues.push(0);
                    falses.push(0);
                    for (id, w) in leaf(k, value) {
                        l_tree.push(k as i64);
                        l_node.push(i as i64);
                        l_id.push(id);
                        l_weight.push(w);
                    }
                }
            }
        }
    }
    vec![
        ints_attr("nodes_treeids", tree_ids),
        ints_attr("nodes_nodeids", node_ids),
        ints_attr("nodes_featureids", features),
        strings_attr("nodes_modes", modes),
        floats_attr("nodes_values", values),
        ints_attr("nodes_truenodeids", trues),
        ints_attr("nodes_falsenodeids", falses),
        ints_attr(&format!("{prefix}_treeids"), l_tree),
        ints_attr(&format!("{prefix}_nodeids"), l_node),
        ints_attr(&format!("{prefix}_ids"), l_id),
        floats_attr(&format!("{prefix}_weights"), l_weight),
    ]
}

/// The graph of `model`, as ONNX bytes.
pub fn export(model: &SavedModel) -> Result<Vec<u8>> {
    let mut b = Builder::new(OPSET);
    // Inputs and their features, in the model's feature order.
    let transforms: Vec<Transform> = match (&model.preprocessor, &model.scaler) {
        (Some(p), _) => p.inputs.clone(),
        (None, scaler) => model
            .feature_names
            .iter()
            .enumerate()
            .map(|(j, name)| Transform {
                column: name.clone(),
                kind: ColumnKind::Numeric,
                fill: f64::NAN.into(),
                impute: "none".into(),
                encode: Encoding::Numeric {
                    center: scaler.as_ref().map_or(0.0, |s| s.means[j]),
                    scale: scaler.as_ref().map_or(1.0, |s| s.stds[j]),
                },
            })
            .collect(),
    };
    let mut inputs = Vec::new();
    let mut parts = Vec::new();
    for t in &transforms {
        let elem = if matches!(t.encode, Encoding::Numeric { .. }) { DataType::Double } else { DataType::String };
        inputs.push(tensor_input(&t.column, elem, 1));
        parts.push(column(&mut b, t, &t.column)?);
    }
    let part_refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let x = b.value("Concat", &part_refs, vec![int_attr("axis", 1)]);
    let n_features = model.feature_names.len() as i64;
    let classes = &model.classes;
    let classifier = !classes.is_empty()
        && match &model.fitted {
            Fitted::Logistic(_) => true,
            Fitted::Tree(t) => t.classes > 0,
            Fitted::Forest(f) => f.classes > 0,
            Fitted::Boosted(g) => g.classes > 0,
            Fitted::Linear(_) | Fitted::ElasticNet(_) => false,
        };
    let (label, scores, value) = ("label", "probabilities", "variable");
    match &model.fitted {
        Fitted::Logistic(m) => {
            let params = m.params();
            let (f, c) = (params.nrows() as i64, params.ncols() as i64);
            if f != n_features {
                return Err(MlError::invalid(format!("the model has {f} weights per class for {n_features} features")));
            }
            let w = doubles(&mut b, &[f, c], params.iter().copied().collect());
            let bias = doubles(&mut b, &[c], m.intercept().to_vec());
            let product = b.value("MatMul", &[&x, &w], vec![]);
            let logits = b.value("Add", &[&product, &bias], vec![]);
            b.node("Softmax", &[&logits], &[scores], vec![int_attr("axis", 1)]);
            let best = b.value("ArgMax", &[&logits], vec![int_attr("axis", 1), int_attr("keepdims", 0)]);
            // linfa's columns are its sorted class indices; the labels are Warren's classes.
            let labels: Vec<String> =
                m.classes().iter().map(|&k| classes.get(k).cloned().unwrap_or_else(|| k.to_string())).collect();
            // Named `classes`, as skl2onnx names it: importers read the class labels there.
            b.initializers.push(pb::TensorProto {
                dims: vec![labels.len() as i64],
                data_type: DataType::String as i32,
                string_data: labels.iter().map(|s| s.as_bytes().to_vec()).collect(),
                name: "classes".into(),
                ..Default::default()
            });
            b.node("Gather", &["classes", &best], &[label], vec![int_attr("axis", 0)]);
        }
        Fitted::Linear(_) | Fitted::ElasticNet(_) => {
            let (weights, intercept) = match &model.fitted {
                Fitted::Linear(m) => (m.params().to_vec(), m.intercept()),
                Fitted::ElasticNet(m) => (m.hyperplane().to_vec(), m.intercept()),
                _ => unreachable!("matched above"),
            };
            let w = doubles(&mut b, &[weights.len() as i64, 1], weights);
            let bias = doubles(&mut b, &[1], vec![intercept]);
            let product = b.value("MatMul", &[&x, &w], vec![]);
            b.node("Add", &[&product, &bias], &[value], vec![]);
        }
        Fitted::Tree(_) | Fitted::Forest(_) | Fitted::Boosted(_) => {
            let xf = b.value("Cast", &[&x], vec![int_attr("to", DataType::Float as i64)]);
            let mut attrs;
            let op;
            match &model.fitted {
                Fitted::Tree(t) if classifier => {
                    attrs = ensemble(&[t], "class", &|_, v| shares(v, 1.0));
                    op = "TreeEnsembleClassifier";
                }
                Fitted::Forest(f) if classifier => {
                    let n = f.trees.len() as f64;
                    let trees: Vec<&Tree> = f.trees.iter().collect();
                    attrs = ensemble(&trees, "class", &|_, v| shares(v, n));
                    op = "TreeEnsembleClassifier";
                }
                Fitted::Boosted(g) if classifier => {
                    let per_stage = g.stages.first().map_or(1, Vec::len).max(1);
                    let trees: Vec<&Tree> = g.stages.iter().flatten().collect();
                    let rate = g.learning_rate;
                    attrs = ensemble(&trees, "class", &|k, v| {
                        vec![((k % per_stage) as i64, (rate * v.first().copied().unwrap_or(0.0)) as f32)]
                    });
                    let binary = per_stage == 1;
                    attrs.push(floats_attr("base_values", g.init.iter().map(|&v| v as f32).collect()));
                    attrs.push(text_attr("post_transform", if binary { "LOGISTIC" } else { "SOFTMAX" }));
                    op = "TreeEnsembleClassifier";
                }
                Fitted::Tree(t) => {
                    attrs = ensemble(&[t], "target", &|_, v| vec![(0, v.first().copied().unwrap_or(0.0) as f32)]);
                    op = "TreeEnsembleRegressor";
                }
                Fitted::Forest(f) => {
                    let n = f.trees.len() as f64;
                    let trees: Vec<&Tree> = f.trees.iter().collect();
                    attrs =
                        ensemble(&trees, "target", &|_, v| vec![(0, (v.first().copied().unwrap_or(0.0) / n) as f32)]);
                    op = "TreeEnsembleRegressor";
                }
                Fitted::Boosted(g) => {
                    let trees: Vec<&Tree> = g.stages.iter().flatten().collect();
                    let rate = g.learning_rate;
                    attrs = ensemble(&trees, "target", &|_, v| {
                        vec![(0, (rate * v.first().copied().unwrap_or(0.0)) as f32)]
                    });
                    attrs.push(floats_attr("base_values", g.init.iter().map(|&v| v as f32).collect()));
                    op = "TreeEnsembleRegressor";
                }
                _ => unreachable!("matched above"),
            }
            if op == "TreeEnsembleClassifier" {
                attrs
                    .push(strings_attr("classlabels_strings", classes.iter().map(|c| c.as_bytes().to_vec()).collect()));
                b.node(op, &[&xf], &[label, scores], attrs);
            } else {
                attrs.push(int_attr("n_targets", 1));
                attrs.push(text_attr("aggregate_function", "SUM"));
                b.node(op, &[&xf], &[value], attrs);
            }
        }
    }
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let n = || Dimension { value: Some(Value::DimParam("N".into())), ..Default::default() };
    let width = |w: usize| Dimension { value: Some(Value::DimValue(w as i64)), ..Default::default() };
    let tree_model = matches!(model.fitted, Fitted::Tree(_) | Fitted::Forest(_) | Fitted::Boosted(_));
    let float_out = if tree_model { DataType::Float } else { DataType::Double };
    let outputs = if classifier {
        vec![
            value_info(label, DataType::String, vec![n()]),
            value_info(scores, float_out, vec![n(), width(classes.len())]),
        ]
    } else {
        vec![value_info(value, float_out, vec![n(), width(1)])]
    };
    let graph = pb::GraphProto {
        node: b.nodes,
        name: format!("warren_{:?}", model.candidate.algorithm).to_lowercase(),
        initializer: b.initializers,
        input: inputs,
        output: outputs,
        doc_string: format!(
            "{:?} trained by Warren; features: {}",
            model.candidate.algorithm,
            model.feature_names.join(", ")
        ),
        ..Default::default()
    };
    let proto = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![
            pb::OperatorSetIdProto { domain: String::new(), version: OPSET },
            pb::OperatorSetIdProto { domain: "ai.onnx.ml".into(), version: ML_OPSET },
        ],
        producer_name: "warren".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        ..Default::default()
    };
    Ok(proto.encode_to_vec())
}

/// A classification leaf's class shares, divided by `n` (the trees of a forest), as (class,
/// weight) pairs. Two classes take the binary layout runtimes read as `[1 - s, s]`: one weight,
/// the second class's share, under class id 0 (as skl2onnx writes it).
fn shares(v: &[f64], n: f64) -> Vec<(i64, f32)> {
    if v.len() == 2 {
        return vec![(0, (v[1] / n) as f32)];
    }
    v.iter().enumerate().map(|(k, s)| (k as i64, (s / n) as f32)).collect()
}

/// A Warren model with raw held-out rows: what the export tests and the ONNX bench run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// `data/algorithm`.
    pub name: String,
    /// The model, its preprocessing included.
    pub model: SavedModel,
    /// The held-out rows as the raw table has them (every column).
    pub test: crate::table::Table,
}

/// Every algorithm on the penguins, trained as the train step would: species (three classes),
/// sex (two: boosting's binary layout), body mass (regression; ordinary least squares on the
/// diabetes data); `trees` trees per forest.
pub fn samples(trees: usize) -> Result<Vec<Sample>> {
    use warren_schemas::{Algorithm as A, Candidate, Hyper, Task, params::FeaturesParams};
    let penguins = crate::parity::data("penguins")?;
    let body_mass = crate::parity::data("penguins_body_mass")?;
    // Ordinary least squares on one-hot columns and an intercept is singular (its weights run to
    // 1e17 and its answers depend on the order of a sum): fitted on numbers only.
    let diabetes = crate::parity::data("diabetes")?;
    let sex =
        crate::parity::Data { name: "penguins_sex", csv: Some(("penguins.csv", "sex")), task: Task::Classification };
    let n = trees as f64;
    type Run<'a> = (&'a crate::parity::Data, A, Vec<(&'a str, f64)>);
    let runs: Vec<Run<'_>> = vec![
        (penguins, A::Logistic, vec![("alpha", 1.0)]),
        (penguins, A::DecisionTree, vec![("max_depth", 5.0)]),
        (penguins, A::RandomForest, vec![("n_estimators", n)]),
        (penguins, A::GradientBoosting, vec![("n_estimators", 20.0)]),
        (&sex, A::Logistic, vec![("alpha", 1.0)]),
        (&sex, A::RandomForest, vec![("n_estimators", n)]),
        (&sex, A::GradientBoosting, vec![("n_estimators", 20.0)]),
        (diabetes, A::Linear, vec![]),
        (body_mass, A::ElasticNet, vec![("penalty", 0.1), ("l1_ratio", 0.5)]),
        (body_mass, A::DecisionTree, vec![("max_depth", 5.0)]),
        (body_mass, A::RandomForest, vec![("n_estimators", n)]),
        (body_mass, A::GradientBoosting, vec![("n_estimators", 20.0)]),
    ];
    let mut out = Vec::new();
    for (data, algorithm, hyper) in runs {
        let loaded = crate::parity::load(data)?;
        let p = FeaturesParams { seed: 3, ..FeaturesParams::default() };
        let s = crate::features::prepare(&loaded.table, &loaded.columns, &loaded.target, loaded.task, &p)?;
        let candidate = Candidate {
            algorithm,
            hyperparams: hyper.iter().map(|(k, v)| ((*k).to_owned(), Hyper::Number(*v))).collect(),
        };
        let train = crate::model::xy(&s.train, &s.classes)?;
        let fitted = crate::model::fit(&candidate, &train, loaded.task, &crate::Stop::default())?;
        let model = SavedModel {
            candidate,
            feature_names: s.feature_names.clone(),
            scaler: None,
            classes: s.classes.clone(),
            fitted,
            preprocessor: Some(s.preprocessor.clone()),
        };
        let name = format!(
            "{}/{}",
            data.name,
            serde_json::to_value(algorithm).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        );
        out.push(Sample { name, model, test: loaded.table.take(&s.test_rows) });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::Predicted,
        onnx::{ImportOptions, OnnxModel},
    };

    #[test]
    fn thresholds_round_down_so_float_inputs_split_as_warren_splits_them() {
        for t in [0.1, 2.5, -3.3, 1e-8, 123456.789] {
            let r = round_down(t);
            assert!(f64::from(r) <= t && f64::from(r.next_up()) > t, "{t}: {r}");
        }
    }

    /// Every algorithm exported, read back by Warren's own ONNX runtime (tract): the same
    /// classes, and values within 1e-5 (relative: tree ensembles answer in float).
    #[test]
    fn every_algorithm_exported_predicts_as_warren_does() {
        for s in samples(10).unwrap() {
            let bytes = export(&s.model).unwrap();
            let onnx =
                OnnxModel::import(&bytes, &ImportOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            let (want, refused) = s.model.predict_table(&s.test).unwrap();
            assert!(refused.is_empty(), "{}: {refused:?}", s.name);
            let (got, refused) = onnx.predict_table(&s.test).unwrap();
            assert!(refused.is_empty(), "{}: {refused:?}", s.name);
            match (want, got.predicted) {
                (Predicted::Classes(w), Predicted::Classes(g)) => {
                    let w: Vec<&String> = w.iter().map(|&i| &s.model.classes[i]).collect();
                    let g: Vec<&String> = g.iter().map(|&i| &onnx.classes[i]).collect();
                    assert_eq!(w, g, "{}", s.name);
                }
                (Predicted::Values(w), Predicted::Values(g)) => {
                    for (a, b) in w.iter().zip(&g) {
                        assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{}: {a} vs {b}", s.name);
                    }
                }
                other => panic!("{}: {other:?}", s.name),
            }
        }
    }
}
