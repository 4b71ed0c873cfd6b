//! A linearizability checker for one key's history, after Wing & Gong and
//! Lowe, as Porcupine (etcd's robustness suite) does it: search for an
//! order of the operations that respects real time and the model of a
//! register, remembering each (set of operations linearized, state) pair
//! already tried, so the search never explores it twice.
//!
//! An operation whose outcome is unknown (the connection broke, the server
//! died) returns at infinity: it may take effect anywhere after its call,
//! or, linearized at the very end, never at all.
//!
//! Per key: the store's keys are independent registers, so a history is
//! linearizable when each key's is (P-compositionality). A batch touches
//! several keys at one instant; split per key it is checked per key, which
//! catches every stale read, lost write and wrong CAS on any key, though
//! not an anomaly only visible across keys.

use std::collections::HashSet;

/// A key's value; `None`: absent.
pub type Value = Option<String>;

/// What an operation on one key did, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A read that found `value`.
    Read {
        value: Value,
    },
    Put {
        value: String,
        outcome: Put,
    },
    Delete {
        outcome: Delete,
    },
    /// Writes `new` if the key holds `expected` (`None`: absent). A
    /// conditional write (`If-Match`, `If-None-Match: *`) is one too.
    Cas {
        expected: Value,
        new: String,
        outcome: Cas,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// 201: the key did not exist.
    Created,
    /// 204: the key existed.
    Replaced,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delete {
    Deleted,
    NotFound,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cas {
    Applied,
    /// The key did not hold `expected`; nothing was written.
    Refused,
    Unknown,
}

impl Op {
    /// Whether the operation can take effect in `state`, and the state
    /// after it.
    fn step(&self, state: &Value) -> Option<Value> {
        match self {
            Self::Read { value } => (value == state).then(|| state.clone()),
            Self::Put { value, outcome } => {
                let fits = match outcome {
                    Put::Created => state.is_none(),
                    Put::Replaced => state.is_some(),
                    Put::Unknown => true,
                };
                fits.then(|| Some(value.clone()))
            }
            Self::Delete { outcome } => match outcome {
                Delete::Deleted => state.is_some().then_some(None),
                Delete::NotFound => state.is_none().then_some(None),
                Delete::Unknown => Some(None),
            },
            Self::Cas {
                expected,
                new,
                outcome,
            } => {
                let holds = expected == state;
                match outcome {
                    Cas::Applied => holds.then(|| Some(new.clone())),
                    Cas::Refused => (!holds).then(|| state.clone()),
                    Cas::Unknown if holds => Some(Some(new.clone())),
                    Cas::Unknown => Some(state.clone()),
                }
            }
        }
    }
}

/// One operation of a history: when its client called it and when the
/// answer came (`None`: never, the outcome is unknown).
#[derive(Clone, Debug)]
pub struct Entry {
    pub call: u64,
    pub ret: Option<u64>,
    pub op: Op,
}

/// Why a history is not linearizable: the longest prefix of calls the
/// search could order, and the operation it could not place next.
#[derive(Debug)]
pub struct Failure {
    pub linearized: usize,
    pub total: usize,
    pub stuck_at: Option<Entry>,
}

/// A node of the search's list of calls and returns in time order.
#[derive(Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    /// The operation's index; for a call, its return's node too.
    op: usize,
    ret_node: Option<usize>,
}

const HEAD: usize = 0;
const NONE: usize = usize::MAX;

/// Checks one key's history against a register that starts at `initial`.
pub fn check(history: &[Entry], initial: &Value) -> Result<(), Failure> {
    // Calls before returns at the same instant: concurrent, the kinder
    // reading.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(history.len() * 2);
    for (op, entry) in history.iter().enumerate() {
        events.push((entry.call, false, op));
        events.push((entry.ret.unwrap_or(u64::MAX), true, op));
    }
    events.sort_unstable();
    let mut nodes = vec![Node {
        prev: NONE,
        next: NONE,
        op: NONE,
        ret_node: None,
    }];
    let mut returns = vec![0usize; history.len()];
    for &(_, is_return, op) in &events {
        let index = nodes.len();
        nodes.push(Node {
            prev: index - 1,
            next: NONE,
            op,
            ret_node: None,
        });
        nodes[index - 1].next = index;
        if is_return {
            returns[op] = index;
        }
    }
    for (index, node) in nodes.iter_mut().enumerate().skip(1) {
        if returns[node.op] != index {
            node.ret_node = Some(returns[node.op]);
        }
    }

    // States are interned: the memo holds small numbers, not strings.
    let mut states: Vec<Value> = vec![initial.clone()];
    let intern = |states: &mut Vec<Value>, value: Value| -> u32 {
        match states.iter().position(|known| *known == value) {
            Some(at) => at as u32,
            None => {
                states.push(value);
                (states.len() - 1) as u32
            }
        }
    };
    let words = history.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, u32)> = HashSet::new();
    let mut calls: Vec<(usize, u32)> = Vec::new();
    let mut state = 0u32;
    let mut best = 0;
    let mut entry = nodes[HEAD].next;
    while nodes[HEAD].next != NONE {
        let node = nodes[entry];
        match node.ret_node {
            Some(ret) => {
                let op = node.op;
                let after = history[op].op.step(&states[state as usize]);
                let mut lifted = false;
                if let Some(after) = after {
                    let after = intern(&mut states, after);
                    linearized[op / 64] |= 1 << (op % 64);
                    if seen.insert((linearized.clone(), after)) {
                        calls.push((entry, state));
                        best = best.max(calls.len());
                        state = after;
                        lift(&mut nodes, entry, ret);
                        entry = nodes[HEAD].next;
                        lifted = true;
                    } else {
                        linearized[op / 64] &= !(1 << (op % 64));
                    }
                }
                if !lifted {
                    entry = node.next;
                }
            }
            None => {
                let Some((call, before)) = calls.pop() else {
                    return Err(Failure {
                        linearized: best,
                        total: history.len(),
                        stuck_at: Some(history[node.op].clone()),
                    });
                };
                let op = nodes[call].op;
                linearized[op / 64] &= !(1 << (op % 64));
                state = before;
                let ret = nodes[call].ret_node.unwrap_or(NONE);
                unlift(&mut nodes, call, ret);
                entry = nodes[call].next;
            }
        }
    }
    Ok(())
}

/// Takes a call and its return out of the list.
fn lift(nodes: &mut [Node], call: usize, ret: usize) {
    for index in [call, ret] {
        let Node { prev, next, .. } = nodes[index];
        nodes[prev].next = next;
        if next != NONE {
            nodes[next].prev = prev;
        }
    }
}

/// Puts them back, in the reverse order.
fn unlift(nodes: &mut [Node], call: usize, ret: usize) {
    for index in [ret, call] {
        let Node { prev, next, .. } = nodes[index];
        nodes[prev].next = index;
        if next != NONE {
            nodes[next].prev = index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(call: u64, ret: u64, op: Op) -> Entry {
        Entry {
            call,
            ret: Some(ret),
            op,
        }
    }

    fn unknown(call: u64, op: Op) -> Entry {
        Entry {
            call,
            ret: None,
            op,
        }
    }

    fn read(value: Option<&str>) -> Op {
        Op::Read {
            value: value.map(str::to_owned),
        }
    }

    fn put(value: &str, outcome: Put) -> Op {
        Op::Put {
            value: value.to_owned(),
            outcome,
        }
    }

    fn cas(expected: Option<&str>, new: &str, outcome: Cas) -> Op {
        Op::Cas {
            expected: expected.map(str::to_owned),
            new: new.to_owned(),
            outcome,
        }
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_rejected() {
        let history = [
            at(0, 10, put("a", Put::Created)),
            at(20, 30, put("b", Put::Replaced)),
            at(40, 50, read(Some("a"))),
        ];
        assert!(check(&history, &None).is_err());
    }

    #[test]
    fn a_lost_acknowledged_write_is_rejected() {
        let history = [
            at(0, 10, put("a", Put::Created)),
            at(20, 30, put("b", Put::Replaced)),
            at(40, 50, read(Some("a"))),
            at(60, 70, read(Some("a"))),
        ];
        assert!(check(&history, &None).is_err());
        let deleted = [
            at(0, 10, put("a", Put::Created)),
            at(
                20,
                30,
                Op::Delete {
                    outcome: Delete::Deleted,
                },
            ),
            at(40, 50, read(Some("a"))),
        ];
        assert!(check(&deleted, &None).is_err());
    }

    #[test]
    fn a_cas_on_a_wrong_value_is_rejected() {
        let history = [
            at(0, 10, put("a", Put::Created)),
            at(20, 30, cas(Some("b"), "c", Cas::Applied)),
        ];
        assert!(check(&history, &None).is_err());
        let refused_though_it_held = [
            at(0, 10, put("a", Put::Created)),
            at(20, 30, cas(Some("a"), "c", Cas::Refused)),
        ];
        assert!(check(&refused_though_it_held, &None).is_err());
    }

    #[test]
    fn a_create_on_an_existing_key_is_rejected() {
        let history = [
            at(0, 10, put("a", Put::Created)),
            at(20, 30, put("b", Put::Created)),
        ];
        assert!(check(&history, &None).is_err());
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        let history = [
            at(0, 100, put("a", Put::Created)),
            at(10, 90, put("b", Put::Unknown)),
            at(20, 30, read(Some("b"))),
            at(40, 50, read(Some("a"))),
        ];
        // b, then a (created? no: b made it exist): must be refused.
        assert!(check(&history, &None).is_err());
        let history = [
            at(0, 100, put("a", Put::Replaced)),
            at(10, 90, put("b", Put::Created)),
            at(20, 30, read(Some("b"))),
            at(40, 50, read(Some("a"))),
        ];
        assert!(check(&history, &None).is_ok());
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never() {
        let late = [
            unknown(0, put("a", Put::Unknown)),
            at(10, 20, read(None)),
            at(30, 40, read(Some("a"))),
        ];
        assert!(check(&late, &None).is_ok());
        let never = [
            unknown(0, put("a", Put::Unknown)),
            at(10, 20, read(None)),
            at(30, 40, put("b", Put::Created)),
            at(50, 60, read(Some("b"))),
        ];
        assert!(check(&never, &None).is_ok());
        // Once a later write is seen, the unknown one cannot come back.
        let back_again = [
            unknown(0, put("a", Put::Unknown)),
            at(10, 20, read(Some("a"))),
            at(30, 40, put("b", Put::Replaced)),
            at(50, 60, read(Some("a"))),
        ];
        assert!(check(&back_again, &None).is_err());
    }

    #[test]
    fn a_long_overlapping_history_is_checked_and_one_stale_read_found() {
        // Each put overlaps the next three, and each read the puts after
        // its own: linearizable, as each later put may follow the read.
        let mut history = Vec::new();
        for step in 0..400u64 {
            let value = format!("v{step}");
            let outcome = if step == 0 {
                Put::Created
            } else {
                Put::Replaced
            };
            history.push(at(step * 10, step * 10 + 35, put(&value, outcome)));
            history.push(at(step * 10 + 36, step * 10 + 37, read(Some(&value))));
        }
        assert!(check(&history, &None).is_ok());
        // A read of v100 long after v200's put ended.
        history.push(at(3000, 3001, read(Some("v100"))));
        let failure = check(&history, &None).expect_err("a stale read");
        assert!(failure.linearized < failure.total);
    }
}
