//! The bounded window of completed message ids.

use std::collections::{HashSet, VecDeque};

use uuid::Uuid;

/// Message ids this worker completed recently, to drop redelivered duplicates.
pub(super) struct Dedup {
    seen: HashSet<Uuid>,
    order: VecDeque<Uuid>,
    capacity: usize,
}

impl Dedup {
    pub(super) fn new(capacity: usize) -> Self {
        Self { seen: HashSet::with_capacity(capacity.min(1 << 16)), order: VecDeque::new(), capacity }
    }
    pub(super) fn contains(&self, id: &Uuid) -> bool {
        self.seen.contains(id)
    }
    pub(super) fn insert(&mut self, id: Uuid) {
        if self.capacity == 0 || !self.seen.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_forgets_the_oldest() {
        let mut d = Dedup::new(2);
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            d.insert(*id);
        }
        assert!(!d.contains(&ids[0]) && d.contains(&ids[1]) && d.contains(&ids[2]));
    }
}
