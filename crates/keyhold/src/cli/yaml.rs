//! A small YAML reader for the documents `set-iam-policy` takes: what `get-iam-policy` prints
//! (and what people write by hand after it), read into a JSON value.
//!
//! Supported: one document (an optional leading `---`), block mappings and sequences (with
//! sequences at their key's indentation, as gcloud prints them, or indented), `- key: value`
//! items, comments, plain scalars (typed as YAML 1.2's core schema types them: null, booleans,
//! integers, floats, else strings), single- and double-quoted scalars, and flow collections of
//! scalars (`[]`, `{}`, `[a, 'b']`, `{a: 1}`). Anchors, aliases, tags, block scalars (`|`, `>`)
//! and multi-line scalars are refused with a message suggesting JSON instead.

use serde_json::{Map, Number, Value};

/// One significant line: its number (1-based), indentation and text (comment removed, trailing
/// blanks trimmed, indentation removed).
#[derive(Clone, Debug)]
struct Line {
    no: usize,
    indent: usize,
    text: String,
}

/// Parses `text` as a YAML document.
pub fn parse(text: &str) -> Result<Value, String> {
    let lines = significant_lines(text)?;
    if lines.is_empty() {
        return Ok(Value::Null);
    }
    let mut p = Parser { lines, pos: 0 };
    let indent = p.lines[0].indent;
    let v = p.block(indent)?;
    if let Some(l) = p.lines.get(p.pos) {
        return Err(format!("line {}: unexpected indentation or content \"{}\"", l.no, l.text));
    }
    Ok(v)
}

fn unsupported(no: usize, what: &str) -> String {
    format!("line {no}: {what} are not supported in policy files; write the policy as JSON instead")
}

fn significant_lines(text: &str) -> Result<Vec<Line>, String> {
    let mut out = Vec::new();
    let mut started = false;
    for (i, raw) in text.lines().enumerate() {
        let no = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let body = raw.trim_start_matches(' ');
        if body.starts_with('\t') {
            return Err(format!("line {no}: tabs cannot indent YAML; use spaces"));
        }
        let indent = raw.len() - body.len();
        let text = strip_comment(body).trim_end().to_string();
        if text.is_empty() {
            continue;
        }
        if indent == 0 && (text == "---" || text.starts_with("--- ")) {
            if started {
                return Err(format!("line {no}: a policy file holds one document; found a second"));
            }
            started = true;
            let rest = text[3..].trim();
            if !rest.is_empty() {
                out.push(Line { no, indent: 4, text: rest.to_string() });
            }
            continue;
        }
        if indent == 0 && text == "..." {
            break;
        }
        if indent == 0 && text.starts_with('%') {
            return Err(unsupported(no, "directives"));
        }
        started = true;
        out.push(Line { no, indent, text });
    }
    Ok(out)
}

/// `s` without a trailing comment: `#` at the start or after a blank, outside quotes.
fn strip_comment(s: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev: Option<char> = None;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match quote {
            Some('\'') if c == '\'' => {
                if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                    chars.next();
                } else {
                    quote = None;
                }
            }
            Some('"') if c == '\\' => {
                chars.next();
            }
            Some('"') if c == '"' => quote = None,
            Some(_) => {}
            None => {
                let at_token_start = prev.is_none_or(|p| " [{,:-?".contains(p));
                if (c == '\'' || c == '"') && at_token_start {
                    quote = Some(c);
                } else if c == '#' && prev.is_none_or(|p| p == ' ') {
                    return &s[..i];
                }
            }
        }
        prev = Some(c);
    }
    s
}

/// Whether a line is a sequence item (`- x` or a bare `-`).
fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

struct Parser {
    lines: Vec<Line>,
    pos: usize,
}

impl Parser {
    /// The block (mapping or sequence) whose lines start at indentation `indent`.
    fn block(&mut self, indent: usize) -> Result<Value, String> {
        let Some(first) = self.lines.get(self.pos) else { return Ok(Value::Null) };
        if is_item(&first.text) {
            self.sequence(indent)
        } else if split_key(&first.text, first.no)?.is_some() {
            self.mapping(indent)
        } else {
            // A lone scalar (a document that is just `42`, or a value on its own line).
            let line = first.clone();
            self.pos += 1;
            if let Some(next) = self.lines.get(self.pos)
                && next.indent > indent
            {
                return Err(unsupported(next.no, "multi-line scalars"));
            }
            scalar(&line.text, line.no)
        }
    }

    fn sequence(&mut self, indent: usize) -> Result<Value, String> {
        let mut items = Vec::new();
        while let Some(line) = self.lines.get(self.pos).cloned() {
            if line.indent != indent || !is_item(&line.text) {
                break;
            }
            let rest = line.text[1..].trim_start();
            if rest.is_empty() {
                self.pos += 1;
                items.push(self.nested(indent, true)?);
                continue;
            }
            // `- key: v` or `- - x`: the rest is a block starting at its own column.
            let column = indent + (line.text.len() - rest.len());
            if is_item(rest) || split_key(rest, line.no)?.is_some() {
                self.lines[self.pos] = Line { no: line.no, indent: column, text: rest.to_string() };
                items.push(self.block(column)?);
            } else {
                self.pos += 1;
                items.push(scalar(rest, line.no)?);
                if let Some(next) = self.lines.get(self.pos)
                    && next.indent > indent
                {
                    return Err(unsupported(next.no, "multi-line scalars"));
                }
            }
        }
        self.check_dedent(indent)?;
        Ok(Value::Array(items))
    }

    fn mapping(&mut self, indent: usize) -> Result<Value, String> {
        let mut map = Map::new();
        while let Some(line) = self.lines.get(self.pos).cloned() {
            if line.indent != indent || is_item(&line.text) {
                break;
            }
            let Some((key, rest)) = split_key(&line.text, line.no)? else {
                return Err(format!("line {}: expected \"key: value\", found \"{}\"", line.no, line.text));
            };
            if map.contains_key(&key) {
                return Err(format!("line {}: duplicate key \"{key}\"", line.no));
            }
            self.pos += 1;
            let value = if rest.is_empty() {
                self.nested(indent, false)?
            } else {
                let v = scalar(rest, line.no)?;
                if let Some(next) = self.lines.get(self.pos)
                    && next.indent > indent
                {
                    return Err(unsupported(next.no, "multi-line scalars"));
                }
                v
            };
            map.insert(key, value);
        }
        self.check_dedent(indent)?;
        Ok(Value::Object(map))
    }

    /// The value of a key or item whose text ended at the indicator: the block on the next
    /// lines if it is indented further (or, for a key, a sequence at the key's own indentation),
    /// else null.
    fn nested(&mut self, indent: usize, in_item: bool) -> Result<Value, String> {
        match self.lines.get(self.pos) {
            Some(next) if next.indent > indent || (!in_item && next.indent == indent && is_item(&next.text)) => {
                let i = next.indent;
                self.block(i)
            }
            _ => Ok(Value::Null),
        }
    }

    /// After a block at `indent` ends, the next line must belong to an enclosing block.
    fn check_dedent(&self, indent: usize) -> Result<(), String> {
        match self.lines.get(self.pos) {
            Some(next) if next.indent > indent => {
                Err(format!("line {}: unexpected indentation before \"{}\"", next.no, next.text))
            }
            _ => Ok(()),
        }
    }
}

/// Splits `key: value` (or `key:`) into the key and the rest; `None` when the line is not a
/// mapping entry.
fn split_key(text: &str, no: usize) -> Result<Option<(String, &str)>, String> {
    if text.starts_with('[') || text.starts_with('{') {
        return Ok(None);
    }
    if text.starts_with('?') && (text.len() == 1 || text[1..].starts_with(' ')) {
        return Err(unsupported(no, "complex keys"));
    }
    let (key, after) = if text.starts_with('\'') || text.starts_with('"') {
        let (k, used) = quoted(text, no)?;
        (k, &text[used..])
    } else {
        let bytes = text.as_bytes();
        let Some(i) = (0..bytes.len()).find(|&i| bytes[i] == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' '))
        else {
            return Ok(None);
        };
        (text[..i].trim_end().to_string(), &text[i..])
    };
    let Some(rest) = after.strip_prefix(':') else { return Ok(None) };
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return Ok(None);
    }
    Ok(Some((key, rest.trim())))
}

/// A quoted scalar at the start of `s`: its value and the bytes it used.
fn quoted(s: &str, no: usize) -> Result<(String, usize), String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    let Some((_, q)) = chars.next() else { return Err(format!("line {no}: empty scalar")) };
    while let Some((i, c)) = chars.next() {
        match (q, c) {
            ('\'', '\'') => {
                if s[i + 1..].starts_with('\'') {
                    chars.next();
                    out.push('\'');
                } else {
                    return Ok((out, i + 1));
                }
            }
            ('"', '"') => return Ok((out, i + 1)),
            ('"', '\\') => {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '0' => out.push('\0'),
                    '"' | '\\' | '/' | ' ' => out.push(e),
                    'x' | 'u' | 'U' => {
                        let len = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = chars.by_ref().take(len).map(|(_, c)| c).collect();
                        let ch = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| format!("line {no}: invalid escape \\{e}{hex} in a double-quoted string"))?;
                        out.push(ch);
                    }
                    other => return Err(format!("line {no}: unknown escape \\{other} in a double-quoted string")),
                }
            }
            (_, c) => out.push(c),
        }
    }
    Err(unsupported(no, "unterminated or multi-line quoted strings"))
}

/// A scalar or flow collection making up the whole of `text`.
fn scalar(text: &str, no: usize) -> Result<Value, String> {
    let t = text.trim();
    let Some(first) = t.chars().next() else { return Ok(Value::Null) };
    match first {
        '\'' | '"' => {
            let (s, used) = quoted(t, no)?;
            if !t[used..].trim().is_empty() {
                return Err(format!("line {no}: unexpected text after a quoted string: \"{}\"", &t[used..]));
            }
            Ok(Value::String(s))
        }
        '[' | '{' => flow(t, no),
        '&' | '*' => Err(unsupported(no, "anchors and aliases")),
        '!' => Err(unsupported(no, "tags")),
        '|' | '>' => Err(unsupported(no, "block scalars (| and >)")),
        '@' | '`' => Err(format!("line {no}: a plain scalar cannot start with '{first}'; quote it")),
        _ => Ok(plain(t)),
    }
}

/// A flow collection of scalars: `[a, 'b', 3]`, `{a: 1, b: x}`, `[]`, `{}`.
fn flow(t: &str, no: usize) -> Result<Value, String> {
    let (open, close) = if t.starts_with('[') { ('[', ']') } else { ('{', '}') };
    let Some(inner) = t.strip_prefix(open).and_then(|r| r.strip_suffix(close)) else {
        return Err(format!("line {no}: unterminated flow collection \"{t}\""));
    };
    let mut parts = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let (item, used) = if rest.starts_with('\'') || rest.starts_with('"') {
            let (_, used) = quoted(rest, no)?;
            let after = rest[used..].find(',').map_or(rest.len(), |i| used + i);
            (&rest[..after], after)
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            (&rest[..end], end)
        };
        if item.contains(['[', ']', '{', '}']) {
            return Err(unsupported(no, "nested flow collections"));
        }
        parts.push(item.trim());
        rest = rest[used..].strip_prefix(',').unwrap_or(&rest[used..]).trim_start();
    }
    if open == '[' {
        return parts.into_iter().map(|p| scalar(p, no)).collect::<Result<Vec<_>, _>>().map(Value::Array);
    }
    let mut map = Map::new();
    for p in parts {
        let Some((k, v)) = split_key(p, no)? else {
            return Err(format!("line {no}: expected \"key: value\" in a flow mapping, found \"{p}\""));
        };
        map.insert(k, scalar(v, no)?);
    }
    Ok(Value::Object(map))
}

/// A plain scalar, typed as the YAML 1.2 core schema does.
fn plain(t: &str) -> Value {
    match t {
        "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = t.parse::<i64>()
    {
        return Value::Number(i.into());
    }
    let looks_float = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().any(|b| b.is_ascii_digit());
    if looks_float && let Some(n) = t.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    Value::String(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gcloud_policy_output() {
        let text = "\
bindings:
- members:
  - serviceAccount:service-123456789012@gcp-sa-financialservices.iam.gserviceaccount.com
  role: roles/cloudkms.cryptoKeyEncrypterDecrypter
- members:
  - user:a@example.com  # the admin
  - 'user:b@example.com'
  role: \"roles/cloudkms.admin\"
etag: BwYCq0Sq4Ho=
version: 1
";
        assert_eq!(
            parse(text).unwrap(),
            json!({
                "bindings": [
                    {"members": ["serviceAccount:service-123456789012@gcp-sa-financialservices.iam.gserviceaccount.com"],
                     "role": "roles/cloudkms.cryptoKeyEncrypterDecrypter"},
                    {"members": ["user:a@example.com", "user:b@example.com"], "role": "roles/cloudkms.admin"},
                ],
                "etag": "BwYCq0Sq4Ho=",
                "version": 1,
            })
        );
    }

    #[test]
    fn round_trips_what_the_cli_prints() {
        let v = json!({
            "bindings": [{"members": ["user:x@y.com", "domain:example.com"], "role": "roles/viewer"}],
            "etag": "ACAB",
            "nested": {"a": {"b": "1", "c": [1, 2.5, true, null, "", "it's", "a: b", "#x"]}, "empty": {}, "none": []},
            "version": 1,
        });
        assert_eq!(parse(&crate::cli::output::to_yaml(&v)).unwrap(), v);
    }

    #[test]
    fn indented_sequences_documents_and_flow() {
        let text = "---\n# comment\nbindings:\n  - role: roles/viewer\n    members: [user:a@b.com, 'user:c@d.com']\nversion: 1\n...\nignored: x\n";
        assert_eq!(
            parse(text).unwrap(),
            json!({"bindings": [{"role": "roles/viewer", "members": ["user:a@b.com", "user:c@d.com"]}], "version": 1})
        );
        assert_eq!(parse("a: {x: 1, y: z}\nb: []\n").unwrap(), json!({"a": {"x": 1, "y": "z"}, "b": []}));
        assert_eq!(parse("- - 1\n  - 2\n- x\n").unwrap(), json!([[1, 2], "x"]));
        assert_eq!(parse("").unwrap(), Value::Null);
        assert_eq!(parse("k: \"tab\\there \\u00e9\"\n").unwrap(), json!({"k": "tab\there é"}));
    }

    #[test]
    fn refusals_are_explained() {
        for (text, want) in [
            ("a: &x 1\n", "anchors"),
            ("a: |\n  text\n", "block scalars"),
            ("a: b\n  c\n", "multi-line"),
            ("a: 1\na: 2\n", "duplicate key"),
            ("a:\n\t- x\n", "tabs"),
            ("a: 'open\n", "unterminated"),
            ("a: 1\n---\nb: 2\n", "one document"),
            ("a:\n  - x\n   - y\n", "line 3"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
