//! ONNX models: graphs exported by scikit-learn (skl2onnx), PyTorch (`torch.onnx`) or any other
//! tool, read and served with tract (pure Rust: nothing downloaded at build or run time).
//!
//! [`OnnxModel::import`] reads a graph and works out its [`OnnxSignature`]: which raw columns each
//! input carries, which output holds labels, class scores or values, and the class labels (from
//! the classifier's own attributes, a `classes` initializer as skl2onnx writes it, or given). It
//! refuses, with one line, a file that is not ONNX, an operator tract cannot run, and outputs
//! that are sequences or maps (skl2onnx's ZipMap: export with `zipmap=False`), then runs the graph
//! once on a made-up row so that a model that imports is a model that answers.
//!
//! ONNX-ML operators tract lacks are rewritten into ones it has first ([`lower`]).

pub mod export;
pub mod lower;

use std::{collections::BTreeSet, sync::Arc};

use prost::Message;
use tract_onnx::{
    pb,
    prelude::{tract_ndarray as nd, *},
};
use warren_schemas::{
    Cell, Task,
    onnx::{OnnxElem, OnnxInput, OnnxSignature},
};

use crate::{
    MlError, Result,
    model::Predicted,
    table::{Table, Values},
};

/// What an import may be told about a graph that it cannot read from it.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Column names for inputs that carry several columns, in order across them.
    pub columns: Option<Vec<String>>,
    /// Class labels in score order (a network that outputs only scores).
    pub classes: Option<Vec<String>>,
}

/// A parsed, optimised graph and how to feed it.
#[derive(Clone)]
pub struct OnnxModel {
    /// How Warren feeds it and reads its answer.
    pub signature: OnnxSignature,
    /// Classification or regression.
    pub task: Task,
    /// Class labels, in score order.
    pub classes: Vec<String>,
    plan: Arc<TypedRunnableModel>,
    outputs: Outputs,
    /// Per input: whether the graph takes it as `[N]` rather than `[N, columns]`.
    rank_one: Vec<bool>,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel").field("signature", &self.signature).field("classes", &self.classes).finish()
    }
}

/// Where the graph's answers are, by output index.
#[derive(Debug, Clone, Copy, Default)]
struct Outputs {
    label: Option<usize>,
    scores: Option<usize>,
    value: Option<usize>,
}

/// Metrics by name, and a classifier's confusion matrix.
pub type Scored = (std::collections::BTreeMap<String, f64>, Option<Vec<Vec<u64>>>);

/// Held-out rows as a step or `warren models import --test` gets them: an Arrow IPC file, or a
/// CSV with a header (read as ingest reads it, `target` named).
pub fn test_rows(bytes: &[u8], target: &str) -> Result<Table> {
    if bytes.starts_with(b"ARROW1") {
        return Table::from_ipc(bytes);
    }
    let params = warren_schemas::params::IngestParams { target: Some(target.into()), ..Default::default() };
    Ok(crate::ingest::csv(bytes, &params)?.table)
}

/// What a graph predicted for some rows.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxPredicted {
    /// Class indices (classification) or values (regression).
    pub predicted: Predicted,
    /// Class scores or probabilities, a row per input row (classifiers that give them).
    pub scores: Vec<Vec<f64>>,
}

fn bad(msg: impl std::fmt::Display) -> MlError {
    MlError::invalid(msg)
}

/// Decodes ONNX bytes.
pub fn decode(bytes: &[u8]) -> Result<pb::ModelProto> {
    let proto = pb::ModelProto::decode(bytes).map_err(|e| bad(format!("not an ONNX model: {e}")))?;
    match &proto.graph {
        Some(g) if !g.node.is_empty() && !g.output.is_empty() => Ok(proto),
        _ => Err(bad("not an ONNX model: it has no graph (no nodes or no outputs)")),
    }
}

fn opset(proto: &pb::ModelProto) -> i64 {
    proto.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map_or(0, |o| o.version)
}

/// The operators tract runs, and those [`lower`] rewrites.
fn supported() -> &'static BTreeSet<String> {
    static OPS: std::sync::OnceLock<BTreeSet<String>> = std::sync::OnceLock::new();
    OPS.get_or_init(|| {
        let mut ops: BTreeSet<String> = tract_onnx::onnx().op_register.0.keys().cloned().collect();
        ops.extend(lower::LOWERED.iter().map(|s| (*s).to_owned()));
        ops
    })
}

fn op_name(node: &pb::NodeProto) -> String {
    match node.domain.as_str() {
        "" | "ai.onnx" => node.op_type.clone(),
        d => format!("{d}:{}", node.op_type),
    }
}

/// Refuses what cannot be served, in one line each.
fn check(proto: &pb::ModelProto) -> Result<Vec<String>> {
    let graph = proto.graph.as_ref().ok_or_else(|| bad("not an ONNX model: no graph"))?;
    let ops: BTreeSet<String> = graph.node.iter().map(op_name).collect();
    let known = supported();
    let missing: Vec<&String> = graph
        .node
        .iter()
        .filter(|n| n.op_type != "ZipMap")
        .filter(|n| !matches!(n.domain.as_str(), "" | "ai.onnx" | "ai.onnx.ml") || !known.contains(&n.op_type))
        .map(|n| ops.get(&op_name(n)).unwrap_or(&n.op_type))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "operator{} {} {} not supported by Warren's ONNX runtime (tract)",
            if missing.len() > 1 { "s" } else { "" },
            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            if missing.len() > 1 { "are" } else { "is" }
        )));
    }
    if graph.node.iter().any(|n| n.op_type == "ZipMap") {
        return Err(bad(
            "its outputs include a sequence of maps (ZipMap): export the classifier with probabilities as a \
             tensor (skl2onnx: options={'zipmap': False})",
        ));
    }
    for o in &graph.output {
        if !matches!(o.r#type.as_ref().and_then(|t| t.value.as_ref()), Some(pb::type_proto::Value::TensorType(_))) {
            return Err(bad(format!(
                "output `{}` is not a tensor (a sequence or a map): Warren serves tensor outputs only; export \
                 labels and probabilities as tensors (skl2onnx: options={{'zipmap': False}})",
                o.name
            )));
        }
    }
    Ok(ops.into_iter().collect())
}

fn elem(code: i32, what: &str) -> Result<OnnxElem> {
    use pb::tensor_proto::DataType as D;
    Ok(match D::try_from(code) {
        Ok(D::Float) => OnnxElem::Float,
        Ok(D::Double) => OnnxElem::Double,
        Ok(D::Int64) => OnnxElem::Int64,
        Ok(D::Int32) => OnnxElem::Int32,
        Ok(D::String) => OnnxElem::String,
        Ok(D::Bool) => OnnxElem::Bool,
        other => {
            return Err(bad(format!(
                "{what} has element type {}: Warren feeds float, double, int64, int32, string and bool inputs",
                other.map_or_else(|_| code.to_string(), |d| d.as_str_name().to_owned())
            )));
        }
    })
}

fn tensor_type(v: &pb::ValueInfoProto) -> Option<&pb::type_proto::Tensor> {
    match v.r#type.as_ref()?.value.as_ref()? {
        pb::type_proto::Value::TensorType(t) => Some(t),
    }
}

fn dims(t: &pb::type_proto::Tensor) -> Vec<Option<i64>> {
    t.shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => Some(v),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The graph's inputs (initializers left out) and the columns they carry.
fn inputs(graph: &pb::GraphProto, options: &ImportOptions) -> Result<Vec<OnnxInput>> {
    let initialized: BTreeSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut out = Vec::new();
    let mut given = options.columns.clone().map(|c| c.into_iter());
    for i in graph.input.iter().filter(|i| !initialized.contains(i.name.as_str())) {
        let what = format!("input `{}`", i.name);
        let t = tensor_type(i).ok_or_else(|| bad(format!("{what} is not a tensor")))?;
        let e = elem(t.elem_type, &what)?;
        let d = dims(t);
        let width = match d.as_slice() {
            [] | [_] => 1,
            [_, Some(w)] => *w as usize,
            [_, None] => {
                return Err(bad(format!(
                    "{what} has no fixed number of columns (shape [N, ?]); export it with a fixed width"
                )));
            }
            more => {
                return Err(bad(format!("{what} has rank {} (Warren feeds rows: [N] or [N, columns])", more.len())));
            }
        };
        let columns = match (&mut given, width) {
            (Some(names), w) if w > 1 || options.columns.as_ref().is_some_and(|c| c.len() != graph.input.len()) => {
                let taken: Vec<String> = names.by_ref().take(w).collect();
                if taken.len() != w {
                    return Err(bad(format!("--columns names too few columns: {what} takes {w}")));
                }
                taken
            }
            (_, 1) => vec![i.name.clone()],
            (_, w) => (0..w).map(|k| format!("{}_{k}", i.name)).collect(),
        };
        out.push(OnnxInput { name: i.name.clone(), elem: e, columns });
    }
    if out.is_empty() {
        return Err(bad("the graph takes no inputs"));
    }
    Ok(out)
}

/// The class labels the graph itself names: a classifier's `classlabels_*` attribute, or a
/// `classes` initializer (skl2onnx's linear models).
fn graph_classes(graph: &pb::GraphProto) -> Option<Vec<String>> {
    for n in graph.node.iter().filter(|n| n.op_type.ends_with("Classifier")) {
        for a in &n.attribute {
            match a.name.as_str() {
                "classlabels_strings" if !a.strings.is_empty() => {
                    return Some(a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect());
                }
                "classlabels_int64s" | "classlabels_ints" if !a.ints.is_empty() => {
                    return Some(a.ints.iter().map(i64::to_string).collect());
                }
                _ => {}
            }
        }
    }
    let t = graph.initializer.iter().find(|t| t.name == "classes")?;
    if !t.string_data.is_empty() {
        return Some(t.string_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect());
    }
    if !t.int64_data.is_empty() {
        return Some(t.int64_data.iter().map(i64::to_string).collect());
    }
    if !t.raw_data.is_empty() && t.data_type == pb::tensor_proto::DataType::Int64 as i32 {
        return Some(
            t.raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(<[u8; 8]>::try_from(c).unwrap_or_default()).to_string())
                .collect(),
        );
    }
    None
}

/// Which output is which: labels are text or integers; scores and values are floats.
fn outputs(graph: &pb::GraphProto, classes: &Option<Vec<String>>) -> Result<(Outputs, Task)> {
    use pb::tensor_proto::DataType as D;
    let mut o = Outputs::default();
    for (i, v) in graph.output.iter().enumerate() {
        let Some(t) = tensor_type(v) else { continue };
        match D::try_from(t.elem_type) {
            Ok(D::String | D::Int64 | D::Int32) if o.label.is_none() => o.label = Some(i),
            Ok(D::Float | D::Double) if o.scores.is_none() => o.scores = Some(i),
            _ => {}
        }
    }
    match (o.label, classes) {
        (Some(_), _) | (None, Some(_)) => Ok((o, Task::Classification)),
        (None, None) => {
            let value = o.scores.take().ok_or_else(|| bad("the graph has no float, integer or text output"))?;
            o.value = Some(value);
            Ok((o, Task::Regression))
        }
    }
}

/// The graph lowered (see [`lower`]) and planned for any number of rows; per input, whether
/// the graph takes it as `[N]` rather than `[N, columns]`.
fn compile(mut proto: pb::ModelProto, inputs: &[OnnxInput]) -> Result<(Arc<TypedRunnableModel>, Vec<bool>)> {
    let op = opset(&proto);
    if let Some(g) = proto.graph.as_mut() {
        lower::lower(g, op).map_err(bad)?;
    }
    let fail = |e: TractError| bad(format!("tract cannot run the graph: {}", one_line(&e)));
    let mut model = tract_onnx::onnx().parse(&proto, None).map_err(fail)?.model;
    let n = model.symbols.sym("N");
    let mut rank_one = Vec::with_capacity(inputs.len());
    for (k, input) in inputs.iter().enumerate() {
        let graph_rank = proto
            .graph
            .as_ref()
            .and_then(|g| g.input.iter().find(|i| i.name == input.name))
            .and_then(tensor_type)
            .map_or(2, |t| dims(t).len().max(1));
        rank_one.push(graph_rank == 1);
        let shape: TVec<TDim> =
            if graph_rank == 1 { tvec![n.to_dim()] } else { tvec![n.to_dim(), input.columns.len().to_dim()] };
        model.set_input_fact(k, TypedFact::dt_shape(datum(input.elem), shape).into()).map_err(fail)?;
    }
    let plan = model.into_optimized().and_then(|m| m.into_runnable()).map_err(fail)?;
    Ok((plan, rank_one))
}

fn one_line(e: &TractError) -> String {
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    chain.join(": ").replace('\n', " ")
}

fn datum(e: OnnxElem) -> DatumType {
    match e {
        OnnxElem::Float => f32::datum_type(),
        OnnxElem::Double => f64::datum_type(),
        OnnxElem::Int64 => i64::datum_type(),
        OnnxElem::Int32 => i32::datum_type(),
        OnnxElem::String => String::datum_type(),
        OnnxElem::Bool => bool::datum_type(),
    }
}

impl OnnxModel {
    /// Reads a graph for import: checks it, works out its signature, and runs it once.
    pub fn import(bytes: &[u8], options: &ImportOptions) -> Result<Self> {
        let proto = decode(bytes)?;
        let operators = check(&proto)?;
        let graph = proto.graph.as_ref().ok_or_else(|| bad("no graph"))?;
        let inputs = inputs(graph, options)?;
        let classes = options.classes.clone().or_else(|| graph_classes(graph));
        let (outs, task) = outputs(graph, &classes)?;
        let name = |i: Option<usize>| i.and_then(|i| graph.output.get(i)).map(|o| o.name.clone());
        let producer = format!("{} {}", proto.producer_name, proto.producer_version).trim().to_owned();
        let signature = OnnxSignature {
            inputs,
            label: name(outs.label),
            scores: name(outs.scores),
            value: name(outs.value),
            producer: if producer.is_empty() { "unknown".into() } else { producer },
            operators,
        };
        if task == Task::Classification && classes.is_none() {
            return Err(bad("cannot tell the class labels from the graph: give them (--classes a,b,c)"));
        }
        let (plan, rank_one) = compile(proto, &signature.inputs)?;
        let classes = classes.unwrap_or_default();
        let model = OnnxModel { signature, task, classes, plan, outputs: outs, rank_one };
        model.try_once()?;
        Ok(model)
    }

    /// Loads a registered graph with the signature recorded at import.
    pub fn load(bytes: &[u8], signature: &OnnxSignature, task: Task, classes: &[String]) -> Result<Self> {
        let proto = decode(bytes)?;
        check(&proto)?;
        let graph = proto.graph.as_ref().ok_or_else(|| bad("no graph"))?;
        let index = |name: &Option<String>| name.as_ref().and_then(|n| graph.output.iter().position(|o| &o.name == n));
        let outputs = Outputs {
            label: index(&signature.label),
            scores: index(&signature.scores),
            value: index(&signature.value),
        };
        let (plan, rank_one) = compile(proto, &signature.inputs)?;
        Ok(OnnxModel { signature: signature.clone(), task, classes: classes.to_vec(), plan, outputs, rank_one })
    }

    /// One made-up row (zeros, empty text) through the graph, checking the answer's shape.
    fn try_once(&self) -> Result<()> {
        let cells: Vec<Option<Cell>> = self
            .signature
            .inputs
            .iter()
            .flat_map(|i| {
                i.columns.iter().map(move |_| match i.elem {
                    OnnxElem::String => Some(Cell::Text(String::new())),
                    OnnxElem::Bool => Some(Cell::Flag(false)),
                    _ => Some(Cell::Number(0.0)),
                })
            })
            .collect();
        let out =
            self.predict_cells(None, &[cells]).map_err(|e| bad(format!("the graph failed on a test row: {e}")))?;
        if self.task == Task::Classification && !out.scores.is_empty() && out.scores[0].len() != self.classes.len() {
            return Err(bad(format!(
                "the graph scores {} classes but names {} ({})",
                out.scores[0].len(),
                self.classes.len(),
                self.classes.join(", ")
            )));
        }
        Ok(())
    }

    /// The raw columns a row gives.
    pub fn columns(&self) -> Vec<String> {
        self.signature.columns()
    }

    /// Predicts on request rows (`columns` names their values; the model's columns in order
    /// when absent); any row that cannot be read refuses the lot.
    pub fn predict_cells(&self, columns: Option<&[String]>, rows: &[Vec<Option<Cell>>]) -> Result<OnnxPredicted> {
        let names: Vec<String> = columns.map_or_else(|| self.columns(), <[String]>::to_vec);
        if let Some((r, row)) = rows.iter().enumerate().find(|(_, row)| row.len() != names.len()) {
            return Err(bad(format!("row {} has {} values, not {}", r + 1, row.len(), names.len())));
        }
        let mut table = Table::default();
        for (j, name) in names.iter().enumerate() {
            let numeric = self.signature.inputs.iter().any(|i| i.elem != OnnxElem::String && i.columns.contains(name));
            let values = if numeric {
                Values::F64(
                    rows.iter()
                        .enumerate()
                        .map(|(r, row)| match &row[j] {
                            None => Ok(None),
                            Some(Cell::Number(x)) => Ok(Some(*x)),
                            Some(Cell::Flag(b)) => Ok(Some(f64::from(u8::from(*b)))),
                            Some(Cell::Text(t)) => t
                                .trim()
                                .parse::<f64>()
                                .map(Some)
                                .map_err(|_| bad(format!("row {}, `{name}`: {t:?} is not a number", r + 1))),
                        })
                        .collect::<Result<_>>()?,
                )
            } else {
                Values::Str(
                    rows.iter()
                        .map(|row| {
                            row[j].as_ref().map(|c| match c {
                                Cell::Text(t) => t.clone(),
                                Cell::Number(x) => x.to_string(),
                                Cell::Flag(b) => b.to_string(),
                            })
                        })
                        .collect(),
                )
            };
            table.names.push(name.clone());
            table.columns.push(values);
        }
        let (out, refused) = self.predict_table(&table)?;
        match refused.first() {
            Some((row, why)) => Err(bad(format!("row {}, {why}", row + 1))),
            None => Ok(out),
        }
    }

    /// Predicts on a table of raw columns: rows that cannot be fed (a gap in an integer column,
    /// text where a number belongs) come back with why (0-based) and are not predicted.
    pub fn predict_table(&self, table: &Table) -> Result<(OnnxPredicted, Vec<(usize, String)>)> {
        let rows = table.rows();
        let mut refused: Vec<(usize, String)> = Vec::new();
        let mut fed: Vec<Feed> = Vec::new();
        for input in &self.signature.inputs {
            let mut feed = Feed::new(input.elem, rows, input.columns.len());
            for name in &input.columns {
                let col = table.column(name).ok_or_else(|| bad(format!("column `{name}` is missing")))?;
                feed.push_column(name, col, &mut refused);
            }
            fed.push(feed);
        }
        refused.sort_by_key(|(r, _)| *r);
        refused.dedup_by_key(|(r, _)| *r);
        let keep: Vec<usize> = (0..rows).filter(|r| refused.binary_search_by_key(r, |(i, _)| *i).is_err()).collect();
        if keep.is_empty() {
            let predicted = if self.task == Task::Classification {
                Predicted::Classes(Vec::new())
            } else {
                Predicted::Values(Vec::new())
            };
            return Ok((OnnxPredicted { predicted, scores: Vec::new() }, refused));
        }
        let tensors: TVec<TValue> = fed
            .into_iter()
            .zip(&self.rank_one)
            .map(|(f, &rank_one)| f.tensor(&keep, rank_one).map(TValue::from))
            .collect::<Result<_>>()?;
        let out = self.plan.run(tensors).map_err(|e| bad(format!("the graph failed: {}", one_line(&e))))?;
        Ok((self.read(&out, keep.len())?, refused))
    }

    /// Metrics on held-out rows that carry the truth in column `target`: accuracy, macro F1 and
    /// the confusion matrix of a classifier (in [`Self::classes`] order), or RMSE, MAE and R².
    pub fn score(&self, table: &Table, target: &str) -> Result<Scored> {
        let truth = table.column(target).ok_or_else(|| bad(format!("the test rows have no `{target}`")))?;
        let (out, refused) = self.predict_table(table)?;
        if let Some((row, why)) = refused.first() {
            return Err(bad(format!("test row {}: {why}", row + 1)));
        }
        Ok(match (out.predicted, truth) {
            (Predicted::Classes(p), truth) => {
                let label = |i: usize| match truth {
                    Values::Str(v) => v[i].clone(),
                    Values::F64(v) => v[i].map(|x| x.to_string()),
                };
                let t = (0..table.rows())
                    .map(|i| {
                        let l = label(i).unwrap_or_default();
                        self.classes.iter().position(|c| *c == l).ok_or_else(|| {
                            bad(format!(
                                "test row {}: `{l}` is not one of the model's classes ({})",
                                i + 1,
                                self.classes.join(", ")
                            ))
                        })
                    })
                    .collect::<Result<Vec<usize>>>()?;
                let (m, c) = crate::metrics::classification(&t, &p, self.classes.len());
                (m, Some(c))
            }
            (Predicted::Values(p), Values::F64(v)) => {
                let t: Vec<f64> = v.iter().map(|x| x.unwrap_or(f64::NAN)).collect();
                (crate::metrics::regression(&t, &p), None)
            }
            (Predicted::Values(_), Values::Str(_)) => {
                return Err(bad(format!("`{target}` is text, and the model predicts numbers")));
            }
        })
    }

    fn read(&self, out: &[TValue], n: usize) -> Result<OnnxPredicted> {
        let get = |i: Option<usize>| i.and_then(|i| out.get(i));
        let floats = |t: &Tensor| -> Result<Vec<f64>> {
            let t = t.cast_to::<f64>().map_err(|e| bad(one_line(&e)))?;
            Ok(t.to_plain_array_view::<f64>().map_err(|e| bad(one_line(&e)))?.iter().copied().collect())
        };
        let scores = match get(self.outputs.scores) {
            Some(t) if self.task == Task::Classification => {
                let flat = floats(t)?;
                let width = flat.len().checked_div(n).unwrap_or(0);
                flat.chunks(width.max(1)).map(<[f64]>::to_vec).collect()
            }
            _ => Vec::new(),
        };
        let predicted = match self.task {
            Task::Regression => {
                let t = get(self.outputs.value).ok_or_else(|| bad("the graph gave no value output"))?;
                let v = floats(t)?;
                if v.len() != n {
                    return Err(bad(format!("the graph gave {} values for {n} rows", v.len())));
                }
                Predicted::Values(v)
            }
            Task::Classification => match get(self.outputs.label) {
                Some(t) => {
                    let labels: Vec<String> = if t.datum_type() == String::datum_type() {
                        t.to_plain_array_view::<String>().map_err(|e| bad(one_line(&e)))?.iter().cloned().collect()
                    } else {
                        let t = t.cast_to::<i64>().map_err(|e| bad(one_line(&e)))?;
                        t.to_plain_array_view::<i64>()
                            .map_err(|e| bad(one_line(&e)))?
                            .iter()
                            .map(i64::to_string)
                            .collect()
                    };
                    let idx = labels
                        .iter()
                        .map(|l| {
                            self.classes
                                .iter()
                                .position(|c| c == l)
                                .ok_or_else(|| bad(format!("the graph predicted `{l}`, not one of its classes")))
                        })
                        .collect::<Result<Vec<usize>>>()?;
                    Predicted::Classes(idx)
                }
                None => Predicted::Classes(
                    scores
                        .iter()
                        .map(|row| {
                            row.iter()
                                .enumerate()
                                .fold((0, f64::NEG_INFINITY), |best, (i, &s)| if s > best.1 { (i, s) } else { best })
                                .0
                        })
                        .collect(),
                ),
            },
        };
        Ok(OnnxPredicted { predicted, scores })
    }
}

/// One input's values, row-major, as they are read from the table.
struct Feed {
    data: Data,
    rows: usize,
    width: usize,
    /// The next column to fill.
    next: usize,
}

enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Str(Vec<String>),
    Bool(Vec<bool>),
}

impl Feed {
    fn new(e: OnnxElem, rows: usize, width: usize) -> Feed {
        let n = rows * width;
        let data = match e {
            OnnxElem::Float => Data::F32(vec![0.0; n]),
            OnnxElem::Double => Data::F64(vec![0.0; n]),
            OnnxElem::Int64 => Data::I64(vec![0; n]),
            OnnxElem::Int32 => Data::I32(vec![0; n]),
            OnnxElem::String => Data::Str(vec![String::new(); n]),
            OnnxElem::Bool => Data::Bool(vec![false; n]),
        };
        Feed { data, rows, width, next: 0 }
    }

    /// Fills the next column of this input from `col`: a gap is NaN for a float input and
    /// empty text for a text one; a row whose value cannot be fed is refused.
    fn push_column(&mut self, name: &str, col: &Values, refused: &mut Vec<(usize, String)>) {
        let j = self.next;
        self.next += 1;
        for r in 0..self.rows.min(col.len()) {
            let at = r * self.width + j;
            if let Data::Str(v) = &mut self.data {
                v[at] = match col {
                    Values::Str(c) => c[r].clone().unwrap_or_default(),
                    Values::F64(c) => c[r].map(|x| x.to_string()).unwrap_or_default(),
                };
                continue;
            }
            let x = match col {
                Values::F64(c) => c[r],
                Values::Str(c) => match c[r].as_deref().map(str::trim) {
                    None | Some("") => None,
                    Some(t) => match t.parse::<f64>() {
                        Ok(x) => Some(x),
                        Err(_) => {
                            refused.push((r, format!("`{name}`: {t:?} is not a number")));
                            continue;
                        }
                    },
                },
            };
            let whole = |x: Option<f64>| match x {
                Some(x) if x.fract() == 0.0 && x.is_finite() => Ok(x),
                Some(x) => Err(format!("`{name}`: {x} is not a whole number")),
                None => Err(format!("`{name}` is missing (the model takes no gaps there)")),
            };
            let result = match &mut self.data {
                Data::F32(v) => {
                    v[at] = x.map_or(f32::NAN, |x| x as f32);
                    Ok(())
                }
                Data::F64(v) => {
                    v[at] = x.unwrap_or(f64::NAN);
                    Ok(())
                }
                Data::I64(v) => whole(x).map(|x| v[at] = x as i64),
                Data::I32(v) => whole(x).map(|x| v[at] = x as i32),
                Data::Bool(v) => match x {
                    Some(x) => {
                        v[at] = x != 0.0;
                        Ok(())
                    }
                    None => Err(format!("`{name}` is missing (the model takes no gaps there)")),
                },
                Data::Str(_) => Ok(()),
            };
            if let Err(why) = result {
                refused.push((r, why));
            }
        }
    }

    fn tensor(self, keep: &[usize], rank_one: bool) -> Result<Tensor> {
        let width = self.width;
        fn pick<T: Clone>(v: &[T], keep: &[usize], width: usize) -> Vec<T> {
            keep.iter().flat_map(|&r| v[r * width..(r + 1) * width].iter().cloned()).collect()
        }
        let shape: Vec<usize> = if rank_one { vec![keep.len()] } else { vec![keep.len(), width] };
        let fail = |e: nd::ShapeError| bad(e.to_string());
        Ok(match self.data {
            Data::F32(v) => nd::ArrayD::from_shape_vec(shape, pick(&v, keep, width)).map_err(fail)?.into_tensor(),
            Data::F64(v) => nd::ArrayD::from_shape_vec(shape, pick(&v, keep, width)).map_err(fail)?.into_tensor(),
            Data::I64(v) => nd::ArrayD::from_shape_vec(shape, pick(&v, keep, width)).map_err(fail)?.into_tensor(),
            Data::I32(v) => nd::ArrayD::from_shape_vec(shape, pick(&v, keep, width)).map_err(fail)?.into_tensor(),
            Data::Str(v) => nd::ArrayD::from_shape_vec(shape, pick(&v, keep, width)).map_err(fail)?.into_tensor(),
            Data::Bool(v) => nd::ArrayD::from_shape_vec(shape, pick(&v, keep, width)).map_err(fail)?.into_tensor(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::{attribute_proto::AttributeType as A, tensor_proto::DataType as D};

    fn value(name: &str, elem: D, dims: &[i64]) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{Dimension, dimension::Value};
        let dim = dims
            .iter()
            .map(|&d| Dimension {
                value: Some(if d < 0 { Value::DimParam("N".into()) } else { Value::DimValue(d) }),
                ..Default::default()
            })
            .collect();
        export::value_info(name, elem, dim)
    }

    fn floats(name: &str, v: Vec<f32>) -> pb::AttributeProto {
        pb::AttributeProto { name: name.into(), r#type: A::Floats as i32, floats: v, ..Default::default() }
    }

    fn node(op: &str, domain: &str, i: &[&str], o: &[&str], attribute: Vec<pb::AttributeProto>) -> pb::NodeProto {
        pb::NodeProto {
            input: i.iter().map(|s| (*s).into()).collect(),
            output: o.iter().map(|s| (*s).into()).collect(),
            name: format!("{op}_0"),
            op_type: op.into(),
            domain: domain.into(),
            attribute,
            ..Default::default()
        }
    }

    fn model(nodes: Vec<pb::NodeProto>, output: pb::ValueInfoProto) -> Vec<u8> {
        model_with(value("x", D::Float, &[-1, 2]), nodes, output)
    }

    fn model_with(input: pb::ValueInfoProto, nodes: Vec<pb::NodeProto>, output: pb::ValueInfoProto) -> Vec<u8> {
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![
                pb::OperatorSetIdProto { domain: "".into(), version: 17 },
                pb::OperatorSetIdProto { domain: "ai.onnx.ml".into(), version: 3 },
            ],
            producer_name: "warren-test".into(),
            graph: Some(pb::GraphProto {
                node: nodes,
                name: "g".into(),
                input: vec![input],
                output: vec![output],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// Imputer then Scaler then a linear regressor: every lowered step of a numeric pipeline.
    fn regressor() -> Vec<u8> {
        model(
            vec![
                node(
                    "Imputer",
                    "ai.onnx.ml",
                    &["x"],
                    &["filled"],
                    vec![
                        floats("imputed_value_floats", vec![10.0, 20.0]),
                        pb::AttributeProto {
                            name: "replaced_value_float".into(),
                            r#type: A::Float as i32,
                            f: f32::NAN,
                            ..Default::default()
                        },
                    ],
                ),
                node(
                    "Scaler",
                    "ai.onnx.ml",
                    &["filled"],
                    &["scaled"],
                    vec![floats("offset", vec![1.0, 2.0]), floats("scale", vec![0.5, 0.25])],
                ),
                node(
                    "LinearRegressor",
                    "ai.onnx.ml",
                    &["scaled"],
                    &["y"],
                    vec![floats("coefficients", vec![1.0, 10.0]), floats("intercepts", vec![100.0])],
                ),
            ],
            value("y", D::Float, &[-1, 1]),
        )
    }

    #[test]
    fn a_numeric_pipeline_of_onnx_ml_operators_predicts_as_the_specification_says() {
        let m = OnnxModel::import(&regressor(), &ImportOptions::default()).unwrap();
        assert_eq!((m.task, m.columns()), (Task::Regression, vec!["x_0".to_owned(), "x_1".to_owned()]));
        let rows =
            vec![vec![Some(Cell::Number(3.0)), Some(Cell::Number(6.0))], vec![None, Some(Cell::Text("10".into()))]];
        // (3-1)*0.5 + 10*(6-2)*0.25 + 100 = 111; a gap is imputed: (10-1)*0.5 + 10*(10-2)*0.25 + 100 = 124.5
        let out = m.predict_cells(None, &rows).unwrap();
        assert_eq!(out.predicted, Predicted::Values(vec![111.0, 124.5]));
        let named = ImportOptions { columns: Some(vec!["a".into(), "b".into()]), classes: None };
        assert_eq!(OnnxModel::import(&regressor(), &named).unwrap().columns(), ["a", "b"]);
        let err = m.predict_cells(None, &[vec![Some(Cell::Text("tall".into())), None]]).unwrap_err();
        assert!(err.to_string().contains("\"tall\" is not a number"), "{err}");
    }

    #[test]
    fn a_label_encoder_maps_text_to_numbers_with_its_default() {
        let strings = |v: &[&str]| pb::AttributeProto {
            name: "keys_strings".into(),
            r#type: A::Strings as i32,
            strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
            ..Default::default()
        };
        let ints = pb::AttributeProto {
            name: "values_int64s".into(),
            r#type: A::Ints as i32,
            ints: vec![5, 7],
            ..Default::default()
        };
        let to_float =
            pb::AttributeProto { name: "to".into(), r#type: A::Int as i32, i: D::Float as i64, ..Default::default() };
        let bytes = model_with(
            value("colour", D::String, &[-1, 1]),
            vec![
                node("LabelEncoder", "ai.onnx.ml", &["colour"], &["n"], vec![strings(&["red", "blue"]), ints]),
                node("Cast", "", &["n"], &["y"], vec![to_float]),
            ],
            value("y", D::Float, &[-1, 1]),
        );
        let m = OnnxModel::import(&bytes, &ImportOptions::default()).unwrap();
        let rows: Vec<Vec<Option<Cell>>> =
            ["blue", "red", "green"].iter().map(|c| vec![Some(Cell::Text((*c).into()))]).collect();
        assert_eq!(m.predict_cells(None, &rows).unwrap().predicted, Predicted::Values(vec![7.0, 5.0, -1.0]));
    }

    #[test]
    fn what_cannot_be_served_is_refused_with_one_line_naming_why() {
        let err = |bytes: &[u8]| OnnxModel::import(bytes, &ImportOptions::default()).unwrap_err().to_string();
        let e = err(b"this is not a protobuf at all");
        assert!(e.starts_with("not an ONNX model"), "{e}");
        let e = err(&model(vec![node("FancyOp", "com.example", &["x"], &["y"], vec![])], value("y", D::Float, &[-1])));
        assert!(e.contains("com.example:FancyOp") && e.contains("not supported"), "{e}");
        let zipmap = node("ZipMap", "ai.onnx.ml", &["x"], &["y"], vec![]);
        assert!(err(&model(vec![zipmap], value("y", D::Float, &[-1]))).contains("zipmap"));
        let mut seq = value("y", D::Float, &[-1]);
        seq.r#type = Some(pb::TypeProto::default());
        let e = err(&model(vec![node("Identity", "", &["x"], &["y"], vec![])], seq));
        assert!(e.contains("output `y` is not a tensor"), "{e}");
        assert!(!e.contains('\n'));
    }
}
