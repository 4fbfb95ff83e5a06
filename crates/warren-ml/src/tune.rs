//! Turning search spaces into candidates: every point of the grids, or a seeded random sample.

use std::collections::BTreeMap;

use warren_schemas::{Candidate, Hyper, params::TuneParams};

use crate::{MlError, Result};

/// The candidates to train, in a stable order.
pub fn candidates(p: &TuneParams) -> Result<Vec<Candidate>> {
    let mut all = Vec::new();
    for space in &p.search {
        let mut points: Vec<BTreeMap<String, Hyper>> = vec![BTreeMap::new()];
        for (name, values) in &space.grid {
            if values.is_empty() {
                return Err(MlError::invalid(format!("hyperparameter `{name}` has no values to try")));
            }
            points = points
                .into_iter()
                .flat_map(|pt| {
                    values.iter().map(move |v| {
                        let mut pt = pt.clone();
                        pt.insert(name.clone(), v.clone());
                        pt
                    })
                })
                .collect();
        }
        all.extend(points.into_iter().map(|hyperparams| Candidate { algorithm: space.algorithm, hyperparams }));
    }
    if all.is_empty() {
        return Err(MlError::invalid("tune has nothing to search"));
    }
    if let Some(budget) = p.budget {
        let mut rng = fastrand::Rng::with_seed(p.seed);
        rng.shuffle(&mut all);
        all.truncate(budget.max(1) as usize);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_schemas::{Algorithm, params::SearchSpace};

    #[test]
    fn grids_expand_and_budgets_sample() {
        let p = TuneParams {
            metric: "accuracy".into(),
            search: vec![
                SearchSpace {
                    algorithm: Algorithm::Logistic,
                    grid: [
                        ("alpha".to_owned(), vec![0.1.into(), 1.0.into()]),
                        ("max_iterations".to_owned(), vec![50.0.into(), 100.0.into()]),
                    ]
                    .into(),
                },
                SearchSpace {
                    algorithm: Algorithm::DecisionTree,
                    grid: [("criterion".to_owned(), vec!["gini".into(), "entropy".into()])].into(),
                },
            ],
            budget: None,
            seed: 1,
        };
        assert_eq!(candidates(&p).unwrap().len(), 6);
        let sampled = candidates(&TuneParams { budget: Some(3), ..p.clone() }).unwrap();
        assert_eq!(sampled.len(), 3);
        assert_eq!(sampled, candidates(&TuneParams { budget: Some(3), ..p }).unwrap(), "seeded");
    }
}
