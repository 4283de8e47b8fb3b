//! The NQ040 diagnostic of a policy that does not parse, built from where the parse stopped
//! and what it expected there. Shared by the parser and its pest oracle, so the two can
//! only differ in the position and the expected set they compute.

use crate::codes::Code;
use crate::diagnostic::Diagnostic;
use crate::span::Span;

/// The syntax error at byte `at` (the furthest place a rule failed), given the phrases for
/// the rules that failed there (any order, duplicates allowed).
pub(crate) fn syntax_error(src: &str, at: usize, words: &mut Vec<&'static str>) -> Diagnostic {
    let start = at.min(src.len());
    let found = src[start..]
        .chars()
        .next()
        .map_or("end of file".to_string(), |c| match c {
            '\n' => "end of line".to_string(),
            c => format!("`{c}`"),
        });
    let expected = describe_expected(words);
    let end = (start + src[start..].chars().next().map_or(0, char::len_utf8)).min(src.len());
    let mut d = Diagnostic::new(
        Code::NQ040,
        format!("syntax error: found {found}, expected {expected}"),
    );
    let at_end = start >= src.trim_end().len();
    match unclosed_brace(src).filter(|_| at_end) {
        Some(open) => {
            d = d
                .label(Span::new(open, open + 1), "this block is never closed")
                .label(Span::new(start, end), format!("expected {expected}"));
        }
        None => d = d.label(Span::new(start, end), format!("expected {expected}")),
    }
    d.help(syntax_help(src, start))
}

/// The policy nests braces deeper than the reader follows (the `{` at `at`).
pub(crate) fn too_deep(src: &str, at: usize) -> Diagnostic {
    Diagnostic::new(Code::NQ040, "the policy nests blocks too deeply to read")
        .label(Span::char_at(src, at), "nesting too deep")
        .help("HTB allows 8 levels; flatten the class hierarchy")
}

/// The innermost `{` left open at the end of the file (outside comments and strings).
fn unclosed_brace(src: &str) -> Option<usize> {
    let mut stack = Vec::new();
    let mut in_string = false;
    let mut in_comment = false;
    for (i, c) in src.bytes().enumerate() {
        match c {
            b'\n' => {
                in_string = false;
                in_comment = false;
            }
            _ if in_comment => {}
            b'"' => in_string = !in_string,
            b'#' if !in_string => in_comment = true,
            b'{' if !in_string => stack.push(i),
            b'}' if !in_string => {
                stack.pop();
            }
            _ => {}
        }
    }
    stack.pop()
}

fn describe_expected(words: &mut Vec<&'static str>) -> String {
    words.sort_unstable();
    words.dedup();
    match words.as_slice() {
        [] => "a statement".to_string(),
        [one] => (*one).to_string(),
        many => {
            let (last, rest) = many.split_last().unwrap_or((&"", &[]));
            format!("{} or {last}", rest.join(", "))
        }
    }
}

fn syntax_help(src: &str, at: usize) -> String {
    let before = &src.as_bytes()[..at.min(src.len())];
    let open = before.iter().filter(|&&b| b == b'{').count();
    let close = before.iter().filter(|&&b| b == b'}').count();
    if at >= src.len() && open > close {
        "a block is not closed: add the missing `}`".to_string()
    } else if src[at.min(src.len())..].starts_with('}') && close >= open {
        "this `}` closes no block: remove it".to_string()
    } else {
        "each statement is a keyword and its values on one line; see `man 5 netqos`".to_string()
    }
}
