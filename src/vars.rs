//! Variables given from outside the policy: `--var name=value` and `--vars FILE.toml`.
//!
//! They override `let` defaults. Values stay text here; the checker reads them as the
//! place they are used requires (a rate, an address, a set of ports…).

use crate::codes::Code;
use crate::diagnostic::Diagnostic;

/// An external value: one scalar or a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtValue {
    Scalar(String),
    Set(Vec<String>),
}

/// One variable given from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalVar {
    pub name: String,
    pub value: ExtValue,
    /// Where it came from, for messages: `--var uplink` or `vars file host.toml`.
    pub origin: String,
}

/// All external variables, later entries overriding earlier ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalVars {
    pub vars: Vec<ExternalVar>,
}

impl ExternalVars {
    /// The effective value of each name (last one wins), sorted by name.
    pub fn effective(&self) -> Vec<&ExternalVar> {
        let mut last: std::collections::BTreeMap<&str, &ExternalVar> = Default::default();
        for v in &self.vars {
            last.insert(&v.name, v);
        }
        last.into_values().collect()
    }

    pub fn get(&self, name: &str) -> Option<&ExternalVar> {
        self.vars.iter().rev().find(|v| v.name == name)
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Parses one `--var name=value`. A value with commas or in braces is a set.
pub fn parse_var_arg(arg: &str) -> Result<ExternalVar, Diagnostic> {
    let Some((name, value)) = arg.split_once('=') else {
        return Err(
            Diagnostic::new(Code::NQ063, format!("`--var {arg}` has no value"))
                .help(format!("write `--var {arg}=VALUE`")),
        );
    };
    let name = name.trim();
    if !valid_name(name) {
        return Err(
            Diagnostic::new(Code::NQ063, format!("`{name}` is not a variable name")).help(
                "variable names start with a letter or `_` and hold letters, digits, `_` and `-`",
            ),
        );
    }
    let value = parse_ext_value(value.trim()).map_err(|why| {
        Diagnostic::new(
            Code::NQ063,
            format!("value of `--var {name}` cannot be read: {why}"),
        )
        .help("write one value (`--var uplink=eth0`) or a set (`--var cp=10.0.0.10,10.0.0.11`)")
    })?;
    Ok(ExternalVar {
        name: name.to_string(),
        value,
        origin: format!("--var {name}"),
    })
}

fn parse_ext_value(text: &str) -> Result<ExtValue, String> {
    let braced = text.starts_with('{') || text.ends_with('}');
    if braced && !(text.starts_with('{') && text.ends_with('}') && text.len() >= 2) {
        return Err(format!("unbalanced braces in `{text}`"));
    }
    let inner = if braced {
        &text[1..text.len() - 1]
    } else {
        text
    };
    if inner.contains(['{', '}', '"', '#', '\n']) {
        return Err(format!("`{text}` holds characters a value cannot contain"));
    }
    if braced || inner.contains(',') {
        let items: Vec<String> = inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        return Ok(ExtValue::Set(items));
    }
    Ok(ExtValue::Scalar(inner.to_string()))
}

/// Reads a TOML vars file: strings and numbers are scalars, arrays are sets.
pub fn parse_vars_toml(text: &str, file: &str) -> Result<Vec<ExternalVar>, Diagnostic> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Diagnostic::new(
            Code::NQ063,
            format!("vars file `{file}` is not valid TOML: {}", e.message()),
        )
        .help("write one `name = value` per line; sets are arrays: `cp = [\"10.0.0.10\"]`")
    })?;
    let mut out = Vec::new();
    for (name, value) in &table {
        let bad = |what: &str| {
            Diagnostic::new(
                Code::NQ063,
                format!("variable `{name}` in `{file}` is {what}, which a policy cannot use"),
            )
            .help("use a string, a number or an array of them")
        };
        let value = match value {
            toml::Value::Array(items) => ExtValue::Set(
                items
                    .iter()
                    .map(|i| scalar_text(i).ok_or_else(|| bad("an array holding a non-scalar")))
                    .collect::<Result<_, _>>()?,
            ),
            other => ExtValue::Scalar(scalar_text(other).ok_or_else(|| bad(toml_kind(other)))?),
        };
        if !valid_name(name) {
            return Err(bad("not a valid variable name"));
        }
        out.push(ExternalVar {
            name: name.clone(),
            value,
            origin: format!("vars file {file}"),
        });
    }
    Ok(out)
}

fn scalar_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

fn toml_kind(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::Table(_) => "a table",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        _ => "an unusable value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_args() {
        let v = parse_var_arg("uplink=eth1").unwrap();
        assert_eq!(v.value, ExtValue::Scalar("eth1".into()));
        let v = parse_var_arg("cp=10.0.0.1, 10.0.0.2").unwrap();
        assert_eq!(
            v.value,
            ExtValue::Set(vec!["10.0.0.1".into(), "10.0.0.2".into()])
        );
        let v = parse_var_arg("cp={10.0.0.1}").unwrap();
        assert_eq!(v.value, ExtValue::Set(vec!["10.0.0.1".into()]));
        assert_eq!(parse_var_arg("cp={").unwrap_err().code, Code::NQ063);
        assert_eq!(parse_var_arg("novalue").unwrap_err().code, Code::NQ063);
    }

    #[test]
    fn toml_file() {
        let v = parse_vars_toml(
            "uplink = \"eth1\"\ncp = [\"10.0.0.1\", \"10.0.0.2\"]\n",
            "h.toml",
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert!(parse_vars_toml("x = { a = 1 }", "h.toml").is_err());
        assert!(parse_vars_toml("x = ", "h.toml").is_err());
    }
}
