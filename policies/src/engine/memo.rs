//! Decisions remembered on prepared entities. A decision is a function of
//! the policies, the entities, the action and the context values the
//! policies read; which context attributes any policy of a snapshot reads
//! is found once, when the snapshot is assembled. Requests of one caller
//! that differ only in facts no policy reads (the path, the client
//! address, the time, unless a policy reads them) share one evaluation.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use cedar_policy::PolicySet;
use serde_json::Value;

use super::{Fact, Outcome};

/// Decisions kept per prepared set: one per action, policy snapshot and
/// distinct read facts a caller met in the set's short life.
const CAPACITY: usize = 8;
/// Read facts longer than this (a path a policy reads, say) are not
/// remembered: a set's decisions stay within a few KiB whatever callers send.
const MAX_FACTS_LEN: usize = 256;

/// A snapshot's identity, unique in the process: a decision remembered
/// under one snapshot is never taken for another's.
pub(super) fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The context attributes a snapshot's policies read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ContextReads {
    /// These attributes, each read as `context.name` or tested with `has`.
    Only(BTreeSet<String>),
    /// The context in another way (as a whole record): every fact counts.
    All,
}

impl ContextReads {
    /// What `policies` (static, linked and templates) read from the
    /// context; a policy that cannot be written out reads it all.
    pub(super) fn of(policies: &PolicySet) -> Self {
        let mut names = BTreeSet::new();
        let written =
            policies.policies().map(|p| p.to_json().ok()).chain(policies.templates().map(|t| t.to_json().ok()));
        for json in written {
            match json {
                Some(json) if reads(&json, &mut names) => {}
                _ => return Self::All,
            }
        }
        Self::Only(names)
    }

    pub(super) fn covers(&self, name: &str) -> bool {
        match self {
            Self::Only(names) => names.contains(name),
            Self::All => true,
        }
    }
}

fn is_context(value: &Value) -> bool {
    value.as_object().is_some_and(|o| o.len() == 1 && o.get("Var").and_then(Value::as_str) == Some("context"))
}

/// Adds the context attributes `json` (a policy in Cedar's JSON form)
/// reads to `names`; false when it uses the context other than by
/// attribute.
fn reads(json: &Value, names: &mut BTreeSet<String>) -> bool {
    match json {
        Value::Object(object) => {
            if is_context(json) {
                return false;
            }
            for (key, value) in object {
                if key == "." || key == "has" {
                    let access = value.as_object();
                    let left = access.and_then(|a| a.get("left"));
                    if let (Some(left), Some(attr)) = (left, access.and_then(|a| a.get("attr")))
                        && is_context(left)
                    {
                        match attr.as_str() {
                            Some(attr) => names.insert(attr.to_owned()),
                            None => return false,
                        };
                        continue;
                    }
                }
                if !reads(value, names) {
                    return false;
                }
            }
            true
        }
        Value::Array(items) => items.iter().all(|item| reads(item, names)),
        _ => true,
    }
}

/// A fact as remembered.
#[derive(Debug)]
enum Held {
    Str(Box<str>),
    Bool(bool),
    Long(i64),
}

impl Held {
    fn of(fact: Fact<'_>) -> Self {
        match fact {
            Fact::Str(s) => Held::Str(s.into()),
            Fact::Bool(b) => Held::Bool(b),
            Fact::Long(n) => Held::Long(n),
        }
    }

    fn is(&self, fact: Fact<'_>) -> bool {
        match (self, fact) {
            (Held::Str(a), Fact::Str(b)) => **a == *b,
            (Held::Bool(a), Fact::Bool(b)) => *a == b,
            (Held::Long(a), Fact::Long(b)) => *a == b,
            _ => false,
        }
    }
}

/// What a prepared evaluation asks, as decisions are remembered by it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Asked<'a> {
    /// The snapshot's generation.
    pub generation: u64,
    pub action: &'a str,
    /// What the snapshot's policies read from the context.
    pub reads: &'a ContextReads,
    pub context: &'a [(&'a str, Fact<'a>)],
}

impl<'a> Asked<'a> {
    /// The facts of the context the policies read, in its order.
    fn read(self) -> impl Iterator<Item = &'a (&'a str, Fact<'a>)> {
        self.context.iter().filter(move |(name, _)| self.reads.covers(name))
    }
}

#[derive(Debug)]
struct Remembered {
    generation: u64,
    action: Box<str>,
    /// The read facts of the context, in its order.
    facts: Vec<(Box<str>, Held)>,
    outcome: Outcome,
}

impl Remembered {
    fn answers(&self, asked: Asked<'_>) -> bool {
        if self.generation != asked.generation || *self.action != *asked.action {
            return false;
        }
        let mut held = self.facts.iter();
        asked.read().all(|(name, fact)| {
            held.next().is_some_and(|(held_name, held_fact)| **held_name == **name && held_fact.is(*fact))
        }) && held.next().is_none()
    }
}

/// The decisions made on one prepared set.
#[derive(Debug, Default)]
pub(super) struct Memo {
    decisions: Mutex<Vec<Remembered>>,
}

impl Memo {
    /// The outcome remembered for this question.
    pub(super) fn recall(&self, asked: Asked<'_>) -> Option<Outcome> {
        let decisions = self.decisions.lock().ok()?;
        decisions.iter().find(|d| d.answers(asked)).map(|d| d.outcome.clone())
    }

    /// Remembers `outcome`, forgetting the oldest decision when full.
    pub(super) fn remember(&self, asked: Asked<'_>, outcome: &Outcome) {
        let len: usize =
            asked.read().map(|(name, fact)| name.len() + if let Fact::Str(s) = fact { s.len() } else { 8 }).sum();
        if len > MAX_FACTS_LEN {
            return;
        }
        let Ok(mut decisions) = self.decisions.lock() else { return };
        if decisions.len() >= CAPACITY {
            decisions.remove(0);
        }
        decisions.push(Remembered {
            generation: asked.generation,
            action: asked.action.into(),
            facts: asked.read().map(|(name, fact)| ((*name).into(), Held::of(*fact))).collect(),
            outcome: outcome.clone(),
        });
    }
}
