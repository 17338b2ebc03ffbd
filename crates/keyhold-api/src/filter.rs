//! List filtering and ordering in Cloud KMS syntax (<https://cloud.google.com/kms/docs/sorting-and-filtering>,
//! a subset of AIP-160), evaluated on the JSON form of a resource, so every returned field is
//! filterable.
//!
//! Grammar (OR binds tighter than AND; juxtaposition means AND):
//!
//! ```text
//! expr   := seq ("AND" seq)*
//! seq    := factor factor*
//! factor := term ("OR" term)*
//! term   := ("NOT" | "-") term | "(" expr ")" | field [op value]
//! op     := "=" | "!=" | "<" | "<=" | ">" | ">=" | ":"
//! ```
//!
//! `field` is a dotted path (`primary.state`, `labels.team`). `:` is a case-insensitive
//! substring match, `field:*` tests presence, and on a map `labels:team` tests for the key.
//! Comparisons try timestamps, then numbers (durations like `86400s` included), then strings.

use std::cmp::Ordering;

use serde_json::Value;

use crate::wire::Timestamp;

/// The longest filter accepted, in bytes. Cloud KMS documents no limit; real filters are a few
/// dozen bytes, and this bounds the tokenizer's work and memory for a hostile one.
pub const MAX_FILTER_LEN: usize = 2048;
/// The deepest nesting of parentheses and `NOT`/`-` accepted. The parser is recursive descent:
/// without this bound a filter of a few thousand `(` overflowed a worker's stack and aborted the
/// whole server (hardening issue, finding 1).
pub const MAX_FILTER_DEPTH: usize = 32;
/// The most restrictions (`field op value` terms) one filter may hold. It bounds the size of the
/// parsed tree, and so the recursion of [`Filter::matches`] and of its drop.
pub const MAX_FILTER_TERMS: usize = 64;

/// A filter or order-by that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Op(Op),
    Word(String),
    Quoted(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Has,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Matches everything (empty filter).
    All,
    /// Both.
    And(Box<Filter>, Box<Filter>),
    /// Either.
    Or(Box<Filter>, Box<Filter>),
    /// Negation.
    Not(Box<Filter>),
    /// `field op value`, or a bare field (presence).
    Restriction {
        /// Dotted path.
        field: Vec<String>,
        /// Operator and value; `None` for a bare field.
        cmp: Option<(FilterOp, String)>,
    },
}

/// A comparison operator (public view of the private token type).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterOp(Op);

fn tokenize(s: &str) -> Result<Vec<Tok>, FilterError> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            '"' | '\'' => {
                let quote = c;
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(FilterError(format!("unterminated string in filter \"{s}\""))),
                        Some('\\') if chars.get(i + 1).is_some() => {
                            v.push(chars[i + 1]);
                            i += 2
                        }
                        Some(&ch) if ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            v.push(ch);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Quoted(v));
            }
            '=' => {
                out.push(Tok::Op(Op::Eq));
                i += 1
            }
            ':' => {
                out.push(Tok::Op(Op::Has));
                i += 1
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Op(Op::Ne));
                i += 2
            }
            '<' | '>' => {
                let eq = chars.get(i + 1) == Some(&'=');
                out.push(Tok::Op(match (c, eq) {
                    ('<', true) => Op::Le,
                    ('<', false) => Op::Lt,
                    (_, true) => Op::Ge,
                    _ => Op::Gt,
                }));
                i += if eq { 2 } else { 1 };
            }
            _ => {
                // A value right after an operator may contain ':' (unquoted timestamps).
                let after_op = matches!(out.last(), Some(Tok::Op(_)));
                let stops: &str = if after_op { "()=<>\"'" } else { "()=:<>\"'" };
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !stops.contains(chars[i]) {
                    if chars[i] == '!' && chars.get(i + 1) == Some(&'=') {
                        break;
                    }
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    /// Current nesting of `(` and `NOT` (bounded by [`MAX_FILTER_DEPTH`]).
    depth: usize,
    /// Restrictions parsed so far (bounded by [`MAX_FILTER_TERMS`]).
    terms: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w == kw)
    }
    fn expr(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.seq()?;
        while self.is_keyword("AND") {
            self.pos += 1;
            let right = self.seq()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn seq(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.factor()?;
        while let Some(t) = self.peek() {
            if matches!(t, Tok::RParen) || self.is_keyword("AND") || self.is_keyword("OR") {
                break;
            }
            let right = self.factor()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn factor(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.term()?;
        while self.is_keyword("OR") {
            self.pos += 1;
            let right = self.term()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    /// Enters one level of nesting, refusing past [`MAX_FILTER_DEPTH`].
    fn nest(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_FILTER_DEPTH {
            return Err(FilterError(format!(
                "filter nests parentheses and NOT more than {MAX_FILTER_DEPTH} levels deep"
            )));
        }
        Ok(())
    }
    fn term(&mut self) -> Result<Filter, FilterError> {
        self.nest()?;
        let t = self.term_inner();
        self.depth -= 1;
        t
    }
    fn term_inner(&mut self) -> Result<Filter, FilterError> {
        match self.peek().cloned() {
            Some(Tok::Word(w)) if w == "NOT" => {
                self.pos += 1;
                Ok(Filter::Not(Box::new(self.term()?)))
            }
            Some(Tok::Word(w)) if w.len() > 1 && w.starts_with('-') => {
                self.toks[self.pos] = Tok::Word(w[1..].to_string());
                Ok(Filter::Not(Box::new(self.term()?)))
            }
            Some(Tok::LParen) => {
                self.pos += 1;
                let e = self.expr()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(FilterError("missing ')' in filter".into()));
                }
                self.pos += 1;
                Ok(e)
            }
            Some(Tok::Word(field)) => {
                self.pos += 1;
                self.terms += 1;
                if self.terms > MAX_FILTER_TERMS {
                    return Err(FilterError(format!("filter has more than {MAX_FILTER_TERMS} terms")));
                }
                let path: Vec<String> = field.split('.').map(str::to_string).collect();
                if path.iter().any(String::is_empty) {
                    return Err(FilterError(format!("invalid field \"{field}\" in filter")));
                }
                if let Some(Tok::Op(op)) = self.peek().cloned() {
                    self.pos += 1;
                    let value = match self.peek().cloned() {
                        Some(Tok::Word(v)) | Some(Tok::Quoted(v)) => v,
                        _ => return Err(FilterError(format!("missing value after \"{field}\" in filter"))),
                    };
                    self.pos += 1;
                    Ok(Filter::Restriction { field: path, cmp: Some((FilterOp(op), value)) })
                } else {
                    Ok(Filter::Restriction { field: path, cmp: None })
                }
            }
            Some(t) => Err(FilterError(format!("unexpected {t:?} in filter"))),
            None => Err(FilterError("filter ends unexpectedly".into())),
        }
    }
}

impl Filter {
    /// Parses a filter; the empty string matches everything.
    pub fn parse(s: &str) -> Result<Filter, FilterError> {
        if s.trim().is_empty() {
            return Ok(Filter::All);
        }
        if s.len() > MAX_FILTER_LEN {
            return Err(FilterError(format!(
                "filter is {} bytes long; at most {MAX_FILTER_LEN} are accepted",
                s.len()
            )));
        }
        let mut p = Parser { toks: tokenize(s)?, pos: 0, depth: 0, terms: 0 };
        let f = p.expr()?;
        if p.pos != p.toks.len() {
            return Err(FilterError(format!("unexpected input at token {} of filter \"{s}\"", p.pos + 1)));
        }
        Ok(f)
    }

    /// Whether the resource (as JSON) matches.
    pub fn matches(&self, resource: &Value) -> bool {
        match self {
            Filter::All => true,
            Filter::And(a, b) => a.matches(resource) && b.matches(resource),
            Filter::Or(a, b) => a.matches(resource) || b.matches(resource),
            Filter::Not(a) => !a.matches(resource),
            Filter::Restriction { field, cmp } => {
                let found = lookup(resource, field);
                match cmp {
                    None => found.is_some_and(|v| !v.is_null()),
                    Some((FilterOp(op), value)) => match found {
                        Some(Value::Array(items)) => items.iter().any(|item| compare(Some(item), *op, value)),
                        other => compare(other, *op, value),
                    },
                }
            }
        }
    }
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.get(key.as_str()))
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn compare(found: Option<&Value>, op: Op, value: &str) -> bool {
    if op == Op::Has {
        return match found {
            None | Some(Value::Null) => false,
            Some(_) if value == "*" => true,
            Some(Value::Object(map)) => map.contains_key(value),
            Some(v) => scalar_string(v).to_lowercase().contains(&value.to_lowercase()),
        };
    }
    let actual = found.map(scalar_string).unwrap_or_default();
    let ord = order_values(&actual, value);
    match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Has => unreachable!("handled above"),
    }
}

fn as_number(s: &str) -> Option<f64> {
    s.strip_suffix('s').unwrap_or(s).parse::<f64>().ok().filter(|n| n.is_finite())
}

/// Orders two field values: as timestamps if both are, else as numbers, else as strings.
fn order_values(a: &str, b: &str) -> Ordering {
    if let (Some(x), Some(y)) = (Timestamp::parse(a), Timestamp::parse(b)) {
        return x.cmp(&y);
    }
    if let (Some(x), Some(y)) = (as_number(a), as_number(b)) {
        return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    }
    a.cmp(b)
}

/// A parsed `orderBy`: one field, ascending or descending.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderBy {
    field: Vec<String>,
    descending: bool,
}

impl OrderBy {
    /// Parses `""`, `"name"`, `"name desc"`, `"createTime asc"`, ...; `None` keeps the natural
    /// order.
    pub fn parse(s: &str) -> Result<Option<OrderBy>, FilterError> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let (field, descending) = match words.as_slice() {
            [] => return Ok(None),
            [f] => (*f, false),
            [f, dir] if dir.eq_ignore_ascii_case("asc") => (*f, false),
            [f, dir] if dir.eq_ignore_ascii_case("desc") => (*f, true),
            _ => return Err(FilterError(format!("invalid orderBy \"{s}\"; expected \"FIELD\" or \"FIELD desc\""))),
        };
        Ok(Some(OrderBy { field: field.split('.').map(str::to_string).collect(), descending }))
    }

    /// Sorts JSON resources (stable).
    pub fn sort<T>(&self, items: &mut [(Value, T)]) {
        items.sort_by(|(a, _), (b, _)| {
            let x = lookup(a, &self.field).map(scalar_string).unwrap_or_default();
            let y = lookup(b, &self.field).map(scalar_string).unwrap_or_default();
            let o = order_values(&x, &y);
            if self.descending { o.reverse() } else { o }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> Value {
        json!({
            "name": "projects/p/locations/global/keyRings/r/cryptoKeys/alpha",
            "purpose": "ENCRYPT_DECRYPT",
            "labels": {"team": "payments", "env": "prod"},
            "primary": {"state": "ENABLED", "createTime": "2026-01-02T00:00:00.000000000Z"},
            "destroyScheduledDuration": "86400s",
        })
    }

    fn m(f: &str) -> bool {
        Filter::parse(f).unwrap().matches(&key())
    }

    #[test]
    fn operators() {
        assert!(m("labels.team=payments"));
        assert!(!m("labels.team=billing"));
        assert!(m("labels.team!=billing"));
        assert!(m("primary.state=ENABLED"));
        assert!(m("name:ALPHA"));
        assert!(m("labels:env"));
        assert!(!m("labels:owner"));
        assert!(m("primary:*"));
        assert!(!m("rotationPeriod:*"));
        assert!(m("primary.createTime > \"2026-01-01T00:00:00Z\""));
        assert!(!m("primary.createTime < 2026-01-01T00:00:00Z"));
        assert!(m("destroyScheduledDuration >= 86400s"));
        assert!(m("destroyScheduledDuration < 100000s"));
    }

    #[test]
    fn boolean_structure() {
        assert!(m("labels.team=payments AND primary.state=ENABLED"));
        assert!(m("labels.team=payments primary.state=ENABLED"));
        assert!(!m("labels.team=payments AND primary.state=DISABLED"));
        assert!(m("labels.team=x OR labels.env=prod"));
        assert!(m("NOT labels.team=x"));
        assert!(m("-labels.team=x"));
        assert!(m("(labels.team=x OR labels.team=payments) AND purpose=ENCRYPT_DECRYPT"));
        assert!(!m("labels.team=x OR labels.env=dev AND purpose=ENCRYPT_DECRYPT"));
    }

    #[test]
    fn parse_errors() {
        for bad in ["(labels.team=x", "labels.team=", "a..b=1", "\"open", "=x", "a=b)"] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
        assert!(OrderBy::parse("name sideways").is_err());
        assert!(OrderBy::parse("").unwrap().is_none());
    }

    /// Finding 1 of the hardening issue: deep nesting aborted the server. Every shape of deep
    /// nesting is now a parse error, well inside the default 2 MiB stack of a test thread.
    #[test]
    fn deep_or_long_filters_are_refused_not_overflowed() {
        let deep_parens = format!("{}a=1{}", "(".repeat(5000), ")".repeat(5000));
        let deep_not = format!("{}a=1", "NOT ".repeat(3000));
        let deep_minus = format!("{}a=1", "-".repeat(3000));
        let deep_mixed = format!("{}a=1{}", "(NOT ".repeat(1000), ")".repeat(1000));
        for (what, f) in [("parens", &deep_parens), ("not", &deep_not), ("minus", &deep_minus), ("mixed", &deep_mixed)]
        {
            let e = Filter::parse(f).expect_err(what);
            assert!(e.0.contains("levels deep") || e.0.contains("bytes long"), "{what}: {e}");
        }
        // Within the length bound, nesting is what is refused.
        let e = Filter::parse(&format!("{}a=1{}", "(".repeat(40), ")".repeat(40))).unwrap_err();
        assert!(e.0.contains("32 levels deep"), "{e}");
        // Exactly at the bound still parses and matches.
        let ok = format!("{}labels.team=payments{}", "(".repeat(31), ")".repeat(31));
        assert!(Filter::parse(&ok).unwrap().matches(&key()));
        // Many flat terms: bounded too (the And chain is as deep as it is long).
        let many = vec!["a=1"; 65].join(" AND ");
        assert!(Filter::parse(&many).unwrap_err().0.contains("64 terms"));
        assert!(Filter::parse(&vec!["labels.team=payments"; 64].join(" AND ")).unwrap().matches(&key()));
        let long = "a".repeat(MAX_FILTER_LEN + 1);
        assert!(Filter::parse(&long).unwrap_err().0.contains("bytes long"));
    }

    #[test]
    fn order_by() {
        let mut v = vec![(json!({"name": "b"}), 1), (json!({"name": "c"}), 2), (json!({"name": "a"}), 3)];
        OrderBy::parse("name desc").unwrap().unwrap().sort(&mut v);
        assert_eq!(v.iter().map(|x| x.1).collect::<Vec<_>>(), vec![2, 1, 3]);
    }
}
