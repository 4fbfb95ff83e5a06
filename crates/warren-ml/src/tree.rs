//! A CART classification tree (Gini impurity), deterministic to the bit: class counts are
//! integers, candidate splits are visited in a fixed order, and ties go to the first feature,
//! the lowest threshold and the lowest class index. (linfa-trees 0.8 breaks ties by `HashMap`
//! iteration order, so the same data and seed could give another tree in another process.)

use ndarray::{Array2, ArrayView1};
use serde::{Deserialize, Serialize};

/// One node of a fitted tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Node {
    /// Predict this class.
    Leaf {
        /// Class index.
        class: usize,
    },
    /// Go left when `x[feature] < threshold`, else right.
    Split {
        /// Feature index.
        feature: usize,
        /// Split point (midpoint between two neighbouring values).
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
}

/// Tree hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeParams {
    /// Deepest level (the root is depth 0); `None` grows until pure.
    pub max_depth: Option<usize>,
    /// Fewest rows a node needs to be split.
    pub min_samples_split: usize,
}

fn gini_weighted(counts: &[usize], n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    let sum_sq: f64 = counts.iter().map(|&c| (c as f64) * (c as f64)).sum();
    n - sum_sq / n
}

fn majority(counts: &[usize]) -> usize {
    let mut best = 0;
    for (c, &n) in counts.iter().enumerate() {
        if n > counts[best] {
            best = c;
        }
    }
    best
}

impl Tree {
    /// Fits a tree on rows `x` with class indices `y` in `0..n_classes`.
    pub fn fit(x: &Array2<f64>, y: &[usize], n_classes: usize, p: TreeParams) -> Tree {
        let mut tree = Tree { nodes: Vec::new() };
        let rows: Vec<usize> = (0..x.nrows()).collect();
        tree.grow(x, y, n_classes.max(1), p, rows, 0);
        tree
    }

    fn grow(&mut self, x: &Array2<f64>, y: &[usize], k: usize, p: TreeParams, rows: Vec<usize>, depth: usize) -> usize {
        let id = self.nodes.len();
        let mut counts = vec![0usize; k];
        for &r in &rows {
            counts[y[r].min(k - 1)] += 1;
        }
        self.nodes.push(Node::Leaf { class: majority(&counts) });
        let pure = counts.iter().filter(|&&c| c > 0).count() <= 1;
        if pure || rows.len() < p.min_samples_split.max(2) || p.max_depth.is_some_and(|d| depth >= d) {
            return id;
        }
        let parent = gini_weighted(&counts, rows.len());
        let mut best: Option<(f64, usize, f64)> = None;
        let mut sorted = rows.clone();
        for f in 0..x.ncols() {
            sorted.sort_by(|&a, &b| x[[a, f]].total_cmp(&x[[b, f]]).then(a.cmp(&b)));
            let mut left = vec![0usize; k];
            let mut right = counts.clone();
            for i in 0..sorted.len() - 1 {
                let c = y[sorted[i]].min(k - 1);
                left[c] += 1;
                right[c] -= 1;
                let (v, next) = (x[[sorted[i], f]], x[[sorted[i + 1], f]]);
                if v == next {
                    continue;
                }
                let impurity = gini_weighted(&left, i + 1) + gini_weighted(&right, sorted.len() - i - 1);
                if best.is_none_or(|(b, _, _)| impurity < b - 1e-12) {
                    best = Some((impurity, f, v + (next - v) / 2.0));
                }
            }
        }
        let Some((impurity, feature, threshold)) = best else { return id };
        if impurity >= parent - 1e-12 {
            return id;
        }
        let (l, r): (Vec<usize>, Vec<usize>) = rows.into_iter().partition(|&row| x[[row, feature]] < threshold);
        let left = self.grow(x, y, k, p, l, depth + 1);
        let right = self.grow(x, y, k, p, r, depth + 1);
        self.nodes[id] = Node::Split { feature, threshold, left, right };
        id
    }

    /// The class of one row.
    pub fn predict_row(&self, row: ArrayView1<'_, f64>) -> usize {
        let mut i = 0;
        loop {
            match self.nodes.get(i) {
                Some(Node::Leaf { class }) => return *class,
                Some(Node::Split { feature, threshold, left, right }) => {
                    i = if row[*feature] < *threshold { *left } else { *right };
                }
                None => return 0,
            }
        }
    }

    /// The classes of all rows.
    pub fn predict(&self, x: &Array2<f64>) -> Vec<usize> {
        x.rows().into_iter().map(|r| self.predict_row(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_and_respects_depth() {
        let x = Array2::from_shape_vec((6, 2), vec![1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 10.0, 1.0, 11.0, 1.0, 12.0, 0.0])
            .unwrap();
        let y = [0, 0, 0, 1, 1, 1];
        let t = Tree::fit(&x, &y, 2, TreeParams { max_depth: None, min_samples_split: 2 });
        assert_eq!(t.predict(&x), y.to_vec());
        assert!(matches!(t.nodes[0], Node::Split { feature: 0, threshold, .. } if threshold == 6.5));
        let stump = Tree::fit(&x, &y, 2, TreeParams { max_depth: Some(0), min_samples_split: 2 });
        assert_eq!(stump.nodes.len(), 1);
        assert_eq!(Tree::fit(&x, &y, 2, TreeParams { max_depth: None, min_samples_split: 2 }), t, "deterministic");
    }
}
