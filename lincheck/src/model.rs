//! The sequential specification: one key is a register whose state is
//! `Option<value>`, and each operation's answer and next state follow
//! cellkv's object rules (`cell/src/objects.rs` `decide`). Generic over the
//! value type so the checker can run it on its own dense value indexes.

use crate::history::{Input, Output, Precondition, ValueId};

/// A precondition over values of type `V`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Cond<V> {
    None,
    IfAbsent,
    IfMatch(V),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum In<V> {
    Get,
    Put(V, Cond<V>),
    Delete(Cond<V>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Out<V> {
    Value(Option<V>),
    Stored,
    Deleted,
    NotFound,
    PreconditionFailed,
}

fn holds<V: Copy + Eq>(cond: Cond<V>, state: Option<V>) -> bool {
    match cond {
        Cond::None => true,
        Cond::IfAbsent => state.is_none(),
        Cond::IfMatch(v) => state == Some(v),
    }
}

/// The answer and the next state of `input` applied to `state`.
pub(crate) fn apply<V: Copy + Eq>(state: Option<V>, input: In<V>) -> (Out<V>, Option<V>) {
    match input {
        In::Get => (Out::Value(state), state),
        In::Put(v, cond) if holds(cond, state) => (Out::Stored, Some(v)),
        In::Put(..) => (Out::PreconditionFailed, state),
        In::Delete(cond) if holds(cond, state) => match state {
            Some(_) => (Out::Deleted, None),
            None => (Out::NotFound, None),
        },
        // A delete of a missing key whose precondition is not `IfAbsent`
        // answers "not found", not a failed precondition (as cellkv does).
        In::Delete(cond) if state.is_none() && cond != Cond::IfAbsent => (Out::NotFound, None),
        In::Delete(_) => (Out::PreconditionFailed, state),
    }
}

pub(crate) fn map_cond<W>(c: Precondition, f: impl Fn(ValueId) -> W) -> Cond<W> {
    match c {
        Precondition::None => Cond::None,
        Precondition::IfAbsent => Cond::IfAbsent,
        Precondition::IfMatch(v) => Cond::IfMatch(f(v)),
    }
}

pub(crate) fn map_input<W>(i: Input, f: impl Fn(ValueId) -> W + Copy) -> In<W> {
    match i {
        Input::Get => In::Get,
        Input::Put {
            value,
            precondition,
        } => In::Put(f(value), map_cond(precondition, f)),
        Input::Delete { precondition } => In::Delete(map_cond(precondition, f)),
    }
}

pub(crate) fn map_output<W>(o: Output, f: impl Fn(ValueId) -> W) -> Out<W> {
    match o {
        Output::Value(v) => Out::Value(v.map(f)),
        Output::Stored => Out::Stored,
        Output::Deleted => Out::Deleted,
        Output::NotFound => Out::NotFound,
        Output::PreconditionFailed => Out::PreconditionFailed,
    }
}

/// The register's answer to `input` in `state`, and the state after it.
pub fn step(state: Option<ValueId>, input: Input) -> (Output, Option<ValueId>) {
    let (out, next) = apply(state, map_input(input, |v| v));
    let out = match out {
        Out::Value(v) => Output::Value(v),
        Out::Stored => Output::Stored,
        Out::Deleted => Output::Deleted,
        Out::NotFound => Output::NotFound,
        Out::PreconditionFailed => Output::PreconditionFailed,
    };
    (out, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(value: ValueId, precondition: Precondition) -> Input {
        Input::Put {
            value,
            precondition,
        }
    }

    fn del(precondition: Precondition) -> Input {
        Input::Delete { precondition }
    }

    #[test]
    fn answers_follow_cellkv_object_rules() {
        use Precondition::{IfAbsent, IfMatch, None as Always};
        assert_eq!(step(None, Input::Get), (Output::Value(None), None));
        assert_eq!(step(Some(1), Input::Get), (Output::Value(Some(1)), Some(1)));
        assert_eq!(step(Some(1), put(2, Always)), (Output::Stored, Some(2)));
        assert_eq!(step(None, put(2, IfAbsent)), (Output::Stored, Some(2)));
        assert_eq!(
            step(Some(1), put(2, IfAbsent)),
            (Output::PreconditionFailed, Some(1))
        );
        assert_eq!(step(Some(1), put(2, IfMatch(1))), (Output::Stored, Some(2)));
        assert_eq!(
            step(Some(3), put(2, IfMatch(1))),
            (Output::PreconditionFailed, Some(3))
        );
        assert_eq!(
            step(None, put(2, IfMatch(1))),
            (Output::PreconditionFailed, None)
        );
        assert_eq!(step(Some(1), del(Always)), (Output::Deleted, None));
        assert_eq!(step(None, del(Always)), (Output::NotFound, None));
        assert_eq!(step(Some(1), del(IfMatch(1))), (Output::Deleted, None));
        assert_eq!(
            step(Some(2), del(IfMatch(1))),
            (Output::PreconditionFailed, Some(2))
        );
        assert_eq!(step(None, del(IfMatch(1))), (Output::NotFound, None));
        assert_eq!(step(None, del(IfAbsent)), (Output::NotFound, None));
        assert_eq!(
            step(Some(1), del(IfAbsent)),
            (Output::PreconditionFailed, Some(1))
        );
    }
}
