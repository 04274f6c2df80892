//! Choosing among several SRV records (RFC 2782): the lowest priority wins, and within it a
//! record is picked with probability proportional to its weight.

use crate::resolver::SrvRecord;

/// Picks a record. `roll` is a uniformly random number; passing it in keeps this pure.
pub fn select(records: &[SrvRecord], roll: u32) -> Option<&SrvRecord> {
    let best = records.iter().map(|r| r.priority).min()?;
    let mut group: Vec<&SrvRecord> = records.iter().filter(|r| r.priority == best).collect();
    // Zero-weight records first, so they are chosen only when the roll lands on 0.
    group.sort_by_key(|r| r.weight != 0);
    let total: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
    if total == 0 {
        return Some(group[roll as usize % group.len()]);
    }
    let point = u64::from(roll) % (total + 1);
    let mut running = 0u64;
    group
        .into_iter()
        .find(|r| {
            running += u64::from(r.weight);
            running >= point
        })
        .or_else(|| records.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(priority: u16, weight: u16, port: u16) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: format!("t{port}.x"),
            ttl: 0,
        }
    }

    #[test]
    fn lowest_priority_wins() {
        let records = [rec(20, 100, 1), rec(10, 0, 2), rec(30, 5, 3)];
        for roll in 0..50 {
            assert_eq!(select(&records, roll).unwrap().port, 2);
        }
    }

    #[test]
    fn weights_split_the_choices_proportionally() {
        let records = [rec(1, 10, 1), rec(1, 30, 2)];
        let picks: Vec<u16> = (0..41)
            .map(|roll| select(&records, roll).unwrap().port)
            .collect();
        let ones = picks.iter().filter(|&&p| p == 1).count();
        let twos = picks.iter().filter(|&&p| p == 2).count();
        assert_eq!(ones + twos, 41);
        assert_eq!(ones, 11); // points 0..=10
        assert_eq!(twos, 30);
    }

    #[test]
    fn all_zero_weights_rotate() {
        let records = [rec(1, 0, 1), rec(1, 0, 2), rec(1, 0, 3)];
        let ports: Vec<u16> = (0..3)
            .map(|roll| select(&records, roll).unwrap().port)
            .collect();
        assert_eq!(ports, vec![1, 2, 3]);
        assert!(select(&[], 0).is_none());
    }
}
