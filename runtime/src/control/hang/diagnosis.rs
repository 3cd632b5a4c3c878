//! The hang table: every node's answer to `Probe` in one table, and the culprit named.
//!
//! The culprit is found by following who waits on whom: from every node that still owes the
//! stuck round's report, follow the peer it is blocked on until a node that waits on nobody
//! (it is busy, or idle while others wait on it) or that did not answer. Among several such
//! nodes, one that did not answer comes first, then the one furthest behind (lowest round),
//! then the one whose operation has run longest. When everybody waits on somebody (a cycle), the
//! node furthest behind is named.

use super::activity::ThreadDoing;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// One node as the coordinator saw it during the diagnosis.
#[derive(Debug, Clone)]
pub(crate) struct NodeAnswer {
    /// Node name.
    pub node: String,
    /// It had not reported the stuck round.
    pub owes: bool,
    /// Its threads, or `None` when it did not answer within the bound.
    pub threads: Option<Vec<ThreadDoing>>,
}

/// The outcome: who, doing what, and the table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Diagnosis {
    /// The culprit.
    pub culprit: String,
    /// What it is doing (`no answer` when it did not answer).
    pub operation: String,
    /// Why it was named.
    pub why: String,
    /// The whole table (with the culprit line at the end).
    pub table: String,
}

impl NodeAnswer {
    fn waits_on(&self) -> Option<&str> {
        self.threads
            .as_ref()?
            .iter()
            .find_map(|t| t.waiting_on.as_deref())
    }

    /// How far it got: the highest round any of its threads is in.
    fn round(&self) -> u64 {
        self.threads
            .as_ref()
            .and_then(|t| t.iter().map(|t| t.round).max())
            .unwrap_or(0)
    }

    /// Its longest-running busy thread, else its first thread.
    fn main_thread(&self) -> Option<&ThreadDoing> {
        let threads = self.threads.as_ref()?;
        threads
            .iter()
            .filter(|t| t.busy && t.waiting_on.is_none())
            .max_by_key(|t| t.for_ms)
            .or_else(|| threads.first())
    }
}

/// Name the culprit of round `round`, stuck for `waited_ms`, from every node's answer.
pub(crate) fn diagnose(round: u64, waited_ms: u64, nodes: &[NodeAnswer]) -> Diagnosis {
    let by_name: BTreeMap<&str, &NodeAnswer> = nodes.iter().map(|n| (n.node.as_str(), n)).collect();
    let mut waited_by: BTreeMap<&str, usize> = BTreeMap::new();
    for n in nodes {
        if let Some(p) = n.waits_on() {
            *waited_by.entry(p).or_default() += 1;
        }
    }
    let mut ends: BTreeSet<&str> = BTreeSet::new();
    let starts: Vec<&NodeAnswer> = match nodes.iter().filter(|n| n.owes).count() {
        0 => nodes.iter().collect(),
        _ => nodes.iter().filter(|n| n.owes).collect(),
    };
    for start in starts {
        let mut seen = BTreeSet::new();
        let mut at = start;
        while seen.insert(at.node.as_str()) {
            match at.waits_on().and_then(|p| by_name.get(p)) {
                Some(next) => at = next,
                None => {
                    ends.insert(at.node.as_str());
                    break;
                }
            }
        }
    }
    let key = |n: &&NodeAnswer| {
        (
            n.threads.is_some(),
            n.round(),
            std::cmp::Reverse(n.main_thread().map_or(0, |t| t.for_ms)),
        )
    };
    let cycle = ends.is_empty();
    let culprit = if cycle {
        nodes.iter().min_by_key(key)
    } else {
        nodes
            .iter()
            .filter(|n| ends.contains(n.node.as_str()))
            .min_by_key(key)
    };
    let Some(c) = culprit else {
        return Diagnosis {
            culprit: String::new(),
            operation: "no members".into(),
            why: "no member to ask".into(),
            table: format!("round {round} made no progress for {waited_ms} ms; no members"),
        };
    };
    let waiters = waited_by.get(c.node.as_str()).copied().unwrap_or(0);
    let (operation, why) = match c.main_thread() {
        None => (
            "no answer".to_string(),
            format!("did not answer the probe; {waiters} node(s) wait on it"),
        ),
        Some(t) => {
            let why = if cycle {
                format!(
                    "every node waits on another; it is furthest behind (round {})",
                    c.round()
                )
            } else {
                format!(
                    "waits on nobody, {} for {} ms in round {}; {waiters} node(s) wait on it",
                    t.operation, t.for_ms, t.round
                )
            };
            (t.operation.clone(), why)
        }
    };
    Diagnosis {
        culprit: c.node.clone(),
        operation,
        table: table(round, waited_ms, nodes, &c.node, &why),
        why,
    }
}

fn table(round: u64, waited_ms: u64, nodes: &[NodeAnswer], culprit: &str, why: &str) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "node",
        "thread",
        "operation",
        "round",
        "seq",
        "waiting on",
        "for ms",
    ]
    .map(String::from)];
    for n in nodes {
        let owes = if n.owes { " *" } else { "" };
        match &n.threads {
            None => rows.push([
                format!("{}{owes}", n.node),
                "-".into(),
                "no answer".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]),
            Some(threads) => {
                for t in threads {
                    rows.push([
                        format!("{}{owes}", n.node),
                        t.thread.clone(),
                        t.operation.clone(),
                        t.round.to_string(),
                        t.seq.map_or("-".into(), |s| s.to_string()),
                        t.waiting_on.clone().unwrap_or_else(|| "-".into()),
                        t.for_ms.to_string(),
                    ]);
                }
            }
        }
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "hang diagnosis: round {round} made no progress for {waited_ms} ms (* = owes its report)\n"
    );
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
    }
    let _ = write!(out, "culprit: {culprit} ({why})");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(
        thread: &str,
        op: &str,
        round: u64,
        on: Option<&str>,
        ms: u64,
        busy: bool,
    ) -> ThreadDoing {
        ThreadDoing {
            thread: thread.into(),
            operation: op.into(),
            round,
            seq: on.map(|_| 12),
            waiting_on: on.map(String::from),
            for_ms: ms,
            busy,
        }
    }

    fn stalled_pair() -> Vec<NodeAnswer> {
        vec![
            NodeAnswer {
                node: "w0".into(),
                owes: true,
                threads: Some(vec![
                    line(
                        "compute",
                        "waiting for the averaged gradient",
                        5,
                        None,
                        3000,
                        false,
                    ),
                    line(
                        "aggregate",
                        "allreduce bucket 0 / recv",
                        5,
                        Some("w1"),
                        3000,
                        true,
                    ),
                ]),
            },
            NodeAnswer {
                node: "w1".into(),
                owes: true,
                threads: Some(vec![
                    line("compute", "forward_backward", 5, None, 3100, true),
                    line("aggregate", "idle", 4, None, 3200, false),
                ]),
            },
        ]
    }

    #[test]
    fn the_node_nobody_can_blame_further_is_the_culprit() {
        let d = diagnose(5, 3000, &stalled_pair());
        assert_eq!(d.culprit, "w1");
        assert_eq!(d.operation, "forward_backward");
        assert!(d.table.contains("culprit: w1"), "{}", d.table);
        assert!(d.table.contains("allreduce bucket 0 / recv"), "{}", d.table);
    }

    #[test]
    fn a_node_that_does_not_answer_is_named() {
        let mut nodes = stalled_pair();
        nodes[1].threads = None;
        let d = diagnose(5, 3000, &nodes);
        assert_eq!(
            (d.culprit.as_str(), d.operation.as_str()),
            ("w1", "no answer")
        );
    }

    #[test]
    fn in_a_cycle_the_node_furthest_behind_is_named() {
        let nodes = vec![
            NodeAnswer {
                node: "a".into(),
                owes: true,
                threads: Some(vec![line(
                    "aggregate",
                    "allreduce bucket 1 / recv",
                    7,
                    Some("b"),
                    10,
                    true,
                )]),
            },
            NodeAnswer {
                node: "b".into(),
                owes: true,
                threads: Some(vec![line(
                    "aggregate",
                    "allreduce bucket 0 / recv",
                    6,
                    Some("a"),
                    10,
                    true,
                )]),
            },
        ];
        assert_eq!(diagnose(6, 10, &nodes).culprit, "b");
    }

    fn node(name: &str, owes: bool, threads: Vec<ThreadDoing>) -> NodeAnswer {
        NodeAnswer {
            node: name.into(),
            owes,
            threads: Some(threads),
        }
    }

    fn recv_from(peer: &str, round: u64) -> ThreadDoing {
        line(
            "aggregate",
            "allreduce bucket 0 / recv",
            round,
            Some(peer),
            500,
            true,
        )
    }

    #[test]
    fn waits_are_followed_to_the_end_of_the_chain() {
        // a waits on b, b on c; c computes. c is named, not b.
        let nodes = vec![
            node("a", true, vec![recv_from("b", 3)]),
            node("b", true, vec![recv_from("c", 3)]),
            node(
                "c",
                false,
                vec![line("compute", "forward_backward", 3, None, 900, true)],
            ),
        ];
        let d = diagnose(3, 2000, &nodes);
        assert_eq!(
            (d.culprit.as_str(), d.operation.as_str()),
            ("c", "forward_backward")
        );
        assert!(d.why.contains("waits on nobody"), "{}", d.why);
        assert!(d.why.contains("1 node(s) wait on it"), "{}", d.why);
    }

    #[test]
    fn a_silent_node_comes_before_one_further_behind() {
        // Two ends: b is busy in an older round, c did not answer. The silent one is named.
        let nodes = vec![
            node("a", true, vec![recv_from("b", 8)]),
            node(
                "b",
                false,
                vec![line("compute", "forward_backward", 7, None, 50, true)],
            ),
            NodeAnswer {
                node: "c".into(),
                owes: true,
                threads: None,
            },
        ];
        let d = diagnose(8, 2000, &nodes);
        assert_eq!(
            (d.culprit.as_str(), d.operation.as_str()),
            ("c", "no answer")
        );
        assert!(d.why.contains("did not answer the probe"), "{}", d.why);
    }

    #[test]
    fn among_busy_ends_the_lowest_round_then_the_longest_operation_is_named() {
        let busy = |ms| line("compute", "forward_backward", 4, None, ms, true);
        let nodes = vec![
            node("a", true, vec![busy(100)]),
            node("b", true, vec![busy(700)]),
            node(
                "c",
                true,
                vec![line("compute", "forward_backward", 5, None, 9000, true)],
            ),
        ];
        // a and b are both in round 4 (c is ahead); b has run longest.
        assert_eq!(diagnose(4, 1000, &nodes).culprit, "b");
    }

    #[test]
    fn when_nobody_owes_the_report_every_node_is_a_start() {
        let nodes = vec![
            node("a", false, vec![recv_from("b", 2)]),
            node(
                "b",
                false,
                vec![line("compute", "evaluate", 2, None, 40, true)],
            ),
        ];
        assert_eq!(diagnose(2, 500, &nodes).culprit, "b");
    }

    #[test]
    fn a_wait_on_a_node_outside_the_table_ends_there() {
        // a waits on a peer that is not a member (a parameter server that left): a is named.
        let nodes = vec![node("a", true, vec![recv_from("gone", 1)])];
        let d = diagnose(1, 100, &nodes);
        assert_eq!(d.culprit, "a");
    }

    #[test]
    fn no_members_is_said_plainly() {
        let d = diagnose(9, 100, &[]);
        assert_eq!(
            (d.culprit.as_str(), d.operation.as_str()),
            ("", "no members")
        );
        assert!(
            d.table.contains("round 9 made no progress for 100 ms"),
            "{}",
            d.table
        );
    }

    #[test]
    fn the_table_marks_who_owes_and_lines_up_its_columns() {
        let d = diagnose(5, 3000, &stalled_pair());
        let lines: Vec<&str> = d.table.lines().collect();
        assert!(
            lines[0].starts_with("hang diagnosis: round 5"),
            "{}",
            d.table
        );
        assert!(lines[1].trim_start().starts_with("node"), "{}", d.table);
        // Header, two threads per node, and the culprit line.
        assert_eq!(lines.len(), 1 + 1 + 4 + 1, "{}", d.table);
        assert!(lines[2].trim_start().starts_with("w0 *"), "{}", d.table);
        let col = |l: &str| l.find("compute").or_else(|| l.find("aggregate"));
        assert_eq!(col(lines[2]), col(lines[4]), "{}", d.table);
        assert!(lines[6].starts_with("culprit: w1 ("), "{}", d.table);
    }
}
