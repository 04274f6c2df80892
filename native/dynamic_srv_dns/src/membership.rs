//! The membership rules: what a poll's answer (or failure) does to the set of nodes.
//!
//! * A DNS failure (timeout, SERVFAIL, REFUSED, unreachable, malformed answer) changes
//!   nothing: the last good membership stands.
//! * An answer that may be partial (trimmed by the server to fit a UDP packet or a TCP cap,
//!   see `resolver::AnswerSize`) adds the nodes it lists and removes nobody: a member it
//!   lacks may only have been left out.
//! * A node leaves only after it is missing from `REMOVAL_CONFIRMATIONS` complete answers in
//!   a row, the last two of which list the same nodes, *and* has been missing for at least
//!   the removal delay. So one sudden empty answer disconnects nobody, a record that flaps
//!   never causes a disconnect, fast polling cannot turn a short blip into one, and a server
//!   that answers a different subset each time (a record-count cap, as Route 53's multivalue
//!   answers: 8 records) removes nobody: its answers never agree.
//! * Names are compared case-insensitively, as DNS does: `N1@svc` and `n1@svc` are one
//!   node. A member keeps its spelling; a new node takes its all-lowercase spelling if the
//!   answer has it, else the first in byte order. So case variants cost no extra member.
//! * At most `max_nodes` members. Nodes already members keep their place, so a flood of new
//!   names cannot push out known-good nodes; the excess is counted and ignored.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

/// Successive complete answers a node must be missing from before it counts as deregistered.
pub const REMOVAL_CONFIRMATIONS: u32 = 2;

/// How long a node must have been missing before it counts as deregistered, by default.
pub const DEFAULT_REMOVAL_DELAY: Duration = Duration::from_secs(10);

/// Whether an answer can be trusted to list every registered node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    Complete,
    /// The server may have left records out: only additions are taken from it.
    MaybePartial,
}

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
    /// Members this answer lacked that are still members (not yet confirmed gone).
    pub kept_missing: usize,
    /// Members missing from the last complete answer (or more) that are still members: on
    /// their way out, so not worth dialing. A member a possibly partial answer left out is
    /// not among them unless a complete answer lacked it too, nor a seed no answer has listed
    /// yet (it was given as a member to dial).
    pub leaving: Vec<String>,
    /// This answer and the one before each lacked members the answer before them listed
    /// while listing members it lacked: the server rotates a subset of the service through its
    /// answers. (Once alone can be two stable-named nodes restarting at the same time.)
    pub rotating: bool,
}

/// Since when, and in how many successive complete answers, a member has been missing.
#[derive(Debug, Clone, Copy, Default)]
struct Absence {
    answers: u32,
    since: Option<Instant>,
    /// Taken as a member before any answer listed it (`seed`), and no answer has since.
    seeded: bool,
}

#[derive(Debug, Clone)]
pub struct Membership {
    max_nodes: usize,
    removal_delay: Duration,
    members: BTreeMap<String, Absence>,
    /// The nodes (lowercased) of the last complete answer.
    last_answer: Option<BTreeSet<String>>,
    /// Whether the last complete answer rotated against the one before it.
    rotated_last: bool,
    failed_polls: u64,
}

impl Membership {
    pub fn new(max_nodes: usize, removal_delay: Duration) -> Self {
        Self {
            max_nodes,
            removal_delay,
            members: BTreeMap::new(),
            last_answer: None,
            rotated_last: false,
            failed_polls: 0,
        }
    }

    pub fn members(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    pub fn observe_answer(
        &mut self,
        nodes: impl IntoIterator<Item = String>,
        completeness: Completeness,
        now: Instant,
    ) -> Change {
        let seen = self.one_spelling_each(nodes);
        let mut change = Change {
            outage_ended: (self.failed_polls > 0).then_some(self.failed_polls),
            ..Change::default()
        };
        self.failed_polls = 0;
        let complete = completeness == Completeness::Complete;
        let answer: BTreeSet<String> = seen.iter().map(|n| n.to_ascii_lowercase()).collect();
        let agrees = complete && self.last_answer.as_ref() == Some(&answer);
        if complete {
            let rotated = self.rotates(&answer);
            change.rotating = rotated && self.rotated_last;
            self.rotated_last = rotated;
        }

        let removal_delay = self.removal_delay;
        self.members.retain(|node, absence| {
            if seen.contains(node) {
                *absence = Absence::default();
                return true;
            }
            if complete {
                absence.answers += 1;
                let since = *absence.since.get_or_insert(now);
                if agrees
                    && absence.answers >= REMOVAL_CONFIRMATIONS
                    && now.saturating_duration_since(since) >= removal_delay
                {
                    change.left.push(node.clone());
                    return false;
                }
            }
            change.kept_missing += 1;
            true
        });
        if complete {
            self.last_answer = Some(answer);
        }

        for node in seen {
            if self.members.contains_key(&node) {
                continue;
            }
            if self.members.len() >= self.max_nodes {
                // A seed no answer has listed gives way to a node this one lists.
                let unlisted_seed = self
                    .members
                    .iter()
                    .find(|(_, absence)| absence.seeded)
                    .map(|(seed, _)| seed.clone());
                let Some(seed) = unlisted_seed else {
                    change.over_limit += 1;
                    continue;
                };
                self.members.remove(&seed);
                change.left.push(seed);
            }
            self.members.insert(node.clone(), Absence::default());
            change.joined.push(node);
        }
        change.members = self.members();
        change.leaving = self.leaving();
        change
    }

    /// True when `answer` dropped a member the last answer had and brought back a member the
    /// last answer lacked. A real change (a node leaving, another joining) brings new names,
    /// not known ones.
    fn rotates(&self, answer: &BTreeSet<String>) -> bool {
        let Some(last) = &self.last_answer else {
            return false;
        };
        let members: HashSet<String> = self
            .members
            .keys()
            .map(|member| member.to_ascii_lowercase())
            .collect();
        let known = |name: &String| members.contains(name);
        let dropped = last
            .iter()
            .any(|name| !answer.contains(name) && known(name));
        let returned = answer
            .iter()
            .any(|name| !last.contains(name) && known(name));
        dropped && returned
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

    /// Takes `nodes` as members before any answer lists them (libcluster's strategy state
    /// `meta`, a membership known from elsewhere). They are members like any other: kept while
    /// answers list them, removed by the same rules when they do not; but while no answer has
    /// listed one, it gives its place under `max_nodes` to a node an answer lists. Returns
    /// those added.
    pub fn seed(&mut self, nodes: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut added = Vec::new();
        for node in self.one_spelling_each(nodes) {
            if self.members.contains_key(&node) {
                continue;
            }
            if self.members.len() >= self.max_nodes {
                break;
            }
            self.members.insert(
                node.clone(),
                Absence {
                    seeded: true,
                    ..Absence::default()
                },
            );
            added.push(node);
        }
        added
    }

    pub fn observe_failure(&mut self, reason: &str) -> Change {
        self.failed_polls += 1;
        Change {
            members: self.members(),
            outage_started: (self.failed_polls == 1).then(|| reason.to_string()),
            // A failure says nothing new: who was on the way out still is.
            leaving: self.leaving(),
            ..Change::default()
        }
    }

    /// Members a complete answer lacked since one last listed them (seeds no answer listed
    /// are dialed until they leave).
    fn leaving(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, absence)| absence.answers > 0 && !absence.seeded)
            .map(|(node, _)| node.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_secs(10);

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Polls `every` apart, each a complete answer.
    struct Poller {
        m: Membership,
        now: Instant,
        every: Duration,
    }

    impl Poller {
        fn new(max_nodes: usize, every: Duration) -> Self {
            Self {
                m: Membership::new(max_nodes, DELAY),
                now: Instant::now(),
                every,
            }
        }

        fn answer(&mut self, list: &[&str]) -> Change {
            self.observe(names(list), Completeness::Complete)
        }

        fn partial(&mut self, list: &[&str]) -> Change {
            self.observe(names(list), Completeness::MaybePartial)
        }

        fn observe(&mut self, nodes: Vec<String>, completeness: Completeness) -> Change {
            self.now += self.every;
            self.m.observe_answer(nodes, completeness, self.now)
        }
    }

    #[test]
    fn joins_and_confirmed_leaves() {
        let mut p = Poller::new(10, Duration::from_secs(5));
        let c = p.answer(&["a", "b", "c"]);
        assert_eq!(c.joined, names(&["a", "b", "c"]));
        let c = p.answer(&["a", "b"]);
        assert!(c.left.is_empty(), "one missing answer is not enough");
        assert_eq!(c.members, names(&["a", "b", "c"]));
        let c = p.answer(&["a", "b"]);
        assert!(
            c.left.is_empty(),
            "missing for 5 s of the 10 s removal delay"
        );
        let c = p.answer(&["a", "b"]);
        assert_eq!(c.left, names(&["c"]));
        assert_eq!(c.members, names(&["a", "b"]));
    }

    #[test]
    fn leaving_lists_members_a_complete_answer_lacked_until_they_leave_or_return() {
        let mut p = Poller::new(10, Duration::from_secs(5));
        p.answer(&["a", "b", "c"]);
        // Left out of a possibly partial answer only: still worth dialing.
        assert!(p.partial(&["a"]).leaving.is_empty());
        let c = p.answer(&["a", "b"]);
        assert_eq!(c.leaving, names(&["c"]));
        // A partial answer lacking it too keeps it on its way out.
        assert_eq!(p.partial(&["a", "b"]).leaving, names(&["c"]));
        // Back in an answer: a member like any other again.
        assert!(p.answer(&["a", "b", "c"]).leaving.is_empty());
        p.answer(&["a", "b"]);
        p.answer(&["a", "b"]);
        let c = p.answer(&["a", "b"]);
        assert_eq!((c.left, c.leaving), (names(&["c"]), vec![]));
        // A failed poll changes nothing about who is leaving.
        p.answer(&["a", "b", "x"]);
        p.answer(&["a", "x"]);
        assert_eq!(p.m.observe_failure("timeout").leaving, names(&["b"]));
    }

    #[test]
    fn slow_polls_remove_after_two_answers_once_the_delay_passed() {
        let mut p = Poller::new(10, Duration::from_secs(30));
        p.answer(&["a", "b"]);
        assert!(p.answer(&["a"]).left.is_empty());
        assert_eq!(p.answer(&["a"]).left, names(&["b"]));
    }

    #[test]
    fn fast_polls_need_the_removal_delay_too() {
        let mut p = Poller::new(10, Duration::from_millis(500));
        p.answer(&["a", "b"]);
        // 20 answers without b span 9.5 s: still a member.
        for poll in 0..20 {
            assert!(p.answer(&["a"]).left.is_empty(), "poll {poll}");
        }
        assert_eq!(p.answer(&["a"]).left, names(&["b"]));
    }

    #[test]
    fn a_blip_shorter_than_the_delay_disconnects_nobody() {
        let mut p = Poller::new(10, Duration::from_millis(500));
        p.answer(&["a", "b"]);
        for _ in 0..10 {
            assert!(p.answer(&["a"]).left.is_empty());
        }
        // Back: the absence starts over.
        p.answer(&["a", "b"]);
        for _ in 0..19 {
            assert!(p.answer(&["a"]).left.is_empty());
        }
    }

    #[test]
    fn a_sudden_empty_answer_needs_confirmation() {
        let mut p = Poller::new(10, Duration::from_secs(5));
        p.answer(&["a", "b"]);
        let c = p.answer(&[]);
        assert!(c.left.is_empty());
        assert_eq!(c.members, names(&["a", "b"]));
        // Back on the next poll: nothing happened.
        let c = p.answer(&["a", "b"]);
        assert!(c.left.is_empty() && c.joined.is_empty());
        // Empty for long enough: they are gone.
        p.answer(&[]);
        p.answer(&[]);
        let c = p.answer(&[]);
        assert_eq!(c.left, names(&["a", "b"]));
    }

    #[test]
    fn partial_answers_add_but_never_remove() {
        let mut p = Poller::new(100, Duration::from_secs(5));
        p.answer(&["a", "b", "c"]);
        for _ in 0..50 {
            let c = p.partial(&["a"]);
            assert!(c.left.is_empty());
            assert_eq!(c.kept_missing, 2);
        }
        let c = p.partial(&["a", "d"]);
        assert_eq!(c.joined, names(&["d"]));
        assert_eq!(c.members, names(&["a", "b", "c", "d"]));
    }

    #[test]
    fn partial_answers_do_not_advance_an_absence() {
        let mut p = Poller::new(100, Duration::from_secs(5));
        p.answer(&["a", "b"]);
        p.answer(&["a"]);
        // Partial answers in between neither confirm nor reset b's absence...
        for _ in 0..5 {
            assert!(p.partial(&["a"]).left.is_empty());
        }
        // ...so the next complete answer without b is its second: b leaves.
        assert_eq!(p.answer(&["a"]).left, names(&["b"]));
    }

    #[test]
    fn a_shuffled_trimmed_answer_never_disconnects_anyone() {
        // Consul over UDP: a random 19 of 24 each time. Marked partial, nobody ever leaves.
        let all: Vec<String> = (0..24).map(|i| format!("n{i:02}")).collect();
        let mut p = Poller::new(100, Duration::from_millis(500));
        p.observe(all.clone(), Completeness::Complete);
        for poll in 0..1000usize {
            let subset: Vec<String> = all
                .iter()
                .cycle()
                .skip(poll * 7 % 24)
                .take(19)
                .cloned()
                .collect();
            let c = p.observe(subset, Completeness::MaybePartial);
            assert!(c.left.is_empty(), "poll {poll}");
            assert_eq!(c.members.len(), 24);
        }
    }

    /// A different `take` of `all` per poll, as a server under a record-count cap answers.
    fn rotating_subset(all: &[String], poll: usize, take: usize) -> Vec<String> {
        all.iter()
            .cycle()
            .skip(poll * 7 % all.len())
            .take(take)
            .cloned()
            .collect()
    }

    #[test]
    fn a_server_rotating_a_subset_under_a_count_cap_removes_nobody() {
        // Route 53 multivalue answers: 8 of 30, a different 8 each time, no TC, over TCP too.
        let all: Vec<String> = (0..30).map(|i| format!("n{i:02}")).collect();
        let mut p = Poller::new(100, Duration::from_secs(5));
        p.observe(all.clone(), Completeness::Complete);
        let mut rotating = 0;
        for poll in 0..500 {
            let c = p.observe(rotating_subset(&all, poll, 8), Completeness::Complete);
            assert!(c.left.is_empty(), "poll {poll}: {:?}", c.left);
            assert_eq!(c.members.len(), 30);
            rotating += usize::from(c.rotating);
        }
        assert!(rotating > 400, "rotation seen on {rotating} of 500 polls");
    }

    #[test]
    fn a_leave_needs_two_answers_that_agree() {
        let mut p = Poller::new(10, Duration::from_secs(5));
        p.answer(&["a", "b", "c"]);
        // c is gone, but the answers disagree about b (it flaps): nobody is removed...
        for _ in 0..5 {
            assert!(p.answer(&["a", "b"]).left.is_empty());
            let c = p.answer(&["a"]);
            assert!(c.left.is_empty(), "{c:?}");
            assert_eq!(c.kept_missing, 2);
        }
        // ...until two answers agree: then c leaves, and b once it has been missing long enough.
        assert_eq!(p.answer(&["a", "b"]).left, Vec::<String>::new());
        assert_eq!(p.answer(&["a", "b"]).left, names(&["c"]));
        assert!(!p.answer(&["a", "b"]).rotating);
    }

    #[test]
    fn two_stable_names_restarting_at_once_is_no_rotation() {
        let mut p = Poller::new(10, Duration::from_secs(5));
        p.answer(&["a", "b", "c"]);
        p.answer(&["a", "c"]);
        // b is back as c goes down for its restart: once, not a pattern.
        assert!(!p.answer(&["a", "b"]).rotating);
        assert!(!p.answer(&["a", "b", "c"]).rotating);
    }

    #[test]
    fn a_join_while_another_leaves_is_no_rotation() {
        let mut p = Poller::new(10, Duration::from_secs(5));
        p.answer(&["a", "b"]);
        let c = p.answer(&["a", "new"]);
        assert!(
            !c.rotating,
            "a new name is a join, not a member coming back"
        );
        assert_eq!(c.joined, names(&["new"]));
    }

    #[test]
    fn failures_keep_the_last_membership_and_report_the_outage_once() {
        let mut p = Poller::new(10, Duration::from_secs(5));
        p.answer(&["a"]);
        let first = p.m.observe_failure("timeout");
        assert_eq!(first.outage_started.as_deref(), Some("timeout"));
        assert_eq!(first.members, names(&["a"]));
        for _ in 0..20 {
            let c = p.m.observe_failure("timeout");
            assert_eq!(c.outage_started, None);
            assert!(c.left.is_empty());
            assert_eq!(c.members, names(&["a"]));
        }
        let c = p.answer(&["a"]);
        assert_eq!(c.outage_ended, Some(21));
        assert_eq!(p.answer(&["a"]).outage_ended, None);
    }

    #[test]
    fn a_flapping_record_never_leaves() {
        let mut p = Poller::new(10, Duration::from_secs(5));
        for poll in 0..20 {
            let c = if poll % 2 == 0 {
                p.answer(&["a", "flap"])
            } else {
                p.answer(&["a"])
            };
            assert!(c.left.is_empty(), "poll {poll}");
        }
    }

    #[test]
    fn case_variants_are_one_node() {
        let mut p = Poller::new(10, Duration::from_secs(5));
        // A new node: the all-lowercase spelling wins, whatever the order.
        let c = p.answer(&["N1@s", "n1@s", "N2@s", "n2@S"]);
        assert_eq!(c.members, names(&["N2@s", "n1@s"]));
        // A member keeps its spelling, and a variant alone counts as the member being seen.
        for _ in 0..5 {
            let c = p.answer(&["N1@S", "n2@s"]);
            assert!(c.joined.is_empty() && c.left.is_empty(), "{c:?}");
            assert_eq!(c.members, names(&["N2@s", "n1@s"]));
        }
    }

    #[test]
    fn max_nodes_caps_members_and_keeps_known_ones() {
        let mut p = Poller::new(3, Duration::from_secs(5));
        p.answer(&["m1", "m2"]);
        let flood: Vec<String> = (0..1000)
            .map(|i| format!("x{i:04}"))
            .chain(names(&["m1", "m2"]))
            .collect();
        let c = p.observe(flood, Completeness::Complete);
        assert_eq!(c.members.len(), 3);
        assert!(c.members.contains(&"m1".to_string()) && c.members.contains(&"m2".to_string()));
        assert_eq!(c.over_limit, 999);
    }

    #[test]
    fn seeded_members_follow_the_removal_rules() {
        let mut p = Poller::new(2, Duration::from_secs(6));
        assert_eq!(p.m.seed(names(&["a", "B", "b", "c"])), names(&["a", "b"]));
        assert_eq!(p.m.members(), names(&["a", "b"]));
        // Listed: kept, and not reported as joined (it was a member already).
        let c = p.answer(&["a"]);
        assert!(c.joined.is_empty() && c.left.is_empty(), "{c:?}");
        assert_eq!(c.kept_missing, 1);
        assert!(
            c.leaving.is_empty(),
            "a seed is dialed until it leaves: {c:?}"
        );
        // Missing from two agreeing complete answers 10 s apart: gone, like any member.
        let c = p.answer(&["a"]);
        assert!(c.left.is_empty(), "{c:?}");
        let c = p.answer(&["a"]);
        assert_eq!(c.left, names(&["b"]));
        // A failure never removes a seeded member.
        let mut p = Poller::new(10, Duration::from_secs(60));
        p.m.seed(names(&["x"]));
        for _ in 0..3 {
            assert_eq!(p.m.observe_failure("timeout").members, names(&["x"]));
        }
    }

    #[test]
    fn a_seed_no_answer_listed_gives_way_to_a_listed_node_at_max_nodes() {
        let mut m = Membership::new(2, Duration::ZERO);
        assert_eq!(
            m.seed(["s1@h".to_string(), "s2@h".to_string()]),
            ["s1@h", "s2@h"]
        );
        let now = Instant::now();
        // s1 is listed (no longer a bare seed); a@h takes s2's place.
        let c = m.observe_answer(
            ["s1@h".to_string(), "a@h".to_string()],
            Completeness::Complete,
            now,
        );
        assert_eq!(c.members, ["a@h", "s1@h"]);
        assert_eq!(c.left, ["s2@h"]);
        assert_eq!(c.over_limit, 0);
        // A listed seed keeps its place like any member.
        let c = m.observe_answer(
            ["s1@h".to_string(), "a@h".to_string(), "b@h".to_string()],
            Completeness::Complete,
            now,
        );
        assert_eq!(c.members, ["a@h", "s1@h"]);
        assert_eq!(c.over_limit, 1);
    }
}
