//! `--format` for `images` and `inspect`: the part of Go's text/template
//! that users script docker with: `{{.Field.Sub}}`, the `json` and `index`
//! functions, pipelines (`{{.Config | json}}`), literals and `{{- -}}`
//! trimming, over JSON data, printed as Go prints it (`[a b]`,
//! `map[k:v]`, `<no value>` for a missing field).
//!
//! Written here because the Rust ports at hand do not fit: gtmpl prints
//! lists and maps in Rust's debug form (`[String("a")]`), not Go's, and
//! gotmpl needs a newer compiler than this crate's rust-version.

use serde_json::Value;

/// A template that cannot be parsed or applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// `{{` without its `}}`.
    #[error("template: unclosed action starting at byte {0}")]
    Unclosed(usize),
    /// Something that is not a field, a literal or a known function.
    #[error("template: unexpected `{0}`")]
    Unexpected(String),
    /// A function other than `json` and `index`.
    #[error("template: function \"{0}\" not defined")]
    UnknownFunction(String),
    /// A function given the wrong arguments.
    #[error("template: {0}")]
    BadCall(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// `.A.B` (empty: `.` itself).
    Field(Vec<String>),
    /// A string or number literal.
    Literal(Value),
}

#[derive(Debug, Clone, PartialEq)]
enum Command {
    Value(Operand),
    Call(String, Vec<Operand>),
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Action(Vec<Command>),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses a `--format` as the docker CLI takes it: `\t` and `\n`
    /// written out stand for a tab and a newline.
    ///
    /// # Errors
    /// As [`Template::parse`].
    pub fn parse_docker(text: &str) -> Result<Self, TemplateError> {
        Template::parse(&text.replace("\\t", "\t").replace("\\n", "\n"))
    }

    /// Parses `text`.
    ///
    /// # Errors
    /// An unclosed action, or one that is not a pipeline of fields,
    /// literals and `json`/`index` calls.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(start) = rest.find("{{") {
            let mut before = rest[..start].to_string();
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or(TemplateError::Unclosed(offset + start))?;
            let mut inner = &after[..end];
            if let Some(s) = inner
                .strip_prefix('-')
                .filter(|s| s.starts_with([' ', '\t', '\n']))
            {
                before.truncate(before.trim_end().len());
                inner = s;
            }
            let mut trim_after = false;
            if let Some(s) = inner
                .strip_suffix('-')
                .filter(|s| s.ends_with([' ', '\t', '\n']))
            {
                trim_after = true;
                inner = s;
            }
            if !before.is_empty() {
                pieces.push(Piece::Text(before));
            }
            pieces.push(Piece::Action(pipeline(inner)?));
            rest = &after[end + 2..];
            offset += start + 2 + end + 2;
            if trim_after {
                let trimmed = rest.trim_start();
                offset += rest.len() - trimmed.len();
                rest = trimmed;
            }
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template { pieces })
    }

    /// Applies the template to `data`.
    ///
    /// # Errors
    /// A function given the wrong arguments.
    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Action(cmds) => {
                    let mut v: Option<Value> = None;
                    for c in cmds {
                        v = eval(c, data, v)?;
                    }
                    match v {
                        Some(v) => go_print(&v, &mut out),
                        None => out.push_str("<no value>"),
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Splits an action into words, keeping string literals whole.
fn words(s: &str) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            let mut w = String::from('"');
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                w.push(c);
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        w.push(n);
                    }
                } else if c == '"' {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err(TemplateError::Unexpected(w));
            }
            out.push(w);
        } else if c == '|' {
            chars.next();
            out.push("|".into());
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '|' {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

fn pipeline(s: &str) -> Result<Vec<Command>, TemplateError> {
    let words = words(s)?;
    let mut cmds = Vec::new();
    for group in words.split(|w| w == "|") {
        let Some((first, args)) = group.split_first() else {
            return Err(TemplateError::Unexpected(s.trim().to_string()));
        };
        if first.starts_with('.')
            || first.starts_with('"')
            || first.starts_with(|c: char| c.is_ascii_digit())
        {
            if !args.is_empty() {
                return Err(TemplateError::Unexpected(args.join(" ")));
            }
            cmds.push(Command::Value(operand(first)?));
        } else {
            match first.as_str() {
                "json" | "index" => {}
                other => return Err(TemplateError::UnknownFunction(other.to_string())),
            }
            let args = args.iter().map(|a| operand(a)).collect::<Result<_, _>>()?;
            cmds.push(Command::Call(first.clone(), args));
        }
    }
    if cmds.is_empty() {
        return Err(TemplateError::Unexpected(s.trim().to_string()));
    }
    Ok(cmds)
}

fn operand(w: &str) -> Result<Operand, TemplateError> {
    if w == "." {
        return Ok(Operand::Field(Vec::new()));
    }
    if let Some(path) = w.strip_prefix('.') {
        let parts: Vec<String> = path.split('.').map(str::to_string).collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        {
            return Err(TemplateError::Unexpected(w.to_string()));
        }
        return Ok(Operand::Field(parts));
    }
    serde_json::from_str::<Value>(w)
        .ok()
        .filter(|v| v.is_string() || v.is_number())
        .map(Operand::Literal)
        .ok_or_else(|| TemplateError::Unexpected(w.to_string()))
}

fn resolve(op: &Operand, data: &Value) -> Option<Value> {
    match op {
        Operand::Literal(v) => Some(v.clone()),
        Operand::Field(path) => {
            let mut v = data;
            for p in path {
                v = v.as_object()?.get(p)?;
            }
            Some(v.clone())
        }
    }
}

fn eval(c: &Command, data: &Value, piped: Option<Value>) -> Result<Option<Value>, TemplateError> {
    match c {
        Command::Value(op) => Ok(resolve(op, data)),
        Command::Call(name, ops) => {
            let mut args: Vec<Option<Value>> = ops.iter().map(|o| resolve(o, data)).collect();
            if let Some(p) = piped {
                args.push(Some(p));
            }
            match name.as_str() {
                "json" => match args.as_slice() {
                    [v] => {
                        let v = v.clone().unwrap_or(Value::Null);
                        Ok(Some(Value::String(v.to_string())))
                    }
                    _ => Err(TemplateError::BadCall(format!(
                        "json takes one argument, got {}",
                        args.len()
                    ))),
                },
                _ => {
                    let Some((first, keys)) = args.split_first() else {
                        return Err(TemplateError::BadCall("index needs an argument".into()));
                    };
                    let mut v = first.clone();
                    for k in keys {
                        v = match (v, k) {
                            // Go's index of a missing key (or of a nil map)
                            // is the zero value: an empty string.
                            (Some(Value::Object(m)), Some(Value::String(k))) => {
                                Some(m.get(k).cloned().unwrap_or(Value::String(String::new())))
                            }
                            (None | Some(Value::Null), Some(Value::String(_))) => {
                                Some(Value::String(String::new()))
                            }
                            (Some(Value::Array(a)), Some(Value::Number(n))) => {
                                let i = n.as_u64().and_then(|i| usize::try_from(i).ok());
                                match i.and_then(|i| a.get(i)) {
                                    Some(x) => Some(x.clone()),
                                    None => {
                                        return Err(TemplateError::BadCall(format!(
                                            "index out of range: {n}"
                                        )));
                                    }
                                }
                            }
                            (v, k) => {
                                return Err(TemplateError::BadCall(format!(
                                    "cannot index {} with {}",
                                    v.map_or("nothing".into(), |v| kind(&v).to_string()),
                                    k.as_ref().map_or("nothing", kind)
                                )));
                            }
                        };
                    }
                    Ok(v)
                }
            }
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

/// Go's `%v` of decoded JSON.
fn go_print(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                go_print(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("map[");
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                go_print(&m[k], out);
            }
            out.push(']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: &Value) -> Result<String, TemplateError> {
        Template::parse(t)?.render(v)
    }

    #[test]
    fn fields_functions_and_go_printing() {
        let v = json!({
            "Id": "sha256:ab", "Size": 15300,
            "Config": {"Env": ["A=1", "B=2"], "Labels": {"b": "2", "a.b": "1"}, "User": ""},
            "RepoTags": ["x:1"], "N": null,
        });
        assert_eq!(r("{{.Id}} {{.Size}}", &v).unwrap(), "sha256:ab 15300");
        assert_eq!(r("{{.Config.Env}}", &v).unwrap(), "[A=1 B=2]");
        assert_eq!(r("{{.Config.Labels}}", &v).unwrap(), "map[a.b:1 b:2]");
        assert_eq!(r("{{index .Config.Labels \"a.b\"}}", &v).unwrap(), "1");
        assert_eq!(r("{{index .RepoTags 0}}", &v).unwrap(), "x:1");
        assert_eq!(r("{{json .Config.Env}}", &v).unwrap(), r#"["A=1","B=2"]"#);
        assert_eq!(r("{{.Config.Env | json}}", &v).unwrap(), r#"["A=1","B=2"]"#);
        assert_eq!(
            r("{{.Nope}}|{{.N}}|{{.Config.User}}", &v).unwrap(),
            "<no value>|<nil>|"
        );
        assert_eq!(r("a {{- .Size -}} b", &v).unwrap(), "a15300b");
        assert_eq!(r("{{json .}}", &json!({"a": 1})).unwrap(), r#"{"a":1}"#);
        assert_eq!(r("[{{index .Config.Labels \"nope\"}}]", &v).unwrap(), "[]");
        assert_eq!(r("[{{index .Config.Missing \"k\"}}]", &v).unwrap(), "[]");
        let t = Template::parse_docker(r"{{.Id}}\t{{.Size}}\n").unwrap();
        assert_eq!(t.render(&v).unwrap(), "sha256:ab\t15300\n");
    }

    #[test]
    fn errors_are_typed() {
        let v = json!({});
        assert_eq!(r("{{.A", &v), Err(TemplateError::Unclosed(0)));
        assert_eq!(
            r("{{upper .A}}", &v),
            Err(TemplateError::UnknownFunction("upper".into()))
        );
        assert!(matches!(
            r("{{index .A 3}}", &json!({"A": [1]})),
            Err(TemplateError::BadCall(_))
        ));
        assert!(matches!(
            r("{{.A.}}", &v),
            Err(TemplateError::Unexpected(_))
        ));
    }
}
