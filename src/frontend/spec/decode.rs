//! Typed reads from a span-preserving TOML tree that record a diagnostic for
//! every problem instead of stopping at the first, so `imgbuild check` can list
//! them all.

use std::sync::Arc;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diag::{Diagnostic, SourceFile, Span, did_you_mean};

/// A value with the span it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> S<T> {
    pub(crate) fn new(value: T, span: impl Into<Span>) -> Self {
        S {
            value,
            span: span.into(),
        }
    }
}

pub(crate) type V<'i> = Spanned<DeValue<'i>>;

pub(crate) struct Decoder {
    pub(crate) file: Arc<SourceFile>,
    pub(crate) diags: Vec<Diagnostic>,
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl Decoder {
    pub(crate) fn new(file: Arc<SourceFile>) -> Self {
        Decoder {
            file,
            diags: Vec::new(),
        }
    }

    pub(crate) fn error(
        &mut self,
        span: impl Into<Span>,
        msg: impl Into<String>,
    ) -> &mut Diagnostic {
        let d = Diagnostic::error(&self.file, span, msg);
        self.diags.push(d);
        let last = self.diags.len() - 1;
        &mut self.diags[last]
    }

    pub(crate) fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn wrong_type(&mut self, v: &V<'_>, key: &str, expected: &str) {
        let got = type_name(v.get_ref());
        self.error(v.span(), format!("`{key}` must be {expected}, not {got}"))
            .label = Some(format!("expected {expected}"));
    }

    /// Reports every key of `t` not in `allowed`, with a "did you mean".
    pub(crate) fn check_keys(&mut self, t: &DeTable<'_>, allowed: &[&str], what: &str) {
        for (k, _) in t.iter() {
            let name = k.get_ref().as_ref();
            if !allowed.contains(&name) {
                let help = did_you_mean(name, allowed.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("{what} accepts: {}", allowed.join(", ")));
                let d = Diagnostic::error(
                    &self.file,
                    k.span(),
                    format!("unknown key `{name}` in {what}"),
                )
                .with_label("unknown key")
                .with_help(help);
                self.push(d);
            }
        }
    }

    pub(crate) fn table<'a, 'i>(&mut self, v: &'a V<'i>, key: &str) -> Option<&'a DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong_type(v, key, "a table");
                None
            }
        }
    }

    pub(crate) fn string(&mut self, v: &V<'_>, key: &str) -> Option<S<String>> {
        match v.get_ref() {
            DeValue::String(s) => Some(S::new(s.to_string(), v.span())),
            _ => {
                self.wrong_type(v, key, "a string");
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, v: &V<'_>, key: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(v, key, "a boolean (true or false)");
                None
            }
        }
    }

    pub(crate) fn integer(&mut self, v: &V<'_>, key: &str) -> Option<S<i64>> {
        match v.get_ref() {
            DeValue::Integer(i) => {
                let digits = i.as_str().replace('_', "");
                let digits = digits
                    .trim_start_matches('+')
                    .trim_start_matches("0x")
                    .trim_start_matches("0o")
                    .trim_start_matches("0b");
                let neg = digits.starts_with('-');
                match i64::from_str_radix(digits.trim_start_matches('-'), i.radix()) {
                    Ok(n) => Some(S::new(if neg { -n } else { n }, v.span())),
                    Err(_) => {
                        self.error(v.span(), format!("`{key}` is out of range"));
                        None
                    }
                }
            }
            _ => {
                self.wrong_type(v, key, "an integer");
                None
            }
        }
    }

    /// An array of strings.
    pub(crate) fn string_array(&mut self, v: &V<'_>, key: &str) -> Option<Vec<S<String>>> {
        match v.get_ref() {
            DeValue::Array(a) => {
                let mut out = Vec::new();
                let mut ok = true;
                for item in a.iter() {
                    match self.string(item, &format!("{key}[]")) {
                        Some(s) => out.push(s),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            _ => {
                self.wrong_type(v, key, "an array of strings");
                None
            }
        }
    }

    /// A string or an array of strings (one or many).
    pub(crate) fn one_or_many(&mut self, v: &V<'_>, key: &str) -> Option<Vec<S<String>>> {
        match v.get_ref() {
            DeValue::String(_) => self.string(v, key).map(|s| vec![s]),
            DeValue::Array(_) => self.string_array(v, key),
            _ => {
                self.wrong_type(v, key, "a string or an array of strings");
                None
            }
        }
    }

    /// A table of string values, in source order.
    pub(crate) fn string_map(
        &mut self,
        v: &V<'_>,
        key: &str,
    ) -> Option<Vec<(S<String>, S<String>)>> {
        let t = self.table(v, key)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (k, val) in t.iter() {
            let name = S::new(k.get_ref().to_string(), k.span());
            match self.string(val, &format!("{key}.{}", name.value)) {
                Some(s) => out.push((name, s)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// An array of tables, or a single table (for one element).
    pub(crate) fn tables<'a, 'i>(
        &mut self,
        v: &'a V<'i>,
        key: &str,
    ) -> Option<Vec<(&'a DeTable<'i>, Span)>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(vec![(t, v.span().into())]),
            DeValue::Array(a) => {
                let mut out = Vec::new();
                let mut ok = true;
                for item in a.iter() {
                    match item.get_ref() {
                        DeValue::Table(t) => out.push((t, item.span().into())),
                        _ => {
                            self.wrong_type(item, &format!("{key}[]"), "a table");
                            ok = false;
                        }
                    }
                }
                ok.then_some(out)
            }
            _ => {
                self.wrong_type(v, key, "a table or an array of tables");
                None
            }
        }
    }
}

/// Looks up `key` in a table.
pub(crate) fn get<'a, 'i>(t: &'a DeTable<'i>, key: &str) -> Option<&'a V<'i>> {
    t.iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}
