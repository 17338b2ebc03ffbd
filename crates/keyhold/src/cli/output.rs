//! Printing resources the way gcloud does: YAML (the default for one resource), tables (the
//! default for lists), JSON, `value(FIELD,...)` and `none`.
//!
//! The YAML emitter is deliberately small: it only has to print JSON values, with keys sorted,
//! nested maps indented by two spaces, lists as `- ` items at their key's indentation (as
//! PyYAML, and therefore gcloud, prints them), and strings quoted exactly when a YAML reader
//! would otherwise take them for something else.

use clap::Args;
use serde_json::{Map, Value};

use super::{CliError, Ctx, print_stderr, print_stdout};

/// How results are printed: `--format`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// YAML, keys sorted; list results as one `---` document per resource.
    Yaml,
    /// Pretty JSON, keys sorted; list results as one array.
    Json,
    /// A table with the resource kind's default columns.
    Table,
    /// The named fields (dotted paths, optionally `.basename()`), tab-separated, one line per
    /// resource, with no header: `value(name)`.
    Value(Vec<String>),
    /// Nothing.
    None,
}

impl OutputFormat {
    /// Parses `--format`: `yaml`, `json`, `table`, `none` or `value(FIELD,...)`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "yaml" => return Ok(OutputFormat::Yaml),
            "json" => return Ok(OutputFormat::Json),
            "table" => return Ok(OutputFormat::Table),
            "none" => return Ok(OutputFormat::None),
            _ => {}
        }
        if let Some(inner) = t.strip_prefix("value(").and_then(|r| r.strip_suffix(')')) {
            let fields: Vec<String> =
                inner.split(',').map(str::trim).filter(|f| !f.is_empty()).map(str::to_string).collect();
            if fields.is_empty() {
                return Err("value() needs at least one field, e.g. --format='value(name)'".to_string());
            }
            return Ok(OutputFormat::Value(fields));
        }
        Err(format!("unknown format \"{s}\"; expected yaml, json, table, none or value(FIELD,...)"))
    }
}

/// The kinds of resources the CLI prints, each with gcloud's default table columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A location.
    Location,
    /// A key ring.
    KeyRing,
    /// A crypto key.
    CryptoKey,
    /// A crypto key version.
    CryptoKeyVersion,
    /// An IAM policy.
    Policy,
    /// A project (Resource Manager).
    Project,
    /// A Keyhold bearer token's record.
    Token,
    /// An audit log entry (Cloud Logging `LogEntry`).
    LogEntry,
    /// Anything else (a table shows its `name`).
    Other,
}

/// How a table cell is taken from a resource.
#[derive(Clone, Copy)]
enum Cell {
    /// The value at a dotted path.
    Path(&'static str),
    /// The last `/` segment of the string at a dotted path (`primary.name` -> version ID).
    Basename(&'static str),
    /// `True` when the dotted path is present, else `False`.
    Present(&'static str),
}

impl Kind {
    /// gcloud's default table columns for this kind.
    fn columns(self) -> &'static [(&'static str, Cell)] {
        match self {
            Kind::Location => &[
                ("LOCATION_ID", Cell::Path("locationId")),
                ("HSM_AVAILABLE", Cell::Path("metadata.hsmAvailable")),
                ("EKM_AVAILABLE", Cell::Path("metadata.ekmAvailable")),
            ],
            Kind::KeyRing => &[("NAME", Cell::Path("name"))],
            Kind::CryptoKey => &[
                ("NAME", Cell::Path("name")),
                ("PURPOSE", Cell::Path("purpose")),
                ("ALGORITHM", Cell::Path("versionTemplate.algorithm")),
                ("PROTECTION_LEVEL", Cell::Path("versionTemplate.protectionLevel")),
                ("LABELS", Cell::Path("labels")),
                ("PRIMARY_ID", Cell::Basename("primary.name")),
                ("PRIMARY_STATE", Cell::Path("primary.state")),
            ],
            Kind::CryptoKeyVersion => &[("NAME", Cell::Path("name")), ("STATE", Cell::Path("state"))],
            Kind::Policy => &[
                ("BINDINGS", Cell::Path("bindings")),
                ("ETAG", Cell::Path("etag")),
                ("VERSION", Cell::Path("version")),
            ],
            Kind::Project => &[
                ("PROJECT_ID", Cell::Path("projectId")),
                ("NAME", Cell::Path("name")),
                ("PROJECT_NUMBER", Cell::Path("projectNumber")),
            ],
            Kind::Token => &[
                ("NAME", Cell::Basename("name")),
                ("PRINCIPAL", Cell::Path("principal")),
                ("EXPIRE_TIME", Cell::Path("expireTime")),
                ("REVOKED", Cell::Present("revokeTime")),
            ],
            Kind::LogEntry => &[
                ("TIMESTAMP", Cell::Path("timestamp")),
                ("SEVERITY", Cell::Path("severity")),
                ("PRINCIPAL", Cell::Path("protoPayload.authenticationInfo.principalEmail")),
                ("METHOD", Cell::Path("protoPayload.methodName")),
                ("RESOURCE", Cell::Path("protoPayload.resourceName")),
            ],
            Kind::Other => &[("NAME", Cell::Path("name"))],
        }
    }
}

/// Renders one resource (`describe`, `update`, ...).
pub fn render_one(format: &OutputFormat, kind: Kind, resource: &Value) -> String {
    match format {
        OutputFormat::Yaml => to_yaml(resource),
        OutputFormat::Json => to_json(resource),
        OutputFormat::Table => render_kind_table(kind, std::slice::from_ref(resource)),
        OutputFormat::Value(fields) => render_values(fields, std::slice::from_ref(resource)),
        OutputFormat::None => String::new(),
    }
}

/// Renders the result of a `list` command.
pub fn render_list(format: &OutputFormat, kind: Kind, items: &[Value]) -> String {
    match format {
        OutputFormat::Yaml => items.iter().map(|i| format!("---\n{}", to_yaml(i))).collect(),
        OutputFormat::Json => to_json(&Value::Array(items.to_vec())),
        OutputFormat::Table if items.is_empty() => String::new(),
        OutputFormat::Table => render_kind_table(kind, items),
        OutputFormat::Value(fields) => render_values(fields, items),
        OutputFormat::None => String::new(),
    }
}

fn render_kind_table(kind: Kind, items: &[Value]) -> String {
    let cols = kind.columns();
    let headers: Vec<&str> = cols.iter().map(|(h, _)| *h).collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            cols.iter()
                .map(|(_, cell)| match cell {
                    Cell::Path(p) => field_text(lookup(item, p), ","),
                    Cell::Basename(p) => basename(&field_text(lookup(item, p), ",")).to_string(),
                    Cell::Present(p) => {
                        let present = lookup(item, p).is_some_and(|v| !v.is_null());
                        (if present { "True" } else { "False" }).to_string()
                    }
                })
                .collect()
        })
        .collect();
    render_table(&headers, &rows)
}

fn render_values(fields: &[String], items: &[Value]) -> String {
    let mut out = String::new();
    for item in items {
        let cells: Vec<String> = fields
            .iter()
            .map(|f| match f.strip_suffix(".basename()") {
                Some(path) => basename(&field_text(lookup(item, path), ";")).to_string(),
                None => field_text(lookup(item, f), ";"),
            })
            .collect();
        out.push_str(cells.join("\t").trim_end());
        out.push('\n');
    }
    out
}

/// The value at a dotted path (`primary.state`), if any.
pub fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, seg| cur.get(seg))
}

fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// A field as text in a table or `value()` cell: strings bare, booleans as gcloud prints them
/// (`True`/`False`), maps as `k=v` and lists as items, joined by `sep`.
fn field_text(v: Option<&Value>, sep: &str) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(true)) => "True".to_string(),
        Some(Value::Bool(false)) => "False".to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Array(a)) => a.iter().map(|i| field_text(Some(i), sep)).collect::<Vec<_>>().join(sep),
        Some(Value::Object(m)) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            keys.iter().map(|k| format!("{k}={}", field_text(m.get(*k), sep))).collect::<Vec<_>>().join(sep)
        }
    }
}

/// A table as gcloud prints one: upper-case headers, columns left-aligned and separated by two
/// spaces, no trailing whitespace.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            let width = widths.get(i).copied().unwrap_or(0);
            text.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.chars().count())));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Pretty JSON with keys sorted (as gcloud's `--format=json`), ending in a newline.
pub fn to_json(v: &Value) -> String {
    let sorted = sort_keys(v);
    let mut s = serde_json::to_string_pretty(&sorted).unwrap_or_else(|_| sorted.to_string());
    s.push('\n');
    s
}

/// A copy of `v` whose objects have their keys in sorted order, whatever map type serde_json
/// was built with.
fn sort_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                if let Some(child) = m.get(k) {
                    out.insert(k.clone(), sort_keys(child));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sort_keys).collect()),
        other => other.clone(),
    }
}

/// YAML for a JSON value, as gcloud prints a resource.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        let Some(v) = map.get(key) else { continue };
        pad(out, indent);
        out.push_str(&yaml_string(key));
        out.push(':');
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                write_map(out, m, indent + 2);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                write_seq(out, a, indent);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        let mut block = String::new();
        match item {
            Value::Object(m) if !m.is_empty() => write_map(&mut block, m, indent + 2),
            Value::Array(a) if !a.is_empty() => write_seq(&mut block, a, indent + 2),
            other => {
                pad(out, indent);
                out.push_str("- ");
                out.push_str(&scalar(other));
                out.push('\n');
                continue;
            }
        }
        // The block's first line is indented by `indent + 2`: that indentation becomes "- ".
        pad(out, indent);
        out.push_str("- ");
        out.push_str(block.get(indent + 2..).unwrap_or(&block));
    }
}

/// A scalar (or an empty collection) in flow form.
fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => yaml_string(s),
        Value::Array(_) => "[]".to_string(),
        Value::Object(_) => "{}".to_string(),
    }
}

/// A string as a YAML scalar: plain when that reads back as the same string, single-quoted when
/// a plain scalar would be misread, double-quoted with escapes when it holds control
/// characters or line breaks.
pub fn yaml_string(s: &str) -> String {
    if s.chars().any(needs_escape) {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if needs_escape(c) && (c as u32) <= 0xff => out.push_str(&format!("\\x{:02X}", c as u32)),
                c if needs_escape(c) => out.push_str(&format!("\\u{:04X}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    } else if needs_quotes(s) {
        format!("'{}'", s.replace('\'', "''"))
    } else {
        s.to_string()
    }
}

/// Characters that cannot appear in a plain or single-quoted scalar.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// Whether a plain scalar would not read back as the string `s`.
fn needs_quotes(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return true;
    };
    if s.starts_with(' ') || s.ends_with(' ') || s.starts_with("---") || s.starts_with("...") {
        return true;
    }
    let followed_by_space = |i: usize| s[i..].chars().nth(1).is_none_or(|c| c == ' ');
    if "#,[]{}&*!|>'\"%@`".contains(first) || ("-?:".contains(first) && followed_by_space(0)) {
        return true;
    }
    let mut prev = first;
    for (i, c) in s.char_indices().skip(1) {
        if (c == ':' && followed_by_space(i)) || (c == '#' && prev == ' ') {
            return true;
        }
        prev = c;
    }
    is_reserved_word(s) || looks_numeric(s) || looks_like_timestamp(s)
}

/// YAML 1.1 nulls, booleans, the merge key and the value key.
fn is_reserved_word(s: &str) -> bool {
    matches!(
        s,
        "~" | "null"
            | "Null"
            | "NULL"
            | "true"
            | "True"
            | "TRUE"
            | "false"
            | "False"
            | "FALSE"
            | "yes"
            | "Yes"
            | "YES"
            | "no"
            | "No"
            | "NO"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
            | "<<"
            | "="
    )
}

fn all_of(s: &str, allowed: impl Fn(char) -> bool) -> bool {
    !s.is_empty() && s.chars().all(allowed)
}

/// Whether `s` reads as an integer or float in YAML 1.1 or 1.2 (`12`, `-3`, `1_000`, `0x1f`,
/// `0o17`, `0b101`, `1.5`, `.5`, `1e3`, `1:30`, `.inf`, `.nan`).
fn looks_numeric(s: &str) -> bool {
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    if matches!(t, ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    if let Some(r) = t.strip_prefix("0b") {
        return all_of(r, |c| c == '0' || c == '1' || c == '_');
    }
    if let Some(r) = t.strip_prefix("0x") {
        return all_of(r, |c| c.is_ascii_hexdigit() || c == '_');
    }
    if let Some(r) = t.strip_prefix("0o") {
        return all_of(r, |c| ('0'..='7').contains(&c) || c == '_');
    }
    let digits = |p: &str| all_of(p, |c| c.is_ascii_digit() || c == '_') && p.starts_with(|c: char| c.is_ascii_digit());
    if t.contains(':') {
        // Sexagesimal: 1:30, 190:20:30, 1:30.5.
        let mut parts = t.split(':');
        let head_ok = parts.next().is_some_and(digits);
        let rest: Vec<&str> = parts.collect();
        return head_ok
            && rest.iter().enumerate().all(|(i, p)| {
                let p = if i + 1 == rest.len() { p.split_once('.').map_or(*p, |(a, _)| a) } else { p };
                all_of(p, |c| c.is_ascii_digit()) && p.len() <= 2
            });
    }
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    if let Some(e) = exponent {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        if !all_of(e, |c| c.is_ascii_digit()) {
            return false;
        }
    }
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    match frac {
        None => digits(int),
        Some(f) => {
            let frac_ok = f.is_empty() || all_of(f, |c| c.is_ascii_digit() || c == '_');
            frac_ok && (digits(int) || (int.is_empty() && f.starts_with(|c: char| c.is_ascii_digit())))
        }
    }
}

/// Whether `s` starts like a YAML timestamp (`2024-05-01`, `2024-05-01T10:00:00Z`).
fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    if !(digits(0..4) && b.get(4) == Some(&b'-')) {
        return false;
    }
    // Month and day have one or two digits each.
    let rest = &s[5..];
    let mut parts = rest.splitn(3, '-');
    let month = parts.next().unwrap_or("");
    let day: String = parts.next().unwrap_or("").chars().take_while(char::is_ascii_digit).collect();
    (1..=2).contains(&month.len()) && month.bytes().all(|c| c.is_ascii_digit()) && (1..=2).contains(&day.len())
}

// ---- lists shared by commands (store, org-policies) -----------------------------------------

/// `--page-size` and `--limit`.
#[derive(Args, Debug, Clone, Default)]
pub struct PagingFlags {
    /// Ask the server for pages of this size (every page is fetched).
    #[arg(long, value_name = "PAGE_SIZE", value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: Option<u32>,
    /// List at most this many resources.
    #[arg(long, value_name = "LIMIT")]
    pub limit: Option<usize>,
}

/// Fetches every page of a collection below `/{version}/`, `field` naming the array in each page;
/// `query` is sent with every page.
pub(super) async fn list_all(
    ctx: &Ctx,
    version: &str,
    collection: &str,
    field: &str,
    query: &[(&'static str, String)],
    paging: &PagingFlags,
) -> Result<Vec<Value>, CliError> {
    let opts = super::client::ListOptions { page_size: paging.page_size, limit: paging.limit, ..Default::default() };
    ctx.client.list_versioned(version, collection, field, query, &opts).await
}

/// One table column: its header and how a cell is taken from a resource.
pub(super) type Column = (&'static str, fn(&Value) -> String);

/// The string at a dotted path, or empty.
pub(super) fn text_at(v: &Value, path: &str) -> String {
    match lookup(v, path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Prints a list: a table of `columns` unless `--format` says otherwise.
pub(super) fn show_list(ctx: &Ctx, items: &[Value], columns: &[Column]) -> Result<(), CliError> {
    let format = ctx.format.clone().unwrap_or(OutputFormat::Table);
    if items.is_empty() && !matches!(format, OutputFormat::Json | OutputFormat::None) {
        print_stderr("Listed 0 items.");
        return Ok(());
    }
    match format {
        OutputFormat::Table => print_stdout(&table(items, columns)),
        other => print_stdout(&render_list(&other, Kind::Other, items)),
    }
}

/// The table of `columns` for `items`.
pub(super) fn table(items: &[Value], columns: &[Column]) -> String {
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let rows: Vec<Vec<String>> = items.iter().map(|i| columns.iter().map(|(_, cell)| cell(i)).collect()).collect();
    render_table(&headers, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policy_as_gcloud_prints_it() {
        let v = json!({
            "version": 1,
            "etag": "BwYCq0Sq4Ho=",
            "bindings": [{"role": "roles/cloudkms.cryptoKeyEncrypterDecrypter",
                          "members": ["serviceAccount:service-123456789012@gcp-sa-financialservices.iam.gserviceaccount.com"]}],
        });
        assert_eq!(
            to_yaml(&v),
            "bindings:\n- members:\n  - serviceAccount:service-123456789012@gcp-sa-financialservices.iam.gserviceaccount.com\n  \
             role: roles/cloudkms.cryptoKeyEncrypterDecrypter\netag: BwYCq0Sq4Ho=\nversion: 1\n"
        );
    }

    #[test]
    fn key_ring_as_gcloud_prints_it() {
        let v =
            json!({"name": "projects/p/locations/global/keyRings/r", "createTime": "2024-05-01T10:00:00.123456789Z"});
        assert_eq!(
            to_yaml(&v),
            "createTime: '2024-05-01T10:00:00.123456789Z'\nname: projects/p/locations/global/keyRings/r\n"
        );
    }

    #[test]
    fn nested_maps_lists_and_sorting() {
        let v = json!({
            "purpose": "ENCRYPT_DECRYPT",
            "labels": {"team": "core", "env": "prod"},
            "primary": {"state": "ENABLED", "name": "k/cryptoKeyVersions/1"},
            "keyAccessJustificationsPolicy": {"allowedAccessReasons": ["CUSTOMER_INITIATED_ACCESS", "REASON_NOT_EXPECTED"]},
            "empty": {},
            "none": [],
            "importOnly": true,
            "count": 3,
            "nothing": null,
        });
        let expected = "\
count: 3
empty: {}
importOnly: true
keyAccessJustificationsPolicy:
  allowedAccessReasons:
  - CUSTOMER_INITIATED_ACCESS
  - REASON_NOT_EXPECTED
labels:
  env: prod
  team: core
none: []
nothing: null
primary:
  name: k/cryptoKeyVersions/1
  state: ENABLED
purpose: ENCRYPT_DECRYPT
";
        assert_eq!(to_yaml(&v), expected);
    }

    #[test]
    fn maps_and_lists_inside_lists() {
        let v = json!({"items": [{"b": 1, "a": {"x": "y"}}, [1, 2], "s"]});
        let expected = "\
items:
- a:
    x: y
  b: 1
- - 1
  - 2
- s
";
        assert_eq!(to_yaml(&v), expected);
        assert_eq!(to_yaml(&json!(["a", {"k": "v", "l": "w"}])), "- a\n- k: v\n  l: w\n");
    }

    #[test]
    fn top_level_scalars() {
        assert_eq!(to_yaml(&json!({})), "{}\n");
        assert_eq!(to_yaml(&json!("1")), "'1'\n");
        assert_eq!(to_yaml(&json!(null)), "null\n");
    }

    #[test]
    fn string_quoting() {
        let cases = [
            ("ENABLED", "ENABLED"),
            ("projects/p/locations/global", "projects/p/locations/global"),
            ("86400s", "86400s"),
            ("", "''"),
            ("1", "'1'"),
            ("-12", "'-12'"),
            ("1.5", "'1.5'"),
            (".5", "'.5'"),
            ("1e3", "'1e3'"),
            ("1_000", "'1_000'"),
            ("0x1F", "'0x1F'"),
            ("12:30", "'12:30'"),
            (".inf", "'.inf'"),
            ("true", "'true'"),
            ("No", "'No'"),
            ("null", "'null'"),
            ("~", "'~'"),
            ("2024-05-01", "'2024-05-01'"),
            ("2024-5-1T10:00:00Z", "'2024-5-1T10:00:00Z'"),
            ("a: b", "'a: b'"),
            ("ends with:", "'ends with:'"),
            ("a:b", "a:b"),
            ("x #y", "'x #y'"),
            ("x#y", "x#y"),
            ("#x", "'#x'"),
            ("- x", "'- x'"),
            ("-x", "-x"),
            ("-", "'-'"),
            ("*alias", "'*alias'"),
            ("{x}", "'{x}'"),
            ("@x", "'@x'"),
            ("it's", "it's"),
            ("'q'", "'''q'''"),
            (" lead", "' lead'"),
            ("trail ", "'trail '"),
            ("---", "'---'"),
            ("v1.2.3", "v1.2.3"),
            ("1a", "1a"),
            ("key=value", "key=value"),
            ("ünïcode", "ünïcode"),
            ("line\nbreak", "\"line\\nbreak\""),
            ("tab\there \"q\"", "\"tab\\there \\\"q\\\"\""),
            ("bell\u{7}", "\"bell\\x07\""),
        ];
        for (input, want) in cases {
            assert_eq!(yaml_string(input), want, "input {input:?}");
        }
    }

    #[test]
    fn tables() {
        let t =
            render_table(&["NAME", "STATE"], &[vec!["a/1".into(), "ENABLED".into()], vec!["a/10".into(), "".into()]]);
        assert_eq!(t, "NAME  STATE\na/1   ENABLED\na/10\n");
        let key = json!({
            "name": "projects/p/locations/global/keyRings/r/cryptoKeys/k",
            "purpose": "ENCRYPT_DECRYPT",
            "versionTemplate": {"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "protectionLevel": "SOFTWARE"},
            "labels": {"team": "x", "env": "prod"},
            "primary": {"name": "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/2", "state": "ENABLED"},
        });
        let out = render_list(&OutputFormat::Table, Kind::CryptoKey, std::slice::from_ref(&key));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "projects/p/locations/global/keyRings/r/cryptoKeys/k",
                "ENCRYPT_DECRYPT",
                "GOOGLE_SYMMETRIC_ENCRYPTION",
                "SOFTWARE",
                "env=prod,team=x",
                "2",
                "ENABLED"
            ]
        );
        assert!(lines[0].starts_with("NAME "));
        assert!(lines[0].ends_with("PRIMARY_ID  PRIMARY_STATE"));
        let loc = json!({"locationId": "global", "metadata": {"hsmAvailable": false, "ekmAvailable": true}});
        assert_eq!(
            render_list(&OutputFormat::Table, Kind::Location, &[loc]),
            "LOCATION_ID  HSM_AVAILABLE  EKM_AVAILABLE\nglobal       False          True\n"
        );
        assert_eq!(render_list(&OutputFormat::Table, Kind::KeyRing, &[]), "");
        let tokens = [
            json!({"name": "tokens/ab12", "principal": "user:bob@example.com", "expireTime": "2026-01-01T00:00:00Z"}),
            json!({"name": "tokens/cd34", "principal": "user:eve@example.com", "expireTime": "2026-01-02T00:00:00Z", "revokeTime": "2025-01-01T00:00:00Z"}),
        ];
        assert_eq!(
            render_list(&OutputFormat::Table, Kind::Token, &tokens),
            "NAME  PRINCIPAL             EXPIRE_TIME           REVOKED\n\
             ab12  user:bob@example.com  2026-01-01T00:00:00Z  False\n\
             cd34  user:eve@example.com  2026-01-02T00:00:00Z  True\n"
        );
    }

    #[test]
    fn list_formats() {
        let items = [json!({"name": "a", "state": "ENABLED"}), json!({"name": "b"})];
        assert_eq!(
            render_list(&OutputFormat::Yaml, Kind::CryptoKeyVersion, &items),
            "---\nname: a\nstate: ENABLED\n---\nname: b\n"
        );
        assert_eq!(
            render_list(&OutputFormat::Json, Kind::CryptoKeyVersion, &items),
            "[\n  {\n    \"name\": \"a\",\n    \"state\": \"ENABLED\"\n  },\n  {\n    \"name\": \"b\"\n  }\n]\n"
        );
        assert_eq!(render_list(&OutputFormat::Json, Kind::KeyRing, &[]), "[]\n");
        let fmt = OutputFormat::parse("value(name.basename(), state)").unwrap();
        assert_eq!(
            render_list(&fmt, Kind::CryptoKeyVersion, &[json!({"name": "k/cryptoKeyVersions/3", "state": "ENABLED"})]),
            "3\tENABLED\n"
        );
        assert_eq!(render_one(&OutputFormat::None, Kind::KeyRing, &items[0]), "");
    }

    #[test]
    fn json_keys_sorted() {
        assert_eq!(
            to_json(&json!({"b": 1, "a": {"d": 1, "c": 2}})),
            "{\n  \"a\": {\n    \"c\": 2,\n    \"d\": 1\n  },\n  \"b\": 1\n}\n"
        );
    }

    #[test]
    fn format_flag() {
        assert_eq!(OutputFormat::parse("JSON"), Ok(OutputFormat::Json));
        assert_eq!(OutputFormat::parse("yaml"), Ok(OutputFormat::Yaml));
        assert_eq!(
            OutputFormat::parse("value(name,labels.env)"),
            Ok(OutputFormat::Value(vec!["name".into(), "labels.env".into()]))
        );
        assert!(OutputFormat::parse("value()").is_err());
        assert!(OutputFormat::parse("xml").is_err());
    }
}
