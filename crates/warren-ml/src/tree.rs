//! CART trees grown the way scikit-learn grows them, and the ensembles built on them.
//!
//! The split rule is scikit-learn's (`BestSplitter` with depth-first building):
//! - features are read as `f32`, as scikit-learn reads them, so the same data gives the same
//!   candidate thresholds; a threshold is the midpoint `a/2 + b/2` of two neighbouring distinct
//!   values (or `a` when the midpoint rounds up to `b`), and a row goes left when `x <= threshold`;
//! - features are visited in a seeded random order; the best split is the one with the highest
//!   proxy improvement (Gini, entropy, squared error, Friedman's MSE), strictly higher, so ties
//!   go to the feature drawn first and then the lowest threshold;
//! - a node becomes a leaf at `max_depth`, below `min_samples_split` rows, below
//!   `2 * min_samples_leaf` rows, when pure, or when no split leaves `min_samples_leaf` rows on
//!   each side; a split is taken even when it improves nothing (as scikit-learn does).
//!
//! Everything is deterministic to the bit for a given seed: counts are exact, the feature order
//! comes from a seeded [`fastrand::Rng`], and sorting breaks equal values by row index. (linfa-trees
//! 0.8 breaks ties by `HashMap` iteration order, which differs between processes.)
//!
//! Training checks a [`Stop`] between nodes, trees and boosting stages, so a step's maximum
//! duration ends it within milliseconds.

use ndarray::{Array2, ArrayView1};
use serde::{Deserialize, Serialize};

use crate::{MlError, Result, Stop};

/// How a split is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// Gini impurity (classification).
    Gini,
    /// Shannon entropy, "log_loss" in scikit-learn (classification).
    Entropy,
    /// Variance (regression).
    SquaredError,
    /// Friedman's improvement score (regression; what gradient boosting uses).
    FriedmanMse,
}

impl Criterion {
    /// Reads a criterion's name as scikit-learn spells it.
    pub fn parse(name: &str) -> Result<Criterion> {
        Ok(match name {
            "gini" => Criterion::Gini,
            "entropy" | "log_loss" => Criterion::Entropy,
            "squared_error" | "mse" => Criterion::SquaredError,
            "friedman_mse" => Criterion::FriedmanMse,
            other => {
                return Err(MlError::invalid(format!(
                    "criterion `{other}` is not known (gini, entropy, squared_error, friedman_mse)"
                )));
            }
        })
    }
    fn for_classes(self) -> bool {
        matches!(self, Criterion::Gini | Criterion::Entropy)
    }
}

/// What a tree learns.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Class indices in `0..k`.
    Classes {
        /// One per row.
        y: &'a [usize],
        /// Number of classes.
        k: usize,
    },
    /// Values.
    Values(&'a [f64]),
}

/// Tree hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeParams {
    /// Deepest level (the root is depth 0); `None` grows until pure.
    pub max_depth: Option<usize>,
    /// Fewest rows a node needs to be split.
    pub min_samples_split: usize,
    /// Fewest rows each side of a split must keep.
    pub min_samples_leaf: usize,
    /// Features tried at each node (drawn at random); `None` tries all.
    pub max_features: Option<usize>,
    /// How splits are scored.
    pub criterion: Criterion,
    /// Seed of the feature draws.
    pub seed: u64,
}

impl Default for TreeParams {
    fn default() -> Self {
        TreeParams {
            max_depth: None,
            min_samples_split: 2,
            min_samples_leaf: 1,
            max_features: None,
            criterion: Criterion::Gini,
            seed: 0,
        }
    }
}

/// One node of a fitted tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Node {
    /// A leaf: class shares (classification) or `[value]` (regression).
    Leaf {
        /// What the leaf predicts.
        value: Vec<f64>,
    },
    /// Go left when `x[feature] <= threshold` (`x` read as `f32`), else right.
    Split {
        /// Feature index.
        feature: usize,
        /// Split point.
        threshold: f64,
        /// Index of the left child.
        left: usize,
        /// Index of the right child.
        right: usize,
    },
}

/// A fitted tree: `nodes[0]` is the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    /// The nodes.
    pub nodes: Vec<Node>,
    /// Number of classes; 0 for a regression tree.
    pub classes: usize,
}

const FEATURE_THRESHOLD: f64 = 1e-7;

/// Columns as `f32` (scikit-learn's `DTYPE`), widened back to `f64` for arithmetic.
fn columns(x: &Array2<f64>) -> Vec<Vec<f64>> {
    (0..x.ncols()).map(|j| x.column(j).iter().map(|&v| v as f32 as f64).collect()).collect()
}

/// Running sums of one side of a split.
#[derive(Clone)]
struct Side {
    w: f64,
    counts: Vec<f64>,
    sum: f64,
    sq: f64,
}

impl Side {
    fn new(k: usize) -> Side {
        Side { w: 0.0, counts: vec![0.0; k], sum: 0.0, sq: 0.0 }
    }
    fn add(&mut self, target: &Target<'_>, row: usize, w: f64, sign: f64) {
        self.w += sign * w;
        match target {
            Target::Classes { y, .. } => self.counts[y[row]] += sign * w,
            Target::Values(v) => {
                self.sum += sign * w * v[row];
                self.sq += sign * w * v[row] * v[row];
            }
        }
    }
    fn impurity(&self, c: Criterion) -> f64 {
        match c {
            Criterion::Gini => 1.0 - self.counts.iter().map(|n| n * n).sum::<f64>() / (self.w * self.w),
            Criterion::Entropy => -self
                .counts
                .iter()
                .filter(|&&n| n > 0.0)
                .map(|&n| {
                    let p = n / self.w;
                    p * p.log2()
                })
                .sum::<f64>(),
            Criterion::SquaredError | Criterion::FriedmanMse => {
                let mean = self.sum / self.w;
                self.sq / self.w - mean * mean
            }
        }
    }
    fn value(&self, target: &Target<'_>) -> Vec<f64> {
        match target {
            Target::Classes { .. } => self.counts.iter().map(|n| n / self.w).collect(),
            Target::Values(_) => vec![self.sum / self.w],
        }
    }
}

/// scikit-learn's `proxy_impurity_improvement`: higher is better.
fn proxy(c: Criterion, l: &Side, r: &Side) -> f64 {
    match c {
        Criterion::Gini | Criterion::Entropy => -r.w * r.impurity(c) - l.w * l.impurity(c),
        Criterion::SquaredError => l.sum * l.sum / l.w + r.sum * r.sum / r.w,
        Criterion::FriedmanMse => {
            let diff = r.w * l.sum - l.w * r.sum;
            diff * diff / (l.w * r.w)
        }
    }
}

struct Grower<'a> {
    cols: Vec<Vec<f64>>,
    target: Target<'a>,
    weights: Option<&'a [f64]>,
    p: TreeParams,
    k: usize,
    rng: fastrand::Rng,
    stop: &'a Stop,
    nodes: Vec<Node>,
    buf: Vec<(f64, usize)>,
}

impl Grower<'_> {
    fn w(&self, row: usize) -> f64 {
        self.weights.map_or(1.0, |w| w[row])
    }

    fn grow(&mut self, rows: &mut [usize], depth: usize) -> Result<usize> {
        self.stop.check()?;
        let id = self.nodes.len();
        let mut all = Side::new(self.k);
        for &r in rows.iter() {
            let w = self.w(r);
            all.add(&self.target, r, w, 1.0);
        }
        self.nodes.push(Node::Leaf { value: all.value(&self.target) });
        let n = rows.len();
        let p = self.p;
        if p.max_depth.is_some_and(|d| depth >= d)
            || n < p.min_samples_split.max(2)
            || n < 2 * p.min_samples_leaf.max(1)
            || all.impurity(p.criterion) <= f64::EPSILON
        {
            return Ok(id);
        }
        let Some((feature, threshold)) = self.best_split(rows, &all) else { return Ok(id) };
        let col = &self.cols[feature];
        rows.sort_by_key(|&r| col[r] > threshold);
        let n_left = rows.iter().take_while(|&&r| col[r] <= threshold).count();
        let (l, r) = rows.split_at_mut(n_left);
        let left = self.grow(l, depth + 1)?;
        let right = self.grow(r, depth + 1)?;
        self.nodes[id] = Node::Split { feature, threshold, left, right };
        Ok(id)
    }

    fn best_split(&mut self, rows: &[usize], all: &Side) -> Option<(usize, f64)> {
        let n_features = self.cols.len();
        let mut order: Vec<usize> = (0..n_features).collect();
        let max_features = self.p.max_features.unwrap_or(n_features).clamp(1, n_features.max(1));
        // Features are visited in a seeded random order even when all are tried, as
        // scikit-learn does: equally good splits on two features go to the one drawn first.
        self.rng.shuffle(&mut order);
        let min_leaf = self.p.min_samples_leaf.max(1);
        let mut best: Option<(f64, usize, f64)> = None;
        let (mut visited, mut constant) = (0, 0);
        for f in order {
            if visited >= max_features && visited > constant {
                break;
            }
            visited += 1;
            let col = &self.cols[f];
            self.buf.clear();
            self.buf.extend(rows.iter().map(|&r| (col[r], r)));
            self.buf.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let (lo, hi) = (self.buf[0].0, self.buf[self.buf.len() - 1].0);
            if hi <= lo + FEATURE_THRESHOLD {
                constant += 1;
                continue;
            }
            let mut left = Side::new(self.k);
            let mut right = all.clone();
            for i in 1..self.buf.len() {
                let (prev, row) = self.buf[i - 1];
                let w = self.w(row);
                left.add(&self.target, row, w, 1.0);
                right.add(&self.target, row, w, -1.0);
                let next = self.buf[i].0;
                if next <= prev + FEATURE_THRESHOLD || i < min_leaf || self.buf.len() - i < min_leaf {
                    continue;
                }
                let score = proxy(self.p.criterion, &left, &right);
                if best.is_none_or(|(b, _, _)| score > b) {
                    let mut t = prev / 2.0 + next / 2.0;
                    if t == next || !t.is_finite() {
                        t = prev;
                    }
                    best = Some((score, f, t));
                }
            }
        }
        best.map(|(_, f, t)| (f, t))
    }
}

impl Tree {
    /// Fits a tree. `weights` (bootstrap counts, say) weigh rows; a row of weight 0 is left out.
    pub fn fit(
        x: &Array2<f64>,
        target: Target<'_>,
        weights: Option<&[f64]>,
        p: TreeParams,
        stop: &Stop,
    ) -> Result<Tree> {
        let k = match target {
            Target::Classes { k, .. } => k.max(1),
            Target::Values(_) => 0,
        };
        if p.criterion.for_classes() != (k > 0) {
            let kind = if k > 0 { "classification" } else { "regression" };
            return Err(MlError::invalid(format!("criterion {:?} does not fit a {kind} tree", p.criterion)));
        }
        let mut rows: Vec<usize> = (0..x.nrows()).filter(|&r| weights.is_none_or(|w| w[r] > 0.0)).collect();
        if rows.is_empty() {
            return Err(MlError::invalid("a tree needs at least one row"));
        }
        let mut g = Grower {
            cols: columns(x),
            target,
            weights,
            p,
            k,
            rng: fastrand::Rng::with_seed(p.seed),
            stop,
            nodes: Vec::new(),
            buf: Vec::with_capacity(rows.len()),
        };
        g.grow(&mut rows, 0)?;
        Ok(Tree { nodes: g.nodes, classes: k })
    }

    /// The index of the leaf a row lands in.
    pub fn leaf(&self, row: ArrayView1<'_, f64>) -> usize {
        let mut i = 0;
        while let Some(Node::Split { feature, threshold, left, right }) = self.nodes.get(i) {
            i = if (row[*feature] as f32 as f64) <= *threshold { *left } else { *right };
        }
        i
    }

    /// What a row's leaf holds: class shares, or `[value]`.
    pub fn value(&self, row: ArrayView1<'_, f64>) -> &[f64] {
        match self.nodes.get(self.leaf(row)) {
            Some(Node::Leaf { value }) => value,
            _ => &[],
        }
    }

    /// The class of one row (the first of the most frequent classes in its leaf).
    pub fn predict_row(&self, row: ArrayView1<'_, f64>) -> usize {
        argmax(self.value(row))
    }

    /// The classes of all rows.
    pub fn predict(&self, x: &Array2<f64>) -> Vec<usize> {
        x.rows().into_iter().map(|r| self.predict_row(r)).collect()
    }

    /// The values of all rows (regression).
    pub fn predict_values(&self, x: &Array2<f64>) -> Vec<f64> {
        x.rows().into_iter().map(|r| self.value(r).first().copied().unwrap_or(0.0)).collect()
    }
}

/// The index of the first largest value.
pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// A random forest: trees on bootstrap samples, each drawing features at every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    /// The trees.
    pub trees: Vec<Tree>,
    /// Number of classes; 0 for regression.
    pub classes: usize,
}

/// Forest hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForestParams {
    /// Number of trees.
    pub n_estimators: usize,
    /// Each tree's parameters (its seed is drawn from the forest's).
    pub tree: TreeParams,
    /// Fit each tree on a bootstrap sample.
    pub bootstrap: bool,
}

impl Forest {
    /// Fits the forest; trees are fitted in order from one seeded generator, so the same seed
    /// gives the same forest in any process.
    pub fn fit(x: &Array2<f64>, target: Target<'_>, p: ForestParams, stop: &Stop) -> Result<Forest> {
        let mut rng = fastrand::Rng::with_seed(p.tree.seed);
        let n = x.nrows();
        let mut trees = Vec::with_capacity(p.n_estimators);
        let mut weights = vec![0.0; n];
        for _ in 0..p.n_estimators.max(1) {
            stop.check()?;
            let seed = rng.u64(..);
            let w = if p.bootstrap {
                weights.fill(0.0);
                let mut draw = fastrand::Rng::with_seed(seed ^ 0xb007);
                for _ in 0..n {
                    weights[draw.usize(0..n)] += 1.0;
                }
                Some(weights.as_slice())
            } else {
                None
            };
            trees.push(Tree::fit(x, target, w, TreeParams { seed, ..p.tree }, stop)?);
        }
        let classes = trees.first().map_or(0, |t| t.classes);
        Ok(Forest { trees, classes })
    }

    /// Average class shares (classification) or value (regression) of one row.
    pub fn mean(&self, row: ArrayView1<'_, f64>) -> Vec<f64> {
        let mut acc = vec![0.0; self.classes.max(1)];
        for t in &self.trees {
            for (a, v) in acc.iter_mut().zip(t.value(row)) {
                *a += v;
            }
        }
        let n = self.trees.len().max(1) as f64;
        acc.iter().map(|a| a / n).collect()
    }

    /// Classes of all rows (highest mean share).
    pub fn predict(&self, x: &Array2<f64>) -> Vec<usize> {
        x.rows().into_iter().map(|r| argmax(&self.mean(r))).collect()
    }

    /// Values of all rows.
    pub fn predict_values(&self, x: &Array2<f64>) -> Vec<f64> {
        x.rows().into_iter().map(|r| self.mean(r)[0]).collect()
    }
}

/// Gradient-boosted trees as scikit-learn's `GradientBoostingClassifier`/`Regressor` fit them:
/// log loss (one tree per class and stage, Newton leaf values; one tree for two classes) or
/// squared error, regression trees on the negative gradient with Friedman's MSE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Boosted {
    /// Raw score before any tree: log priors (classification) or the mean (regression).
    pub init: Vec<f64>,
    /// Per stage, one tree per raw score.
    pub stages: Vec<Vec<Tree>>,
    /// Shrinkage of each stage.
    pub learning_rate: f64,
    /// Number of classes; 0 for regression.
    pub classes: usize,
}

/// Boosting hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoostParams {
    /// Stages.
    pub n_estimators: usize,
    /// Shrinkage.
    pub learning_rate: f64,
    /// Each stage's trees (criterion is Friedman's MSE).
    pub tree: TreeParams,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn softmax(raw: &[f64]) -> Vec<f64> {
    let max = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = raw.iter().map(|r| (r - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

impl Boosted {
    /// Fits the stages in order (deterministic for a seed).
    pub fn fit(x: &Array2<f64>, target: Target<'_>, p: BoostParams, stop: &Stop) -> Result<Boosted> {
        let n = x.nrows();
        if n == 0 {
            return Err(MlError::invalid("boosting needs at least one row"));
        }
        let tree_params = TreeParams { criterion: Criterion::FriedmanMse, ..p.tree };
        let mut rng = fastrand::Rng::with_seed(p.tree.seed);
        let (classes, outputs) = match target {
            Target::Classes { k, .. } if k <= 2 => (k.max(2), 1),
            Target::Classes { k, .. } => (k, k),
            Target::Values(_) => (0, 1),
        };
        // One-hot truth (classification) or the values.
        let truth: Vec<Vec<f64>> = match target {
            Target::Classes { y, .. } if outputs == 1 => vec![y.iter().map(|&c| (c == 1) as u8 as f64).collect()],
            Target::Classes { y, k } => (0..k).map(|c| y.iter().map(|&t| (t == c) as u8 as f64).collect()).collect(),
            Target::Values(v) => vec![v.to_vec()],
        };
        let eps = f32::EPSILON as f64;
        let init: Vec<f64> = match target {
            Target::Values(v) => vec![v.iter().sum::<f64>() / n as f64],
            Target::Classes { .. } if outputs == 1 => {
                let p1 = (truth[0].iter().sum::<f64>() / n as f64).clamp(eps, 1.0 - eps);
                vec![(p1 / (1.0 - p1)).ln()]
            }
            Target::Classes { .. } => {
                let logs: Vec<f64> =
                    truth.iter().map(|t| (t.iter().sum::<f64>() / n as f64).clamp(eps, 1.0 - eps).ln()).collect();
                let mean = logs.iter().sum::<f64>() / logs.len() as f64;
                logs.iter().map(|l| l - mean).collect()
            }
        };
        let mut raw: Vec<Vec<f64>> = init.iter().map(|&v| vec![v; n]).collect();
        let mut stages = Vec::with_capacity(p.n_estimators);
        for _ in 0..p.n_estimators.max(1) {
            stop.check()?;
            // Probabilities from the raw scores at the start of the stage.
            let prob: Vec<Vec<f64>> = match (classes, outputs) {
                (0, _) => raw.clone(),
                (_, 1) => vec![raw[0].iter().map(|&r| sigmoid(r)).collect()],
                _ => {
                    let mut pr = vec![vec![0.0; n]; outputs];
                    for i in 0..n {
                        let s = softmax(&raw.iter().map(|r| r[i]).collect::<Vec<_>>());
                        for (k, v) in s.into_iter().enumerate() {
                            pr[k][i] = v;
                        }
                    }
                    pr
                }
            };
            let mut stage = Vec::with_capacity(outputs);
            for k in 0..outputs {
                let residual: Vec<f64> = (0..n).map(|i| truth[k][i] - prob[k][i]).collect();
                let seed = rng.u64(..);
                let mut tree = Tree::fit(x, Target::Values(&residual), None, TreeParams { seed, ..tree_params }, stop)?;
                if classes > 0 {
                    newton_leaves(&mut tree, x, &residual, &prob[k], outputs);
                }
                for (i, row) in x.rows().into_iter().enumerate() {
                    raw[k][i] += p.learning_rate * tree.value(row)[0];
                }
                stage.push(tree);
            }
            stages.push(stage);
        }
        Ok(Boosted { init, stages, learning_rate: p.learning_rate, classes })
    }

    /// Raw scores of one row.
    pub fn raw(&self, row: ArrayView1<'_, f64>) -> Vec<f64> {
        let mut raw = self.init.clone();
        for stage in &self.stages {
            for (r, t) in raw.iter_mut().zip(stage) {
                *r += self.learning_rate * t.value(row)[0];
            }
        }
        raw
    }

    /// Classes of all rows.
    pub fn predict(&self, x: &Array2<f64>) -> Vec<usize> {
        x.rows()
            .into_iter()
            .map(|r| {
                let raw = self.raw(r);
                if raw.len() == 1 { (raw[0] > 0.0) as usize } else { argmax(&raw) }
            })
            .collect()
    }

    /// Values of all rows.
    pub fn predict_values(&self, x: &Array2<f64>) -> Vec<f64> {
        x.rows().into_iter().map(|r| self.raw(r)[0]).collect()
    }
}

/// Replaces each leaf's value with a Newton step of the log loss, as scikit-learn does:
/// `sum(residual) / sum(p (1 - p))`, times `(K - 1) / K` for `K > 2` classes.
fn newton_leaves(tree: &mut Tree, x: &Array2<f64>, residual: &[f64], prob: &[f64], outputs: usize) {
    let mut num = vec![0.0; tree.nodes.len()];
    let mut den = vec![0.0; tree.nodes.len()];
    for (i, row) in x.rows().into_iter().enumerate() {
        let leaf = tree.leaf(row);
        num[leaf] += residual[i];
        den[leaf] += prob[i] * (1.0 - prob[i]);
    }
    let factor = if outputs > 1 { (outputs as f64 - 1.0) / outputs as f64 } else { 1.0 };
    for (i, node) in tree.nodes.iter_mut().enumerate() {
        if let Node::Leaf { value } = node {
            // The average over the leaf's rows, as scikit-learn takes it; the counts cancel.
            let step = if den[i].abs() < 1e-150 { 0.0 } else { num[i] * factor / den[i] };
            *value = vec![step];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xy() -> (Array2<f64>, Vec<usize>) {
        let x = Array2::from_shape_vec((6, 2), vec![1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 10.0, 1.0, 11.0, 1.0, 12.0, 0.0])
            .unwrap();
        (x, vec![0, 0, 0, 1, 1, 1])
    }

    #[test]
    fn separates_at_the_midpoint_and_respects_depth() {
        let (x, y) = xy();
        let stop = Stop::default();
        let t = Tree::fit(&x, Target::Classes { y: &y, k: 2 }, None, TreeParams::default(), &stop).unwrap();
        assert_eq!(t.predict(&x), y);
        assert!(matches!(t.nodes[0], Node::Split { feature: 0, threshold, .. } if threshold == 6.5));
        let p = TreeParams { max_depth: Some(0), ..TreeParams::default() };
        assert_eq!(Tree::fit(&x, Target::Classes { y: &y, k: 2 }, None, p, &stop).unwrap().nodes.len(), 1);
    }

    #[test]
    fn min_samples_leaf_keeps_rows_on_each_side() {
        let (x, _) = xy();
        let y = [0, 1, 1, 1, 1, 1];
        let stop = Stop::default();
        let free = Tree::fit(&x, Target::Classes { y: &y, k: 2 }, None, TreeParams::default(), &stop).unwrap();
        assert!(matches!(free.nodes[0], Node::Split { feature: 0, threshold, .. } if threshold == 1.5));
        let p = TreeParams { min_samples_leaf: 2, ..TreeParams::default() };
        let held = Tree::fit(&x, Target::Classes { y: &y, k: 2 }, None, p, &stop).unwrap();
        assert!(matches!(held.nodes[0], Node::Split { threshold, .. } if threshold == 2.5), "{held:?}");
    }

    #[test]
    fn regression_trees_predict_means_and_boosting_fits() {
        let (x, _) = xy();
        let v = [1.0, 1.0, 1.0, 5.0, 5.0, 7.0];
        let stop = Stop::default();
        let p = TreeParams { max_depth: Some(1), criterion: Criterion::SquaredError, ..TreeParams::default() };
        let t = Tree::fit(&x, Target::Values(&v), None, p, &stop).unwrap();
        assert_eq!(t.predict_values(&x), vec![1.0, 1.0, 1.0, 17.0 / 3.0, 17.0 / 3.0, 17.0 / 3.0]);
        let b = BoostParams { n_estimators: 200, learning_rate: 0.1, tree: TreeParams { max_depth: Some(3), ..p } };
        let boosted = Boosted::fit(&x, Target::Values(&v), b, &stop).unwrap();
        for (got, want) in boosted.predict_values(&x).iter().zip(v) {
            assert!((got - want).abs() < 0.01, "{got} vs {want}");
        }
    }

    #[test]
    fn ensembles_are_deterministic_for_a_seed() {
        let iris = linfa_datasets::iris();
        let (x, y) = (iris.records().to_owned(), iris.targets().to_vec());
        let stop = Stop::default();
        let tree = TreeParams { max_features: Some(2), seed: 7, ..TreeParams::default() };
        let fp = ForestParams { n_estimators: 10, tree, bootstrap: true };
        let a = Forest::fit(&x, Target::Classes { y: &y, k: 3 }, fp, &stop).unwrap();
        assert_eq!(a, Forest::fit(&x, Target::Classes { y: &y, k: 3 }, fp, &stop).unwrap());
        assert_ne!(
            a,
            Forest::fit(
                &x,
                Target::Classes { y: &y, k: 3 },
                ForestParams { tree: TreeParams { seed: 8, ..tree }, ..fp },
                &stop
            )
            .unwrap()
        );
        let accuracy = a.predict(&x).iter().zip(&y).filter(|(p, t)| p == t).count() as f64 / y.len() as f64;
        assert!(accuracy > 0.95, "{accuracy}");
        let bp = BoostParams { n_estimators: 20, learning_rate: 0.1, tree: TreeParams { max_depth: Some(3), ..tree } };
        let b = Boosted::fit(&x, Target::Classes { y: &y, k: 3 }, bp, &stop).unwrap();
        assert_eq!(b, Boosted::fit(&x, Target::Classes { y: &y, k: 3 }, bp, &stop).unwrap());
        let accuracy = b.predict(&x).iter().zip(&y).filter(|(p, t)| p == t).count() as f64 / y.len() as f64;
        assert!(accuracy > 0.95, "{accuracy}");
    }

    #[test]
    fn a_stop_ends_training_promptly() {
        let iris = linfa_datasets::iris();
        let (x, y) = (iris.records().to_owned(), iris.targets().to_vec());
        let stop = Stop::default();
        let setter = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            setter.set();
            std::time::Instant::now()
        });
        let fp = ForestParams { n_estimators: 1_000_000, tree: TreeParams::default(), bootstrap: true };
        let err = Forest::fit(&x, Target::Classes { y: &y, k: 3 }, fp, &stop).unwrap_err();
        let set_at = t.join().unwrap();
        assert!(matches!(err, MlError::Stopped(_)), "{err:?}");
        assert!(set_at.elapsed() < std::time::Duration::from_secs(1), "took {:?} to stop", set_at.elapsed());
    }
}
