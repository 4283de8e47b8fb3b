//! RFC 6902 JSON Patch: the operations netqos emits (`test`, `add`, `remove`, `replace`),
//! applied all-or-nothing, so tests and `compile --conflist` can check that the patch and the
//! patched file say the same thing.

use serde::Serialize;
use serde_json::Value;

/// One operation of a patch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Test { path: String, value: Value },
    Add { path: String, value: Value },
    Remove { path: String },
    Replace { path: String, value: Value },
}

/// Why a patch did not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("operation {index}: `test` failed at {path}")]
    TestFailed { index: usize, path: String },
    #[error("operation {index}: no value at {path}")]
    NoPath { index: usize, path: String },
    #[error("operation {index}: bad pointer {path}")]
    BadPointer { index: usize, path: String },
}

/// Applies `ops` to a copy of `doc`; on any failure the document is left as it was.
pub fn apply(doc: &Value, ops: &[Op]) -> Result<Value, PatchError> {
    let mut out = doc.clone();
    for (index, op) in ops.iter().enumerate() {
        match op {
            Op::Test { path, value } => {
                if out.pointer(path) != Some(value) {
                    return Err(PatchError::TestFailed {
                        index,
                        path: path.clone(),
                    });
                }
            }
            Op::Add { path, value } => insert(&mut out, path, value.clone(), index, false)?,
            Op::Replace { path, value } => insert(&mut out, path, value.clone(), index, true)?,
            Op::Remove { path } => {
                let (parent, last) = split(path, index)?;
                let no_path = || PatchError::NoPath {
                    index,
                    path: path.clone(),
                };
                match out.pointer_mut(&parent).ok_or_else(no_path)? {
                    Value::Object(m) => {
                        m.shift_remove(&last).ok_or_else(no_path)?;
                    }
                    Value::Array(a) => {
                        let i = array_index(&last, a.len(), false).ok_or_else(no_path)?;
                        a.remove(i);
                    }
                    _ => return Err(no_path()),
                }
            }
        }
    }
    Ok(out)
}

fn insert(
    doc: &mut Value,
    path: &str,
    value: Value,
    index: usize,
    replace: bool,
) -> Result<(), PatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split(path, index)?;
    let no_path = || PatchError::NoPath {
        index,
        path: path.to_string(),
    };
    match doc.pointer_mut(&parent).ok_or_else(no_path)? {
        Value::Object(m) => {
            if replace && !m.contains_key(&last) {
                return Err(no_path());
            }
            m.insert(last, value);
        }
        Value::Array(a) => {
            let i = array_index(&last, a.len(), !replace).ok_or_else(no_path)?;
            if replace {
                a[i] = value;
            } else {
                a.insert(i, value);
            }
        }
        _ => return Err(no_path()),
    }
    Ok(())
}

/// `/a/b/c` → (`/a/b`, `c`), with `~1` and `~0` decoded in the last token.
fn split(path: &str, index: usize) -> Result<(String, String), PatchError> {
    let bad = || PatchError::BadPointer {
        index,
        path: path.to_string(),
    };
    if !path.starts_with('/') {
        return Err(bad());
    }
    let cut = path.rfind('/').ok_or_else(bad)?;
    let last = path[cut + 1..].replace("~1", "/").replace("~0", "~");
    Ok((path[..cut].to_string(), last))
}

/// An array index token: digits without a leading zero, or `-` (one past the end) when
/// inserting.
fn array_index(token: &str, len: usize, inserting: bool) -> Option<usize> {
    if token == "-" {
        return inserting.then_some(len);
    }
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    let i: usize = token.parse().ok()?;
    let max = if inserting { len } else { len.checked_sub(1)? };
    (i <= max).then_some(i)
}

/// Escapes one pointer token (`~` → `~0`, `/` → `~1`).
#[must_use]
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn add_test_remove() {
        let doc = json!({"plugins": [{"type": "a"}, {"type": "c"}]});
        let ops = vec![
            Op::Test {
                path: "/plugins/1/type".into(),
                value: json!("c"),
            },
            Op::Add {
                path: "/plugins/1".into(),
                value: json!({"type": "b"}),
            },
        ];
        let once = apply(&doc, &ops).unwrap();
        assert_eq!(
            once,
            json!({"plugins": [{"type": "a"}, {"type": "b"}, {"type": "c"}]})
        );
        assert!(matches!(
            apply(&once, &ops),
            Err(PatchError::TestFailed { index: 0, .. })
        ));
        let back = apply(
            &once,
            &[Op::Remove {
                path: "/plugins/1".into(),
            }],
        )
        .unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn bad_paths_fail_without_panicking() {
        let doc = json!({"a": [1]});
        for p in ["a", "/a/5", "/a/01", "/b/c", "/a/-"] {
            assert!(
                apply(&doc, &[Op::Remove { path: p.into() }]).is_err(),
                "{p}"
            );
        }
        assert_eq!(
            apply(
                &doc,
                &[Op::Add {
                    path: "/a/-".into(),
                    value: json!(2)
                }]
            )
            .unwrap(),
            json!({"a": [1, 2]})
        );
    }
}
