//! ONNX-ML operators that tract does not implement, rewritten into ones it does before the graph
//! is parsed: `Imputer` (Equal + Where), `OneHotEncoder` (CategoryMapper or Cast, then
//! Equal against the category numbers), `Scaler` (Sub, Mul), `TreeEnsembleRegressor` (tract's
//! tree ensemble as a classifier whose "classes" are the targets). Each rewrite computes what the
//! ONNX-ML specification says the operator computes.

use tract_onnx::pb::{self, attribute_proto::AttributeType, tensor_proto::DataType};

/// The operators this module rewrites.
pub const LOWERED: &[&str] = &["Imputer", "LabelEncoder", "OneHotEncoder", "Scaler", "TreeEnsembleRegressor"];

/// Operators of the `ai.onnx.ml` domain that Warren writes.
const ML_OPS: &[&str] = &["CategoryMapper", "TreeEnsembleClassifier", "TreeEnsembleRegressor"];

/// Builds nodes (replacements, or a whole exported graph), with fresh names for their
/// intermediate values.
pub(super) struct Builder {
    pub(super) nodes: Vec<pb::NodeProto>,
    pub(super) initializers: Vec<pb::TensorProto>,
    next: usize,
    /// The default domain's opset (Unsqueeze takes its axes as an input from 13 on).
    opset: i64,
}

impl Builder {
    pub(super) fn new(opset: i64) -> Builder {
        Builder { nodes: Vec::new(), initializers: Vec::new(), next: 0, opset }
    }

    pub(super) fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("warren_lowered_{hint}_{}", self.next)
    }

    pub(super) fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<pb::AttributeProto>) {
        let name = self.fresh(op);
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: outputs.iter().map(|s| (*s).to_owned()).collect(),
            name,
            op_type: op.to_owned(),
            domain: if ML_OPS.contains(&op) { "ai.onnx.ml".into() } else { "".into() },
            attribute,
            ..Default::default()
        });
    }

    /// `op(inputs)` into a fresh value, whose name it returns.
    pub(super) fn value(&mut self, op: &str, inputs: &[&str], attribute: Vec<pb::AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node(op, inputs, &[&out], attribute);
        out
    }

    pub(super) fn constant(&mut self, mut t: pb::TensorProto) -> String {
        t.name = self.fresh("const");
        let name = t.name.clone();
        self.initializers.push(t);
        name
    }

    pub(super) fn floats(&mut self, dims: &[i64], data: Vec<f32>) -> String {
        self.constant(pb::TensorProto {
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            float_data: data,
            ..Default::default()
        })
    }

    pub(super) fn ints(&mut self, dims: &[i64], data: Vec<i64>) -> String {
        self.constant(pb::TensorProto {
            dims: dims.to_vec(),
            data_type: DataType::Int64 as i32,
            int64_data: data,
            ..Default::default()
        })
    }

    /// `x` with a new last axis of length 1.
    pub(super) fn unsqueeze_last(&mut self, x: &str) -> String {
        if self.opset >= 13 {
            let axes = self.ints(&[1], vec![-1]);
            self.value("Unsqueeze", &[x, &axes], vec![])
        } else {
            self.value("Unsqueeze", &[x], vec![ints_attr("axes", vec![-1])])
        }
    }
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn floats_of(node: &pb::NodeProto, name: &str) -> Vec<f32> {
    attr(node, name).map(|a| a.floats.clone()).unwrap_or_default()
}

fn ints_of(node: &pb::NodeProto, name: &str) -> Vec<i64> {
    attr(node, name).map(|a| a.ints.clone()).unwrap_or_default()
}

fn text_of(node: &pb::NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

pub(super) fn ints_attr(name: &str, ints: Vec<i64>) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints, ..Default::default() }
}

pub(super) fn int_attr(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i, ..Default::default() }
}

pub(super) fn strings_attr(name: &str, strings: Vec<Vec<u8>>) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: AttributeType::Strings as i32, strings, ..Default::default() }
}

pub(super) fn text_attr(name: &str, s: &str) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: AttributeType::String as i32, s: s.into(), ..Default::default() }
}

fn one<'a>(node: &'a pb::NodeProto, what: &str) -> Result<(&'a str, &'a str), String> {
    match (node.input.first(), node.output.first()) {
        (Some(i), Some(o)) => Ok((i, o)),
        _ => Err(format!("{} `{}` has no {what}", node.op_type, node.name)),
    }
}

/// Rewrites the lowered operators of `graph` in place; `opset` is the default domain's.
pub fn lower(graph: &mut pb::GraphProto, opset: i64) -> Result<(), String> {
    let mut b = Builder::new(opset);
    for node in std::mem::take(&mut graph.node) {
        match node.op_type.as_str() {
            "Imputer" => imputer(&mut b, &node)?,
            "OneHotEncoder" => one_hot(&mut b, &node)?,
            "Scaler" => scaler(&mut b, &node)?,
            "LabelEncoder" => label_encoder(&mut b, &node)?,
            "TreeEnsembleRegressor" => tree_regressor(&mut b, node)?,
            "TreeEnsembleClassifier" | "LinearClassifier" => classifier(&mut b, node)?,
            "Sigmoid" => sigmoid(&mut b, &node)?,
            _ => b.nodes.push(node),
        }
    }
    // Then every tree ensemble, one tree per node (see `split_ensemble`).
    let mut split = Builder::new(opset);
    split.next = b.next;
    for node in std::mem::take(&mut b.nodes) {
        match node.op_type.as_str() {
            "TreeEnsembleClassifier" => split_ensemble(&mut split, node)?,
            _ => split.nodes.push(node),
        }
    }
    graph.node = split.nodes;
    graph.initializer.extend(b.initializers);
    graph.initializer.extend(split.initializers);
    Ok(())
}

/// An ensemble of many trees as one ensemble node per tree, whose scores are summed.
///
/// tract finds a leaf's weights by skipping through every leaf of the ensemble before it, so one
/// row costs (trees × all leaves) steps: a 100-tree forest answered 555 rows a second. Per tree,
/// a row costs (trees × a tree's leaves). Only ensembles whose scores are plain sums are split
/// (no base values, no post-transform: forests and single trees; boosting keeps its one node).
fn split_ensemble(b: &mut Builder, node: pb::NodeProto) -> Result<(), String> {
    let trees: Vec<i64> = {
        let mut t = ints_of(&node, "nodes_treeids");
        t.dedup();
        t
    };
    let plain = text_of(&node, "post_transform").is_none_or(|p| p == "NONE")
        && floats_of(&node, "base_values").iter().all(|&v| v == 0.0);
    let labels = ints_of(&node, "classlabels_int64s");
    if trees.len() < 2 || !plain || labels.len() < 2 || node.output.len() < 2 {
        b.nodes.push(node);
        return Ok(());
    }
    let node_trees = ints_of(&node, "nodes_treeids");
    let leaf_trees = ints_of(&node, "class_treeids");
    // scikit-learn's binary layout: one weight per leaf, the second class's, read as [1 - s, s].
    let binary = labels.len() == 2 && ints_of(&node, "class_ids").iter().all(|&c| c == 0);
    let mut parts = Vec::with_capacity(trees.len());
    for &t in &trees {
        let mut attribute = Vec::new();
        for a in &node.attribute {
            let of = if a.name.starts_with("nodes_") {
                &node_trees
            } else if a.name.starts_with("class_") {
                &leaf_trees
            } else {
                attribute.push(a.clone());
                continue;
            };
            let keep = |i: usize| of.get(i) == Some(&t);
            let mut a = a.clone();
            a.ints = a.ints.iter().enumerate().filter(|(i, _)| keep(*i)).map(|(_, v)| *v).collect();
            a.floats = a.floats.iter().enumerate().filter(|(i, _)| keep(*i)).map(|(_, v)| *v).collect();
            a.strings = a.strings.iter().enumerate().filter(|(i, _)| keep(*i)).map(|(_, v)| v.clone()).collect();
            if a.name == "nodes_treeids" || a.name == "class_treeids" {
                a.ints.iter_mut().for_each(|v| *v = 0);
            }
            attribute.push(a);
        }
        if binary {
            // A zero weight for the second class on every leaf keeps tract from laying this tree
            // out as binary itself: the sum is [s, 0].
            let at = |name: &str| attribute.iter().position(|a| a.name == name);
            if let (Some(ids), Some(nodes), Some(tree_ids), Some(weights)) =
                (at("class_ids"), at("class_nodeids"), at("class_treeids"), at("class_weights"))
            {
                attribute[ids].ints = attribute[ids].ints.iter().flat_map(|&c| [c, 1]).collect();
                attribute[nodes].ints = attribute[nodes].ints.iter().flat_map(|&n| [n, n]).collect();
                attribute[tree_ids].ints = attribute[tree_ids].ints.iter().flat_map(|&n| [n, n]).collect();
                attribute[weights].floats = attribute[weights].floats.iter().flat_map(|&w| [w, 0.0]).collect();
            }
        }
        let label = b.fresh("tree_label");
        let scores = b.fresh("tree_scores");
        b.node("TreeEnsembleClassifier", &[&node.input[0]], &[&label, &scores], attribute);
        parts.push(scores);
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let (label, scores) = (node.output[0].clone(), node.output[1].clone());
    if binary {
        let total = b.value("Sum", &refs, vec![]);
        let first = b.ints(&[1], vec![0]);
        let s = b.value("Gather", &[&total, &first], vec![int_attr("axis", 1)]);
        let one = b.floats(&[1], vec![1.0]);
        let rest = b.value("Sub", &[&one, &s], vec![]);
        b.node("Concat", &[&rest, &s], &[&scores], vec![int_attr("axis", 1)]);
    } else {
        b.node("Sum", &refs, &[&scores], vec![]);
    }
    let best = b.value("ArgMax", &[&scores], vec![int_attr("axis", 1), int_attr("keepdims", 0)]);
    let n = labels.len() as i64;
    let table = b.ints(&[n], labels);
    b.node("Gather", &[&table, &best], &[&label], vec![int_attr("axis", 0)]);
    Ok(())
}

/// Y = X where X is not the replaced value (NaN by default for floats), else the imputed value
/// of its column.
fn imputer(b: &mut Builder, node: &pb::NodeProto) -> Result<(), String> {
    let (x, y) = one(node, "input or output")?;
    let float_values = floats_of(node, "imputed_value_floats");
    let (imputed, mask) = if !float_values.is_empty() {
        let n = float_values.len() as i64;
        let values = b.floats(&[n], float_values);
        let imputed = b.value("CastLike", &[&values, x], vec![]);
        let replaced = attr(node, "replaced_value_float").map_or(0.0, |a| a.f);
        let mask = if replaced.is_nan() {
            // NaN is the one value not equal to itself (tract's IsNaN takes only f16/f32).
            let same = b.value("Equal", &[x, x], vec![]);
            b.value("Not", &[&same], vec![])
        } else {
            let r = b.floats(&[1], vec![replaced]);
            let r = b.value("CastLike", &[&r, x], vec![]);
            b.value("Equal", &[x, &r], vec![])
        };
        (imputed, mask)
    } else {
        let int_values = ints_of(node, "imputed_value_int64s");
        if int_values.is_empty() {
            return Err(format!("Imputer `{}` has no imputed values", node.name));
        }
        let n = int_values.len() as i64;
        let imputed = b.ints(&[n], int_values);
        let replaced = attr(node, "replaced_value_int64").map_or(0, |a| a.i);
        let r = b.ints(&[1], vec![replaced]);
        let mask = b.value("Equal", &[x, &r], vec![]);
        (imputed, mask)
    };
    b.node("Where", &[&mask, &imputed, x], &[y], vec![]);
    Ok(())
}

/// Y[..., k] = 1.0 where X is category k, else 0.0 (an unknown category gives all zeros, also
/// with `zeros = 0`, where the specification would fail the call).
fn one_hot(b: &mut Builder, node: &pb::NodeProto) -> Result<(), String> {
    let (x, y) = one(node, "input or output")?;
    let strings = attr(node, "cats_strings").map(|a| a.strings.clone()).unwrap_or_default();
    let ids = if !strings.is_empty() {
        let n = strings.len() as i64;
        b.value(
            "CategoryMapper",
            &[x],
            vec![
                strings_attr("cats_strings", strings),
                ints_attr("cats_int64s", (0..n).collect()),
                int_attr("default_int64", -1),
            ],
        )
    } else {
        let cats = ints_of(node, "cats_int64s");
        if cats.is_empty() {
            return Err(format!("OneHotEncoder `{}` has no categories", node.name));
        }
        // Compare category values directly: the ids are the values.
        let as_int = b.value("Cast", &[x], vec![int_attr("to", DataType::Int64 as i64)]);
        let n = cats.len() as i64;
        let cats = b.ints(&[n], cats);
        let expanded = b.unsqueeze_last(&as_int);
        let hit = b.value("Equal", &[&expanded, &cats], vec![]);
        b.node("Cast", &[&hit], &[y], vec![int_attr("to", DataType::Float as i64)]);
        return Ok(());
    };
    let n = attr(node, "cats_strings").map_or(0, |a| a.strings.len()) as i64;
    let numbers = b.ints(&[n], (0..n).collect());
    let expanded = b.unsqueeze_last(&ids);
    let hit = b.value("Equal", &[&expanded, &numbers], vec![]);
    b.node("Cast", &[&hit], &[y], vec![int_attr("to", DataType::Float as i64)]);
    Ok(())
}

/// 1 / (1 + e^-x), in the input's own type (tract's Sigmoid takes only f16/f32, and scikit-learn's
/// binary logistic regression computes it in doubles).
fn sigmoid(b: &mut Builder, node: &pb::NodeProto) -> Result<(), String> {
    let (x, y) = one(node, "input or output")?;
    let one = b.floats(&[1], vec![1.0]);
    let one = b.value("CastLike", &[&one, x], vec![]);
    let minus = b.value("Neg", &[x], vec![]);
    let e = b.value("Exp", &[&minus], vec![]);
    let denominator = b.value("Add", &[&one, &e], vec![]);
    b.node("Div", &[&one, &denominator], &[y], vec![]);
    Ok(())
}

/// A classifier as tract runs it correctly:
/// - text labels become the labels' numbers (tract takes only numeric labels there), looked up
///   in the text afterwards;
/// - a binary tree ensemble whose leaves score only the second class (scikit-learn's) is laid
///   out by tract as `[1 - s, s]`, as the specification says, but its label is taken before
///   that, so the label is computed again from the scores (their argmax, as scikit-learn's
///   `predict` does), and a single base value is given for both classes.
fn classifier(b: &mut Builder, mut node: pb::NodeProto) -> Result<(), String> {
    let numbers_attr = if node.op_type == "LinearClassifier" { "classlabels_ints" } else { "classlabels_int64s" };
    let text = node.attribute.iter().position(|a| a.name == "classlabels_strings").map(|i| node.attribute.remove(i));
    let ints = ints_of(&node, numbers_attr);
    let n = text.as_ref().map_or(ints.len(), |t| t.strings.len());
    let binary =
        node.op_type == "TreeEnsembleClassifier" && n <= 2 && ints_of(&node, "class_ids").iter().all(|&c| c == 0);
    if let Some(base) = node.attribute.iter_mut().find(|a| a.name == "base_values")
        && binary
        && base.floats.len() == 1
        && n == 2
    {
        base.floats.push(0.0);
    }
    if text.is_none() && !binary {
        b.nodes.push(node);
        return Ok(());
    }
    if text.is_some() {
        node.attribute.retain(|a| a.name != numbers_attr);
        node.attribute.push(ints_attr(numbers_attr, (0..n as i64).collect()));
    }
    let Some(label) = node.output.first().cloned() else {
        return Err(format!("{} `{}` has no outputs", node.op_type, node.name));
    };
    let number = b.fresh("label_number");
    node.output[0] = number.clone();
    if node.output.len() < 2 {
        let scores = b.fresh("scores");
        node.output.push(scores);
    }
    let scores = node.output[1].clone();
    b.nodes.push(node);
    let index =
        if binary { b.value("ArgMax", &[&scores], vec![int_attr("axis", 1), int_attr("keepdims", 0)]) } else { number };
    let table = match text {
        Some(t) => b.constant(pb::TensorProto {
            dims: vec![n as i64],
            data_type: DataType::String as i32,
            string_data: t.strings,
            ..Default::default()
        }),
        None => b.ints(&[n as i64], ints),
    };
    b.node("Gather", &[&table, &index], &[&label], vec![int_attr("axis", 0)]);
    Ok(())
}

/// A text-to-number or number-to-text mapping (scikit-learn's OrdinalEncoder and label maps) as
/// a CategoryMapper, which maps both ways with a default.
fn label_encoder(b: &mut Builder, node: &pb::NodeProto) -> Result<(), String> {
    let (x, y) = one(node, "input or output")?;
    let strings = |name: &str| attr(node, name).map(|a| a.strings.clone()).filter(|v| !v.is_empty());
    let ints = |name: &str| attr(node, name).map(|a| a.ints.clone()).filter(|v| !v.is_empty());
    let attribute = match (
        strings("keys_strings"),
        ints("values_int64s"),
        ints("keys_int64s"),
        strings("values_strings"),
    ) {
        (Some(keys), Some(values), _, _) => vec![
            strings_attr("cats_strings", keys),
            ints_attr("cats_int64s", values),
            int_attr("default_int64", attr(node, "default_int64").map_or(-1, |a| a.i)),
        ],
        (_, _, Some(keys), Some(values)) => vec![
            strings_attr("cats_strings", values),
            ints_attr("cats_int64s", keys),
            pb::AttributeProto {
                name: "default_string".into(),
                r#type: AttributeType::String as i32,
                s: attr(node, "default_string").map_or_else(|| b"_Unused".to_vec(), |a| a.s.clone()),
                ..Default::default()
            },
        ],
        _ => {
            return Err(format!(
                "LabelEncoder `{}` maps other than text to integers or integers to text, which Warren's ONNX runtime \
                 does not run",
                node.name
            ));
        }
    };
    b.node("CategoryMapper", &[x], &[y], attribute);
    Ok(())
}

/// Y = (X - offset) * scale, as floats.
fn scaler(b: &mut Builder, node: &pb::NodeProto) -> Result<(), String> {
    let (x, y) = one(node, "input or output")?;
    let (offset, scale) = (floats_of(node, "offset"), floats_of(node, "scale"));
    let xf = b.value("Cast", &[x], vec![int_attr("to", DataType::Float as i64)]);
    let offset = if offset.is_empty() { vec![0.0] } else { offset };
    let scale = if scale.is_empty() { vec![1.0] } else { scale };
    let (no, ns) = (offset.len() as i64, scale.len() as i64);
    let offset = b.floats(&[no], offset);
    let scale = b.floats(&[ns], scale);
    let centred = b.value("Sub", &[&xf, &offset], vec![]);
    b.node("Mul", &[&centred, &scale], &[y], vec![]);
    Ok(())
}

/// A regressor as tract's tree-ensemble classifier: each target is a "class" whose score is the
/// target's value (leaf weights summed, plus the base value). An average is a sum of weights
/// divided by the number of trees.
fn tree_regressor(b: &mut Builder, node: pb::NodeProto) -> Result<(), String> {
    let name = node.name.clone();
    let y = node.output.first().cloned().ok_or_else(|| format!("TreeEnsembleRegressor `{name}` has no output"))?;
    let aggregate = text_of(&node, "aggregate_function").unwrap_or_else(|| "SUM".into());
    let post = text_of(&node, "post_transform").unwrap_or_else(|| "NONE".into());
    if post != "NONE" {
        return Err(format!("TreeEnsembleRegressor `{name}`: post_transform {post} is not supported (only NONE)"));
    }
    let n_targets = attr(&node, "n_targets").map_or(1, |a| a.i).max(1);
    let trees = {
        let mut t = ints_of(&node, "nodes_treeids");
        t.sort_unstable();
        t.dedup();
        t.len().max(1)
    };
    let divide = match aggregate.as_str() {
        "SUM" => 1.0,
        "AVERAGE" => trees as f32,
        other => {
            return Err(format!(
                "TreeEnsembleRegressor `{name}`: aggregate_function {other} is not supported (SUM or AVERAGE)"
            ));
        }
    };
    let mut attribute = Vec::new();
    for a in node.attribute {
        let renamed = match a.name.as_str() {
            "target_ids" => "class_ids",
            "target_nodeids" => "class_nodeids",
            "target_treeids" => "class_treeids",
            "target_weights" => "class_weights",
            "aggregate_function" | "n_targets" | "post_transform" => continue,
            other => other,
        };
        let mut a = a.clone();
        if renamed == "class_weights" {
            a.floats.iter_mut().for_each(|w| *w /= divide);
        }
        a.name = renamed.to_owned();
        attribute.push(a);
    }
    // tract lays out an ensemble of one or two classes whose leaves all score class 0 as a
    // binary classifier ([1 - s, s]); a second class that every leaf scores 0 keeps the sums as
    // they are.
    let classes = if n_targets == 1 {
        let leaf = |name: &str| attribute.iter().position(|a| a.name == name);
        if let (Some(ids), Some(nodes), Some(trees), Some(weights)) =
            (leaf("class_ids"), leaf("class_nodeids"), leaf("class_treeids"), leaf("class_weights"))
        {
            // Each leaf twice, the copy for class 1 with weight 0: tract wants the leaves in
            // tree order.
            let twice = |v: &[i64], copy: &dyn Fn(i64) -> i64| v.iter().flat_map(|&x| [x, copy(x)]).collect::<Vec<_>>();
            attribute[ids].ints = twice(&attribute[ids].ints, &|_| 1);
            attribute[nodes].ints = twice(&attribute[nodes].ints, &|x| x);
            attribute[trees].ints = twice(&attribute[trees].ints, &|x| x);
            attribute[weights].floats = attribute[weights].floats.iter().flat_map(|&w| [w, 0.0]).collect();
        }
        if let Some(base) = attribute.iter_mut().find(|a| a.name == "base_values") {
            base.floats.resize(2, 0.0);
        }
        2
    } else {
        n_targets
    };
    attribute.push(ints_attr("classlabels_int64s", (0..classes).collect()));
    attribute.push(text_attr("post_transform", "NONE"));
    let x = node.input.first().cloned().ok_or_else(|| format!("TreeEnsembleRegressor `{name}` has no input"))?;
    let label = b.fresh("unused_label");
    let scores = if n_targets == 1 { b.fresh("scores") } else { y.clone() };
    b.node("TreeEnsembleClassifier", &[&x], &[&label, &scores], attribute);
    if n_targets == 1 {
        let first = b.ints(&[1], vec![0]);
        b.node("Gather", &[&scores, &first], &[&y], vec![int_attr("axis", 1)]);
    }
    Ok(())
}
