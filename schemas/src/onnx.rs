//! How Warren feeds an ONNX model and reads its answer: recorded in the model registry at import
//! (`warren models import`, or a step that registers an ONNX model).

use serde::{Deserialize, Serialize};

/// How a registered model is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelFormat {
    /// Warren's own (MessagePack of a model its train step fitted, with its preprocessing).
    #[default]
    Warren,
    /// An ONNX graph (from scikit-learn through skl2onnx, PyTorch, or `warren models export`).
    Onnx,
}

impl ModelFormat {
    /// Whether it is Warren's own format (the default, left out of payloads).
    pub fn is_warren(&self) -> bool {
        *self == ModelFormat::Warren
    }
}

impl std::fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelFormat::Warren => "warren",
            ModelFormat::Onnx => "onnx",
        })
    }
}

/// The element type of an ONNX graph input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnnxElem {
    /// 32-bit float.
    Float,
    /// 64-bit float.
    Double,
    /// 64-bit integer.
    Int64,
    /// 32-bit integer.
    Int32,
    /// UTF-8 text.
    String,
    /// true or false.
    Bool,
}

impl OnnxElem {
    /// The column kind a person reads: `numeric`, `categorical` or `boolean`.
    pub fn kind(self) -> &'static str {
        match self {
            OnnxElem::Float | OnnxElem::Double | OnnxElem::Int64 | OnnxElem::Int32 => "numeric",
            OnnxElem::String => "categorical",
            OnnxElem::Bool => "boolean",
        }
    }
}

/// One input of an ONNX graph and the raw columns it carries (one per column of its last axis).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OnnxInput {
    /// The graph input's name.
    pub name: String,
    /// Its element type.
    pub elem: OnnxElem,
    /// The columns it carries, in order: `[name]` for an input of one column.
    pub columns: Vec<String>,
}

/// How Warren feeds an ONNX graph and reads its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OnnxSignature {
    /// The graph's inputs, in order.
    pub inputs: Vec<OnnxInput>,
    /// The output holding predicted labels (a classifier that gives them).
    #[serde(default)]
    pub label: Option<String>,
    /// The output holding class scores or probabilities, one column per class (a classifier).
    #[serde(default)]
    pub scores: Option<String>,
    /// The output holding predicted values (a regressor).
    #[serde(default)]
    pub value: Option<String>,
    /// Who wrote the graph (`skl2onnx 1.20.0`, `warren 0.1.0`, ...).
    #[serde(default)]
    pub producer: String,
    /// The graph's operators, `domain:op` (the default domain without a prefix), sorted.
    #[serde(default)]
    pub operators: Vec<String>,
}

impl OnnxSignature {
    /// The raw columns a row gives, in order.
    pub fn columns(&self) -> Vec<String> {
        self.inputs.iter().flat_map(|i| i.columns.iter().cloned()).collect()
    }
    /// Each column's kind, parallel to [`Self::columns`].
    pub fn types(&self) -> Vec<String> {
        self.inputs.iter().flat_map(|i| i.columns.iter().map(|_| i.elem.kind().to_owned())).collect()
    }
}
