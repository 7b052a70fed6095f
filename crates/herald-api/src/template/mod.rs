//! Message templates: checking a template's MiniJinja source and rendering it
//! with a tenant's data, in a sandbox.
//!
//! Checking and rendering are pure computation, no I/O; `sandbox` runs
//! renders in renderer processes ([`Renderer`]) and `frame` is how it talks
//! to them. Tenants write the source, so the engine is fenced in:
//!
//! - **No other templates.** The environment has no loader and no stored
//!   templates: `include`, `import`, `from … import` and `extends` fail with
//!   "templates cannot include, import or extend other templates".
//! - **Bounded work.** Each part renders with [`FUEL`] units of fuel (about one
//!   per instruction); running out, or asking `range` for more than its own cap
//!   of 100,000 items, is "too much work". Recursion is bounded by MiniJinja's
//!   default limit.
//! - **Bounded memory and time.** Through [`Renderer`], a render runs in a
//!   process of its own limited to [`MEMORY_LIMIT`] of address space and
//!   killed after [`TIME_LIMIT`].
//! - **Bounded output.** Each rendered part is at most [`MAX_OUTPUT`] bytes;
//!   output stops being collected past it.
//! - **Strict variables.** A variable the data does not have is an error that
//!   names it (`user.name`, `user['name']`), rather than rendering as
//!   nothing, also as a filter's or function's argument (`strict`).
//! - **Escaping where it matters.** Values are HTML-escaped in `html` only;
//!   `subject` and `text` are plain text and get values as they are.
//!
//! The rendered subject is one header line: each run of CR and LF becomes one
//! space and the result is trimmed, rather than refused, since a line break
//! usually comes from data (a name pasted with a newline) the tenant does not
//! control. An empty subject after that is an error. Other control
//! characters are left to the message's own subject check.

use std::io;

pub mod frame;
mod sandbox;
mod strict;

pub use sandbox::{MEMORY_LIMIT, PARENT_ENV, Renderer, TIME_LIMIT, serve};

use herald_store::TemplateContent;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde_json::{Value, json};

/// Fuel for rendering one part: enough for loops over a few thousand items.
pub const FUEL: u64 = 100_000;

/// The largest rendered part, in bytes.
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// A template's parts after rendering.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Rendered {
    /// One line, trimmed, never empty.
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// Why a template could not be checked or rendered. Each says which field
/// ([`TemplateError::field`]) and reads well on its own to a tenant. They
/// travel from the renderer process to the node as JSON (`sandbox`).
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum TemplateError {
    /// The source does not parse. `column` counts characters from 1.
    #[error("{field}: syntax error at line {line}{}: {message}", column_text(*.column))]
    Syntax {
        #[serde(deserialize_with = "part")]
        field: Field,
        line: usize,
        column: Option<usize>,
        message: String,
    },
    /// The template uses a variable the data does not have.
    #[error("{field}: undefined variable {name} (the data has no such key)")]
    Undefined {
        #[serde(deserialize_with = "part")]
        field: Field,
        name: String,
    },
    /// The template uses a value that is missing, but which one could not be told.
    #[error("{field}: undefined value at line {line}: {message}")]
    UndefinedValue {
        #[serde(deserialize_with = "part")]
        field: Field,
        line: usize,
        message: String,
    },
    /// An `include`, `import` or `extends`.
    #[error("{field}: templates cannot include, import or extend other templates")]
    Include {
        #[serde(deserialize_with = "part")]
        field: Field,
    },
    /// Out of fuel, or a `range` over its cap.
    #[error("{field}: too much work (a loop or range is too large)")]
    TooMuchWork {
        #[serde(deserialize_with = "part")]
        field: Field,
    },
    /// The rendered part is over [`MAX_OUTPUT`].
    #[error("rendered {field} is larger than 1 MiB")]
    TooLarge {
        #[serde(deserialize_with = "part")]
        field: Field,
    },
    /// The subject renders to nothing but whitespace.
    #[error("subject: rendered subject is empty")]
    EmptySubject,
    /// The data is not a JSON object.
    #[error("data must be a JSON object, not {kind}")]
    DataNotObject {
        #[serde(deserialize_with = "data_kind")]
        kind: Field,
    },
    /// The renderer process ran out of memory (its address space limit,
    /// `sandbox::MEMORY_LIMIT`) while rendering this part.
    #[error("{field}: the template needs more than {mib} MiB to render")]
    TooMuchMemory {
        #[serde(deserialize_with = "part")]
        field: Field,
        mib: u64,
    },
    /// Rendering this part took longer than the renderer's time limit
    /// (`sandbox::TIME_LIMIT`).
    #[error("{field}: the template took longer than {seconds} s to render")]
    TooSlow {
        #[serde(deserialize_with = "part")]
        field: Field,
        seconds: u64,
    },
    /// The renderer process stopped another way while rendering this part.
    #[error("{field}: the renderer stopped while rendering it ({how})")]
    Stopped {
        #[serde(deserialize_with = "part")]
        field: Field,
        how: String,
    },
    /// No renderer process could be started or spoken to: the node's fault,
    /// not the template's.
    #[error("the template renderer is unavailable: {0}")]
    Unavailable(String),
    /// Any other failure while rendering, in MiniJinja's words.
    #[error("{field}: {message}")]
    Render {
        #[serde(deserialize_with = "part")]
        field: Field,
        message: String,
    },
}

impl TemplateError {
    /// The field the error is about: `subject`, `text`, `html` or `data`.
    pub fn field(&self) -> &'static str {
        match self {
            TemplateError::Syntax { field, .. }
            | TemplateError::Undefined { field, .. }
            | TemplateError::UndefinedValue { field, .. }
            | TemplateError::Include { field }
            | TemplateError::TooMuchWork { field }
            | TemplateError::TooLarge { field }
            | TemplateError::TooMuchMemory { field, .. }
            | TemplateError::TooSlow { field, .. }
            | TemplateError::Stopped { field, .. }
            | TemplateError::Render { field, .. } => field,
            TemplateError::Unavailable(_) => "template",
            TemplateError::EmptySubject => "subject",
            TemplateError::DataNotObject { .. } => "data",
        }
    }
}

impl TemplateError {
    /// True when the data lacks a variable the template uses: the data's
    /// fault, not the template's.
    pub fn is_undefined(&self) -> bool {
        matches!(
            self,
            TemplateError::Undefined { .. } | TemplateError::UndefinedValue { .. }
        )
    }
}

/// The name of the field an error is about. An alias, not `&'static str`
/// written out, because serde takes a field written as `&str` to borrow
/// from its input, which would tie a `TemplateError` read from JSON to that
/// JSON; [`part`] reads it as one of the names it knows instead.
type Field = &'static str;

/// A field's name read back as the one it names (see [`TemplateError::field`]).
fn part<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let name = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    PARTS
        .into_iter()
        .chain(["data", "template"])
        .find(|known| *known == name)
        .ok_or_else(|| serde::de::Error::custom(format!("no such template field {name:?}")))
}

/// A JSON kind's name (as [`json_kind`] says it) read back.
fn data_kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let name = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    let kinds = [
        json!(null),
        json!(true),
        json!(1),
        json!(""),
        json!([]),
        json!({}),
    ];
    kinds
        .iter()
        .map(json_kind)
        .find(|known| *known == name)
        .ok_or_else(|| serde::de::Error::custom(format!("no such JSON kind {name:?}")))
}

/// A template's parts, in the order they render.
pub const PARTS: [&str; 3] = ["subject", "text", "html"];

fn column_text(column: Option<usize>) -> String {
    column.map(|c| format!(", column {c}")).unwrap_or_default()
}

/// Compiles every part, reporting the first syntax error (subject, then text, then html).
pub fn check(content: &TemplateContent) -> Result<(), TemplateError> {
    let env = sandbox();
    for (field, source) in parts(content) {
        env.template_from_named_str(field, source)
            .map_err(|e| syntax_error(field, source, &e))?;
    }
    Ok(())
}

/// Renders every part with `data`, which must be a JSON object, here and
/// now: tenants' templates are rendered through [`Renderer`] instead, which
/// bounds the memory and time this may take.
pub fn render(content: &TemplateContent, data: &Value) -> Result<Rendered, TemplateError> {
    render_reporting(content, data, |_| {})
}

/// [`render`], telling `starting` the name of each part before it renders
/// it, so that a renderer that dies can be said to have died on that part.
pub fn render_reporting(
    content: &TemplateContent,
    data: &Value,
    mut starting: impl FnMut(&'static str),
) -> Result<Rendered, TemplateError> {
    if !data.is_object() {
        return Err(TemplateError::DataNotObject {
            kind: json_kind(data),
        });
    }
    let env = sandbox();
    let render_part = |field: &'static str, source| render_one(&env, field, source, data);
    starting("subject");
    let subject = one_line(&render_part("subject", &content.subject)?);
    if subject.is_empty() {
        return Err(TemplateError::EmptySubject);
    }
    let text = match &content.text {
        Some(source) => {
            starting("text");
            Some(render_part("text", source)?)
        }
        None => None,
    };
    let html = match &content.html {
        Some(source) => {
            starting("html");
            Some(render_part("html", source)?)
        }
        None => None,
    };
    Ok(Rendered {
        subject,
        text,
        html,
    })
}

/// The environment every template runs in; see the module doc.
fn sandbox<'s>() -> Environment<'s> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    // Each part is compiled under its field's name, so the name decides escaping.
    env.set_auto_escape_callback(|name| match name {
        "html" => AutoEscape::Html,
        _ => AutoEscape::None,
    });
    // Keep the source's last newline: a text body usually ends with one.
    env.set_keep_trailing_newline(true);
    env.set_formatter(escape_for_html);
    strict::install(&mut env);
    env
}

/// Writes a value into the output: in `html`, with the five characters that
/// matter in HTML text and quoted attributes escaped (MiniJinja's own
/// escaping also turns `/` into `&#x2f;`, which makes paths and URLs in
/// mail hard to read and gains nothing); elsewhere as it is.
fn escape_for_html(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    // Strict mode refuses printing an undefined value, not a list holding one.
    if strict::holds_undefined(value) {
        return Err(minijinja::Error::from(ErrorKind::UndefinedError));
    }
    if state.auto_escape() != AutoEscape::Html || value.is_safe() {
        return minijinja::escape_formatter(out, state, value);
    }
    let text = value.to_string();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
        out.write_str(&rest[..at])?;
        out.write_str(match rest.as_bytes()[at] {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            _ => "&#39;",
        })?;
        rest = &rest[at + 1..];
    }
    out.write_str(rest)?;
    Ok(())
}

/// The parts present, named as their fields.
fn parts(content: &TemplateContent) -> impl Iterator<Item = (&'static str, &str)> {
    [
        Some(("subject", content.subject.as_str())),
        content.text.as_deref().map(|s| ("text", s)),
        content.html.as_deref().map(|s| ("html", s)),
    ]
    .into_iter()
    .flatten()
}

fn render_one<'s>(
    env: &Environment<'s>,
    field: &'static str,
    source: &'s str,
    data: &Value,
) -> Result<String, TemplateError> {
    let tmpl = env
        .template_from_named_str(field, source)
        .map_err(|e| syntax_error(field, source, &e))?;
    let mut out = Capped::default();
    match tmpl.render_captured_to(data, &mut out) {
        Ok(_) => {}
        Err(_) if out.over => return Err(TemplateError::TooLarge { field }),
        Err(e) => return Err(render_error(field, source, data, &tmpl, &e)),
    }
    // MiniJinja writes whole strings; a cut inside a character cannot happen
    // below the cap, and past it the part was refused above.
    String::from_utf8(out.buf).map_err(|_| TemplateError::Render {
        field,
        message: "rendered output is not valid UTF-8".into(),
    })
}

/// A syntax error with its line and column.
fn syntax_error(field: &'static str, source: &str, e: &minijinja::Error) -> TemplateError {
    if e.kind() != ErrorKind::SyntaxError {
        return TemplateError::Render {
            field,
            message: describe(e),
        };
    }
    let (line, column) = match e.range() {
        Some(range) if range.start <= source.len() => {
            let (line, column) = line_column(source, range.start);
            (line, Some(column))
        }
        _ => (e.line().unwrap_or(1), None),
    };
    TemplateError::Syntax {
        field,
        line,
        column,
        message: e.detail().unwrap_or("invalid syntax").to_string(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Turns a failure while rendering into what a tenant can act on.
fn render_error(
    field: &'static str,
    source: &str,
    data: &Value,
    tmpl: &minijinja::Template<'_, '_>,
    e: &minijinja::Error,
) -> TemplateError {
    match e.kind() {
        ErrorKind::TemplateNotFound => TemplateError::Include { field },
        ErrorKind::OutOfFuel => TemplateError::TooMuchWork { field },
        ErrorKind::InvalidOperation
            if e.detail()
                .is_some_and(|d| d.contains("range has too many elements")) =>
        {
            TemplateError::TooMuchWork { field }
        }
        // Strict mode makes `a + 1` with no `a` an invalid operation on an undefined value.
        ErrorKind::InvalidOperation
            if e.detail().is_some_and(|d| d.contains("undefined"))
                && let Some(name) = missing_variable(source, data, tmpl, e) =>
        {
            TemplateError::Undefined { field, name }
        }
        ErrorKind::UndefinedError => match missing_variable(source, data, tmpl, e) {
            Some(name) => TemplateError::Undefined { field, name },
            None => TemplateError::UndefinedValue {
                field,
                line: e.line().unwrap_or(1),
                message: describe(e),
            },
        },
        _ => TemplateError::Render {
            field,
            message: match e.line() {
                Some(line) => format!("{} (line {line})", describe(e)),
                None => describe(e),
            },
        },
    }
}

/// MiniJinja's words for an error, without its debug dump.
fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// Names the variable an "undefined value" error is about.
///
/// MiniJinja's error does not name it, only points at the failing piece of
/// source (a name, `.title` after it, or the filter it was passed to). The
/// candidates are the variables the template reads but never sets that the
/// data lacks (`user.name` counts as one). The dotted name at or before the
/// failing piece decides: a candidate it starts with, else that name itself
/// (a loop item's missing attribute is not a candidate); failing that, the
/// candidate last written before the failing piece.
fn missing_variable(
    source: &str,
    data: &Value,
    tmpl: &minijinja::Template<'_, '_>,
    e: &minijinja::Error,
) -> Option<String> {
    let range = e.range().filter(|r| source.get(r.clone()).is_some())?;
    let mut missing: Vec<String> = tmpl
        .undeclared_variables(true)
        .into_iter()
        .filter(|name| !BUILTINS.contains(&name.split('.').next().unwrap_or_default()))
        .filter_map(|name| shortest_missing(data, &name))
        .collect();
    missing.sort();
    missing.dedup();
    if let Some(expr) = name_at(source, range.clone()) {
        let named = missing
            .iter()
            .filter(|c| {
                expr == **c
                    || expr.starts_with(&format!("{c}."))
                    || expr.starts_with(&format!("{c}["))
            })
            .min_by_key(|c| c.len());
        // A missing key inside a subscript (`user[key]`) is what is missing.
        let inside = || {
            missing
                .iter()
                .find(|c| expr.contains('[') && last_before(&expr, c, expr.len()).is_some())
        };
        // A bare name that is no candidate was set by the template (`{% set
        // z = q %}`, a loop's item): its value holds what is missing, a
        // candidate written before, found below. A path on it (a loop
        // item's missing attribute) is what is missing.
        if let Some(name) = named.or_else(inside) {
            return Some(name.clone());
        }
        if !is_identifier(&expr) {
            return Some(expr);
        }
        let written = last_candidate_before(source, missing, range.end);
        return Some(written.unwrap_or(expr));
    }
    // An expression (`a or b`): the first candidate in it fails first.
    let within = missing
        .iter()
        .filter_map(|c| {
            let at = occurrences(source, c).find(|at| range.contains(at))?;
            Some((at, c.clone()))
        })
        .min();
    within
        .map(|(_, c)| c)
        .or_else(|| last_candidate_before(source, missing, range.end))
}

/// The candidate written last before `end`.
fn last_candidate_before(source: &str, missing: Vec<String>, end: usize) -> Option<String> {
    missing
        .into_iter()
        .filter_map(|c| last_before(source, &c, end).map(|at| (at, c)))
        .max()
        .map(|(_, c)| c)
}

/// Names MiniJinja provides that the template's static analysis still lists as undeclared.
const BUILTINS: &[&str] = &[
    "range",
    "dict",
    "namespace",
    "debug",
    "loop",
    "self",
    "super",
    "varargs",
    "kwargs",
    "caller",
];

/// The dotted name the failing piece of source belongs to: the piece itself
/// with the name before a leading `.`, or the name before a `|` when the
/// piece is a filter. A path with subscripts (`user['name']`, `items[3]`)
/// is named as written, without its spaces.
fn name_at(source: &str, range: std::ops::Range<usize>) -> Option<String> {
    let piece = source[range.clone()].trim();
    // Words apart (`a or b`) are an expression, not one name.
    let is_word_char = |c: char| c.is_alphanumeric() || matches!(c, '_' | '\'' | '"');
    let apart = piece
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .any(|w| w[0].ends_with(is_word_char) && w[1].starts_with(is_word_char));
    if apart {
        return None;
    }
    let before = &source[..range.start];
    let (before, piece) = if is_identifier(piece) && before.trim_end().ends_with('|') {
        (before.trim_end().trim_end_matches('|').trim_end(), "")
    } else {
        (before, piece)
    };
    let is_path_char =
        |c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '\'' | '"');
    let run_start = before
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_path_char(*c))
        .last()
        .map_or(before.len(), |(i, _)| i);
    let run = &before[run_start..];
    // The longest path that ends where the piece does.
    run.char_indices()
        .map(|(i, _)| i)
        .chain([run.len()])
        .find_map(|i| {
            let name: String = format!("{}{piece}", &run[i..]).split_whitespace().collect();
            let path = if name.contains('[') {
                is_subscripted_path(&name)
            } else {
                !name.is_empty() && name.split('.').all(is_identifier)
            };
            path.then_some(name)
        })
}

/// Where `name` last occurs in `source`, as a whole name, starting before `end`.
fn last_before(source: &str, name: &str, end: usize) -> Option<usize> {
    occurrences(source, name).filter(|i| *i < end).last()
}

/// Where `name` occurs in `source` as a whole name, in order.
fn occurrences<'a>(source: &'a str, name: &'a str) -> impl Iterator<Item = usize> + 'a {
    let is_name_char = |c: char| c.is_alphanumeric() || c == '_';
    source
        .match_indices(name)
        .filter(move |(i, _)| {
            let before = source[..*i].chars().next_back();
            let after = source[i + name.len()..].chars().next();
            !before.is_some_and(|c| is_name_char(c) || c == '.') && !after.is_some_and(is_name_char)
        })
        .map(|(i, _)| i)
}

/// The shortest prefix of a dotted path that the data does not have
/// (`user` when there is no user, `user.name` when the user has no name).
fn shortest_missing(data: &Value, path: &str) -> Option<String> {
    let mut at = data;
    let mut end = 0;
    for (i, key) in path.split('.').enumerate() {
        end += key.len() + usize::from(i > 0);
        match at.get(key) {
            Some(next) => at = next,
            None => return Some(path[..end].to_string()),
        }
    }
    None
}

/// A name followed by attributes (`.name`) and subscripts whose key is a
/// number, a quoted string or another such path: `user['name']`, `items[3].x`.
fn is_subscripted_path(s: &str) -> bool {
    fn path(s: &str) -> Option<&str> {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        if !is_identifier(&s[..end]) {
            return None;
        }
        let mut rest = &s[end..];
        loop {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                if !is_identifier(&after[..end]) {
                    return None;
                }
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                rest = key(after)?.strip_prefix(']')?;
            } else {
                return Some(rest);
            }
        }
    }
    fn key(s: &str) -> Option<&str> {
        if let Some(quote) = s.chars().next().filter(|c| *c == '\'' || *c == '"') {
            let end = s[1..].find(quote)?;
            return Some(&s[end + 2..]);
        }
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        if digits > 0 {
            return Some(&s[digits..]);
        }
        path(s)
    }
    path(s).is_some_and(str::is_empty)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// One header line: each run of CR and LF becomes a space, then trimmed.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_break = false;
    for c in s.chars() {
        if c == '\r' || c == '\n' {
            if !in_break {
                out.push(' ');
            }
            in_break = true;
        } else {
            out.push(c);
            in_break = false;
        }
    }
    out.trim().to_string()
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Collects output up to [`MAX_OUTPUT`] bytes and refuses the write that
/// would pass it, which stops the render.
#[derive(Default)]
struct Capped {
    buf: Vec<u8>,
    over: bool,
}

impl io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() + bytes.len() > MAX_OUTPUT {
            self.over = true;
            return Err(io::Error::other("output too large"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn content(subject: &str, text: Option<&str>, html: Option<&str>) -> TemplateContent {
        TemplateContent {
            subject: subject.into(),
            text: text.map(Into::into),
            html: html.map(Into::into),
        }
    }

    fn text_only(text: &str) -> TemplateContent {
        content("Hello", Some(text), None)
    }

    /// Rendering `source` as the text with `data` fails naming `name`.
    fn assert_names(source: &str, data: &Value, name: &str) {
        let err = render(&text_only(source), data).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Undefined {
                field: "text",
                name: name.into()
            },
            "{source}"
        );
    }

    #[test]
    fn renders_every_part() {
        let c = content(
            "Hi {{ name }}",
            Some("Dear {{ name }},\n"),
            Some("<p>{{ name }}</p>"),
        );
        let r = render(&c, &json!({"name": "Ada"})).unwrap();
        assert_eq!(
            r,
            Rendered {
                subject: "Hi Ada".into(),
                text: Some("Dear Ada,\n".into()),
                html: Some("<p>Ada</p>".into()),
            }
        );
        check(&c).unwrap();
    }

    #[test]
    fn a_missing_part_stays_missing() {
        let r = render(&content("s", None, Some("h")), &json!({})).unwrap();
        assert_eq!(r.text, None);
        assert_eq!(r.html.as_deref(), Some("h"));
    }

    #[test]
    fn syntax_errors_name_field_line_and_column() {
        let cases = [
            (content("Hi {{ name", None, Some("x")), "subject", 1),
            (
                content("ok", Some("line one\nline two {% if %}"), None),
                "text",
                2,
            ),
            (
                content("ok", None, Some("<p>\n</p>\n  {{ a }} {% for x in %}")),
                "html",
                3,
            ),
        ];
        for (c, field, line) in cases {
            let err = check(&c).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
            let TemplateError::Syntax {
                line: got_line,
                column,
                ..
            } = &err
            else {
                panic!("not a syntax error: {err:?}");
            };
            assert_eq!(*got_line, line, "{err}");
            assert!(column.is_some(), "{err}");
            let shown = err.to_string();
            assert!(
                shown.starts_with(&format!("{field}: syntax error at line {line}, column ")),
                "{shown}"
            );
            // The same error comes out of render.
            assert_eq!(render(&c, &json!({})).unwrap_err(), err);
        }
    }

    #[test]
    fn syntax_error_column_points_at_the_fault() {
        // `{% endif %}` with no `if` on line 3; MiniJinja points at `endif`, column 10.
        let c = content("ok", None, Some("a\nb\nabcdef{% endif %}"));
        let err = check(&c).unwrap_err();
        let TemplateError::Syntax { line, column, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*line, 3, "{err}");
        assert_eq!(*column, Some(10), "{err}");
        assert_eq!(
            err.to_string(),
            "html: syntax error at line 3, column 10: unknown statement endif"
        );
        assert!(!err.to_string().contains("Error {"), "{err}");
    }

    #[test]
    fn unexpected_end_of_input_is_reported() {
        let err = check(&content("ok", None, Some("<p>\n{% if a %}\n  x {{"))).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("html: syntax error at line 3, column "),
            "{shown}"
        );
        assert!(shown.contains("end of input"), "{shown}");
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("a\nbc", 3), (2, 2));
        assert_eq!(line_column("é\néé{", 7), (2, 3));
    }

    #[test]
    fn a_missing_top_level_variable_is_named() {
        let err = render(&text_only("Hello {{ name }}"), &json!({})).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Undefined {
                field: "text",
                name: "name".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "text: undefined variable name (the data has no such key)"
        );
    }

    #[test]
    fn a_missing_nested_variable_is_named() {
        let c = text_only("Hello {{ user.name }}");
        let err = render(&c, &json!({"user": {"email": "a@b"}})).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Undefined {
                field: "text",
                name: "user.name".into()
            }
        );
        // With no user at all, the user is what is missing.
        let err = render(&c, &json!({})).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Undefined {
                field: "text",
                name: "user".into()
            }
        );
    }

    #[test]
    fn the_failing_variable_is_named_among_several_missing() {
        let c = text_only("{% if flag is defined %}{{ a }}{% endif %}{{ b | upper }}");
        let err = render(&c, &json!({})).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Undefined {
                field: "text",
                name: "b".into()
            }
        );
    }

    #[test]
    fn a_missing_attribute_of_a_loop_item_is_reported() {
        let c = text_only("{% for item in items %}{{ item.title }}{% endfor %}");
        let err = render(&c, &json!({"items": [{"name": "x"}]})).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Undefined {
                field: "text",
                name: "item.title".into()
            }
        );
        let c = text_only("{% for item in items %}{{ item.title | upper }}{% endfor %}");
        let err = render(&c, &json!({"items": [{"name": "x"}]})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "text: undefined variable item.title (the data has no such key)"
        );
    }

    #[test]
    fn a_missing_variable_in_an_expression_is_named() {
        for (source, name) in [
            ("{{ a + 1 }}", "a"),
            ("{% if x %}y{% endif %}", "x"),
            ("{{ a }} {{ b }}", "a"),
            ("line\n{{ shop.owner.name }}", "shop.owner"),
        ] {
            assert_names(source, &json!({"shop": {"id": 1}}), name);
        }
    }

    #[test]
    fn builtins_are_not_taken_for_missing_variables() {
        let c = text_only("{% for i in range(2) %}{{ i }}{% endfor %}{{ total + 1 }}");
        let err = render(&c, &json!({})).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Undefined {
                field: "text",
                name: "total".into()
            }
        );
    }

    #[test]
    fn a_missing_argument_of_a_filter_or_function_is_named() {
        let data = json!({"a": 1, "items": [1, 2], "name": "ada"});
        for (source, name) in [
            ("{{ '%s-%s'|format(a, b) }}", "b"),
            ("{{ items|join(sep) }}", "sep"),
            ("{{ dict(a=missing) }}", "missing"),
            ("{{ range(1, stop)|join }}", "stop"),
            ("{{ name|default(fallback) }}", "fallback"),
            ("{{ name|replace('a', other) }}", "other"),
            ("{{ missing|join }}", "missing"),
        ] {
            assert_names(source, &data, name);
        }
        // `default` still takes a missing value to filter, and the others
        // still work with every argument given.
        let source = "{{ nope|default('x') }} {{ '%s-%s'|format(a, name) }} {{ items|join('+') }}";
        let r = render(&text_only(source), &data).unwrap();
        assert_eq!(r.text.as_deref(), Some("x 1-ada 1+2"));
    }

    #[test]
    fn a_missing_variable_inside_a_list_tuple_or_map_is_named() {
        let data = json!({"first": "Ada", "items": [1, 2]});
        for (source, name) in [
            ("Hello {{ [first, last]|join(' ') }}!", "last"),
            ("{{ [missing] }}", "missing"),
            ("{{ {'k': missing}|length }}", "missing"),
            ("{{ (missing,)|length }}", "missing"),
            ("{{ [[first], {'k': [missing]}]|length }}", "missing"),
            ("{{ items|join(', ') }} {{ {'k': missing} }}", "missing"),
            ("{{ '%s'|format([missing]) }}", "missing"),
            ("{{ [missing]|default('x') }}", "missing"),
            ("{% set l = [first, nope] %}{{ l|length }}", "nope"),
            (
                "{% for k in [first, volume] %}{{ k }}{% endfor %}",
                "volume",
            ),
        ] {
            assert_names(source, &data, name);
        }
        // Lists, tuples and maps of defined values still work.
        let source = "{{ [first, 'Lovelace']|join(' ') }} {{ {'k': first}|length }} \
                      {{ (first,)|length }} {{ [first] }}";
        let r = render(&text_only(source), &data).unwrap();
        assert_eq!(r.text.as_deref(), Some(r#"Ada Lovelace 1 1 ["Ada"]"#));
    }

    #[test]
    fn a_missing_variable_behind_an_expression_or_a_set_name_is_named() {
        let data = json!({"host": "db1"});
        for (source, name) in [
            ("{{ a or b }}", "a"),
            ("{{ host and b }}", "b"),
            ("{% set z = q %}{{ z }}", "q"),
            ("{% set z = q %}{{ z|upper }}", "q"),
        ] {
            assert_names(source, &data, name);
        }
    }

    #[test]
    fn debug_is_not_available() {
        for source in ["{{ debug() }}", "{{ debug(x) }}"] {
            let err = render(&text_only(source), &json!({"x": 1})).unwrap_err();
            let shown = err.to_string();
            assert!(
                shown.contains("debug is not available in templates"),
                "{source}: {shown}"
            );
            assert!(!shown.contains("herald_api"), "{shown}");
        }
    }

    #[test]
    fn a_missing_value_reached_by_subscript_is_named_as_written() {
        let data = json!({"user": {"email": "a@b"}, "items": [{"x": 1}], "key": "name"});
        for (source, name) in [
            ("{{ user['name'] }}", "user['name']"),
            ("{{ user[\"name\"] }}", "user[\"name\"]"),
            ("{{ items[3] }}", "items[3]"),
            ("{{ user['name'] | upper }}", "user['name']"),
            ("{{ items[3].x }}", "items[3].x"),
            ("{{ user[key] }}", "user[key]"),
            ("{{ user[nokey] }}", "nokey"),
            ("{{ nobody['name'] }}", "nobody"),
        ] {
            assert_names(source, &data, name);
        }
        let err = render(&text_only("{{ items[3] }}"), &data).unwrap_err();
        assert_eq!(
            err.to_string(),
            "text: undefined variable items[3] (the data has no such key)"
        );
    }

    #[test]
    fn errors_read_back_from_json_as_they_were() {
        let errors = [
            TemplateError::Undefined {
                field: "html",
                name: "user['name']".into(),
            },
            TemplateError::TooMuchMemory {
                field: "text",
                mib: 768,
            },
            TemplateError::DataNotObject { kind: "an array" },
            TemplateError::EmptySubject,
        ];
        for e in errors {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<TemplateError>(&json).unwrap(), e);
        }
        let forged = r#"{"TooSlow":{"field":"body","seconds":2}}"#;
        assert!(serde_json::from_str::<TemplateError>(forged).is_err());
    }

    #[test]
    fn values_are_escaped_in_html_only() {
        let c = content("{{ v }}", Some("{{ v }}"), Some("<p>{{ v }}</p>"));
        let r = render(&c, &json!({"v": "<b>&"})).unwrap();
        assert_eq!(r.subject, "<b>&");
        assert_eq!(r.text.as_deref(), Some("<b>&"));
        assert_eq!(r.html.as_deref(), Some("<p>&lt;b&gt;&amp;</p>"));
    }

    #[test]
    fn a_huge_loop_runs_out_of_work() {
        let nested =
            "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}";
        for source in ["{% for i in range(100000000) %}{{ i }}{% endfor %}", nested] {
            let err = render(&content("s", None, Some(source)), &json!({})).unwrap_err();
            assert_eq!(err, TemplateError::TooMuchWork { field: "html" });
            assert_eq!(
                err.to_string(),
                "html: too much work (a loop or range is too large)"
            );
        }
    }

    #[test]
    fn include_import_and_extends_are_refused() {
        for source in [
            r#"{% include "other" %}"#,
            r#"{% import "other" as o %}{{ o.x }}"#,
            r#"{% from "other" import x %}"#,
            r#"{% extends "other" %}"#,
            r#"{% include "text" %}"#,
        ] {
            let err = render(&text_only(source), &json!({})).unwrap_err();
            assert_eq!(err, TemplateError::Include { field: "text" }, "{source}");
            assert_eq!(
                err.to_string(),
                "text: templates cannot include, import or extend other templates"
            );
        }
    }

    #[test]
    fn output_over_one_mib_is_refused() {
        let source = "{% for i in range(3000) %}{{ chunk }}{% endfor %}";
        let data = json!({"chunk": "x".repeat(1000)});
        let err = render(&content("s", None, Some(source)), &data).unwrap_err();
        assert_eq!(err, TemplateError::TooLarge { field: "html" });
        assert_eq!(err.to_string(), "rendered html is larger than 1 MiB");
        // Just under the limit renders.
        let data = json!({"chunk": "x".repeat(MAX_OUTPUT / 3000)});
        render(&content("s", None, Some(source)), &data).unwrap();
    }

    #[test]
    fn data_must_be_an_object() {
        for data in [json!([1]), json!("x"), json!(null), json!(3)] {
            let err = render(&text_only("x"), &data).unwrap_err();
            assert_eq!(err.field(), "data");
            assert!(
                err.to_string().starts_with("data must be a JSON object"),
                "{err}"
            );
        }
    }

    #[test]
    fn filters_work() {
        let r = render(&text_only("{{ name | upper }}"), &json!({"name": "ada"})).unwrap();
        assert_eq!(r.text.as_deref(), Some("ADA"));
    }

    #[test]
    fn loops_over_arrays_from_data() {
        let c = text_only(
            "{% for o in orders %}{{ loop.index }}. {{ o.item }} x{{ o.qty }}\n{% endfor %}",
        );
        let data = json!({"orders": [{"item": "tea", "qty": 2}, {"item": "cake", "qty": 1}]});
        let r = render(&c, &data).unwrap();
        assert_eq!(r.text.as_deref(), Some("1. tea x2\n2. cake x1\n"));
    }

    #[test]
    fn the_subject_becomes_one_trimmed_line() {
        let c = content("  Hi\r\n{{ name }}\n\nthere  ", Some("x"), None);
        let r = render(&c, &json!({"name": "Ada\nLovelace"})).unwrap();
        assert_eq!(r.subject, "Hi Ada Lovelace there");
    }

    #[test]
    fn an_empty_subject_is_refused() {
        let err = render(
            &content("{{ s }}\n", Some("x"), None),
            &json!({"s": " \r\n "}),
        )
        .unwrap_err();
        assert_eq!(err, TemplateError::EmptySubject);
        assert_eq!(err.field(), "subject");
    }

    #[test]
    fn other_render_errors_read_plainly() {
        let err = render(&text_only("{{ \"a\" + 1 }}"), &json!({})).unwrap_err();
        assert_eq!(err.field(), "text");
        let shown = err.to_string();
        assert!(shown.starts_with("text: "), "{shown}");
        assert!(
            !shown.contains("Error {") && !shown.contains("kind:"),
            "{shown}"
        );
        let err = render(&text_only("{{ x | nosuchfilter }}"), &json!({"x": 1})).unwrap_err();
        assert!(
            err.to_string().contains("nosuchfilter") || err.to_string().contains("unknown filter"),
            "{err}"
        );
    }
}
