//! The membership rules: what a poll's answer (or failure) does to the set of nodes.
//!
//! * A DNS failure (timeout, SERVFAIL, REFUSED, unreachable, malformed answer) changes
//!   nothing: the last good membership stands.
//! * A node leaves only after it is missing from `REMOVAL_CONFIRMATIONS` successful answers
//!   in a row. A sudden empty answer therefore disconnects nobody on the poll that sees it,
//!   and a record that flaps every poll never causes a disconnect.
//! * Names are compared case-insensitively, as DNS does: `N1@svc` and `n1@svc` are one
//!   node. A member keeps its spelling; a new node takes its all-lowercase spelling if the
//!   answer has it, else the first in byte order. So case variants cost no extra member.
//! * At most `max_nodes` members. Nodes already members keep their place, so a flood of new
//!   names cannot push out known-good nodes; the excess is counted and ignored.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Successive answers a node must be missing from before it counts as deregistered.
pub const REMOVAL_CONFIRMATIONS: u32 = 2;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Every current member, sorted.
    pub members: Vec<String>,
    pub joined: Vec<String>,
    pub left: Vec<String>,
    /// Set on the first failed poll of an outage, with the reason.
    pub outage_started: Option<String>,
    /// Set on the first good poll after an outage, with how many polls failed.
    pub outage_ended: Option<u64>,
    /// Names over `max_nodes` that were ignored.
    pub over_limit: usize,
}

#[derive(Debug, Clone)]
pub struct Membership {
    max_nodes: usize,
    /// Member -> how many successive answers it has been missing from.
    members: BTreeMap<String, u32>,
    failed_polls: u64,
}

impl Membership {
    pub fn new(max_nodes: usize) -> Self {
        Self {
            max_nodes,
            members: BTreeMap::new(),
            failed_polls: 0,
        }
    }

    pub fn members(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    pub fn observe_answer(&mut self, nodes: impl IntoIterator<Item = String>) -> Change {
        let seen = self.one_spelling_each(nodes);
        let mut change = Change {
            outage_ended: (self.failed_polls > 0).then_some(self.failed_polls),
            ..Change::default()
        };
        self.failed_polls = 0;

        self.members.retain(|node, missing| {
            if seen.contains(node) {
                *missing = 0;
                true
            } else {
                *missing += 1;
                if *missing >= REMOVAL_CONFIRMATIONS {
                    change.left.push(node.clone());
                    false
                } else {
                    true
                }
            }
        });

        for node in seen {
            if self.members.contains_key(&node) {
                continue;
            }
            if self.members.len() >= self.max_nodes {
                change.over_limit += 1;
                continue;
            }
            self.members.insert(node.clone(), 0);
            change.joined.push(node);
        }
        change.members = self.members();
        change
    }

    /// Collapses names that differ only in letter case into one spelling per node.
    fn one_spelling_each(&self, nodes: impl IntoIterator<Item = String>) -> BTreeSet<String> {
        let members: HashMap<String, &String> = self
            .members
            .keys()
            .map(|member| (member.to_ascii_lowercase(), member))
            .collect();
        let mut chosen: BTreeMap<String, String> = BTreeMap::new();
        for node in nodes {
            let key = node.to_ascii_lowercase();
            if let Some(member) = members.get(&key) {
                chosen.insert(key, (*member).clone());
                continue;
            }
            match chosen.entry(key) {
                Entry::Vacant(entry) => {
                    entry.insert(node);
                }
                Entry::Occupied(mut entry) => {
                    let lowercase = |name: &str| !name.bytes().any(|b| b.is_ascii_uppercase());
                    let current = entry.get();
                    let better = (lowercase(&node), std::cmp::Reverse(&node))
                        > (lowercase(current), std::cmp::Reverse(current));
                    if better {
                        entry.insert(node);
                    }
                }
            }
        }
        chosen.into_values().collect()
    }

    pub fn observe_failure(&mut self, reason: &str) -> Change {
        self.failed_polls += 1;
        Change {
            members: self.members(),
            outage_started: (self.failed_polls == 1).then(|| reason.to_string()),
            ..Change::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn joins_and_confirmed_leaves() {
        let mut m = Membership::new(10);
        let c = m.observe_answer(names(&["a", "b", "c"]));
        assert_eq!(c.joined, names(&["a", "b", "c"]));
        let c = m.observe_answer(names(&["a", "b"]));
        assert!(c.left.is_empty(), "one missing answer is not enough");
        assert_eq!(c.members, names(&["a", "b", "c"]));
        let c = m.observe_answer(names(&["a", "b"]));
        assert_eq!(c.left, names(&["c"]));
        assert_eq!(c.members, names(&["a", "b"]));
    }

    #[test]
    fn a_sudden_empty_answer_needs_confirmation() {
        let mut m = Membership::new(10);
        m.observe_answer(names(&["a", "b"]));
        let c = m.observe_answer(Vec::new());
        assert!(c.left.is_empty());
        assert_eq!(c.members, names(&["a", "b"]));
        // Back on the next poll: nothing happened.
        let c = m.observe_answer(names(&["a", "b"]));
        assert!(c.left.is_empty() && c.joined.is_empty());
        // Empty twice in a row: they are gone.
        m.observe_answer(Vec::new());
        let c = m.observe_answer(Vec::new());
        assert_eq!(c.left, names(&["a", "b"]));
    }

    #[test]
    fn failures_keep_the_last_membership_and_report_the_outage_once() {
        let mut m = Membership::new(10);
        m.observe_answer(names(&["a"]));
        let first = m.observe_failure("timeout");
        assert_eq!(first.outage_started.as_deref(), Some("timeout"));
        assert_eq!(first.members, names(&["a"]));
        for _ in 0..20 {
            let c = m.observe_failure("timeout");
            assert_eq!(c.outage_started, None);
            assert!(c.left.is_empty());
            assert_eq!(c.members, names(&["a"]));
        }
        // A failure between two missing answers does not reset or advance the count.
        let c = m.observe_answer(names(&["a"]));
        assert_eq!(c.outage_ended, Some(21));
        assert_eq!(m.observe_answer(names(&["a"])).outage_ended, None);
    }

    #[test]
    fn a_flapping_record_never_leaves() {
        let mut m = Membership::new(10);
        for poll in 0..20 {
            let answer = if poll % 2 == 0 {
                names(&["a", "flap"])
            } else {
                names(&["a"])
            };
            let c = m.observe_answer(answer);
            assert!(c.left.is_empty(), "poll {poll}");
        }
    }

    #[test]
    fn case_variants_are_one_node() {
        let mut m = Membership::new(10);
        // A new node: the all-lowercase spelling wins, whatever the order.
        let c = m.observe_answer(names(&["N1@s", "n1@s", "N2@s", "n2@S"]));
        assert_eq!(c.members, names(&["N2@s", "n1@s"]));
        // A member keeps its spelling, and a variant alone counts as the member being seen.
        for _ in 0..3 {
            let c = m.observe_answer(names(&["N1@S", "n2@s"]));
            assert!(c.joined.is_empty() && c.left.is_empty(), "{c:?}");
            assert_eq!(c.members, names(&["N2@s", "n1@s"]));
        }
    }

    #[test]
    fn max_nodes_caps_members_and_keeps_known_ones() {
        let mut m = Membership::new(3);
        m.observe_answer(names(&["m1", "m2"]));
        let flood: Vec<String> = (0..1000)
            .map(|i| format!("x{i:04}"))
            .chain(names(&["m1", "m2"]))
            .collect();
        let c = m.observe_answer(flood);
        assert_eq!(c.members.len(), 3);
        assert!(c.members.contains(&"m1".to_string()) && c.members.contains(&"m2".to_string()));
        assert_eq!(c.over_limit, 999);
    }
}
