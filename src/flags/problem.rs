//! What the strict checks report: one [`Problem`] per finding (flag, JSON pointer, what is
//! wrong, what would be right), and [`Path`], the place being checked, kept as borrowed
//! segments so a pointer string is built only when something is wrong.

use std::fmt;

/// The kind of a strict finding, for metrics and for callers that branch on it (never on
/// the message text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// flagd's published JSON schema (flags.json, targeting.json) refuses the value.
    Schema,
    /// An object in a rule whose single key is not a JsonLogic or flagd operator.
    UnknownOperator,
    /// A flagd operator (`fractional`, `sem_ver`, `starts_with`, `ends_with`) with
    /// arguments it cannot use.
    OperatorArguments,
    /// `{"$ref": NAME}` where `$evaluators` has no NAME.
    UnresolvedRef,
    /// Shared rules that refer to each other in a circle.
    RefCycle,
    /// A shared rule referring to one that clients substitute before it (see
    /// docs/validation.md), which would stay unresolved.
    RefOrder,
    /// A literal result of a rule that is not one of the flag's variants.
    UnknownVariant,
}

impl ProblemKind {
    /// A short, stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            ProblemKind::Schema => "schema",
            ProblemKind::UnknownOperator => "unknown_operator",
            ProblemKind::OperatorArguments => "operator_arguments",
            ProblemKind::UnresolvedRef => "unresolved_ref",
            ProblemKind::RefCycle => "ref_cycle",
            ProblemKind::RefOrder => "ref_order",
            ProblemKind::UnknownVariant => "unknown_variant",
        }
    }
}

/// One strict finding.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The flag it is in; `None` for a shared rule (`$evaluators`) or the document.
    pub flag: Option<String>,
    /// JSON pointer (RFC 6901) of the offending value in the document as stored.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
    /// What would be right (empty when the message says it all).
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.pointer)?;
        if let Some(flag) = &self.flag {
            write!(f, "flag {flag:?}: ")?;
        }
        f.write_str(&self.message)?;
        if !self.fix.is_empty() {
            write!(f, "; {}", self.fix)?;
        }
        Ok(())
    }
}

/// At most this many problems are kept per document: enough to fix several mistakes in
/// one round, few enough for one log line.
pub const MAX_PROBLEMS: usize = 5;

/// The problems of one document: the first [`MAX_PROBLEMS`] and how many more there were.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Problems {
    pub list: Vec<Problem>,
    /// Problems found beyond the first [`MAX_PROBLEMS`].
    pub more: usize,
}

impl Problems {
    pub fn push(&mut self, p: Problem) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(p);
        } else {
            self.more += 1;
        }
    }

    pub fn extend(&mut self, ps: impl IntoIterator<Item = Problem>) {
        for p in ps {
            self.push(p);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len() + self.more
    }

    /// One line per problem (plus a last line counting those left out).
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.list.iter().map(Problem::to_string).collect();
        if self.more > 0 {
            lines.push(format!("… and {} more problem(s)", self.more));
        }
        lines
    }
}

impl fmt::Display for Problems {
    /// All on one line (`; `-separated), for log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("; "))
    }
}

/// One step of a JSON pointer.
#[derive(Clone, Copy, Debug)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// The place being checked, as a stack of borrowed steps: pushing and popping cost
/// nothing, and [`Path::pointer`] formats only when a problem is reported.
#[derive(Clone, Debug, Default)]
pub struct Path<'a>(Vec<Seg<'a>>);

impl<'a> Path<'a> {
    pub fn new(base: &[Seg<'a>]) -> Self {
        Path(base.to_vec())
    }

    pub fn push(&mut self, s: Seg<'a>) {
        self.0.push(s);
    }

    pub fn pop(&mut self) {
        self.0.pop();
    }

    pub fn pointer(&self) -> String {
        self.pointer_with(&[])
    }

    /// The pointer of this path followed by `more`.
    pub fn pointer_with(&self, more: &[Seg<'_>]) -> String {
        let mut s = String::new();
        for seg in self.0.iter().chain(more) {
            s.push('/');
            match seg {
                Seg::Key(k) => s.push_str(&super::token(k)),
                Seg::Index(i) => s.push_str(&i.to_string()),
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_escape_tokens_and_problems_are_capped() {
        let mut p = Path::new(&[Seg::Key("flags"), Seg::Key("a/b~c")]);
        p.push(Seg::Index(3));
        assert_eq!(p.pointer(), "/flags/a~1b~0c/3");
        let mut ps = Problems::default();
        for i in 0..MAX_PROBLEMS + 2 {
            ps.push(Problem {
                kind: ProblemKind::Schema,
                flag: None,
                pointer: format!("/{i}"),
                message: "m".into(),
                fix: String::new(),
            });
        }
        assert_eq!(ps.len(), MAX_PROBLEMS + 2);
        assert_eq!(ps.lines().len(), MAX_PROBLEMS + 1);
        assert!(ps.to_string().ends_with("and 2 more problem(s)"));
    }
}
