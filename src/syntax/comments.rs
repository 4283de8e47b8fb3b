//! Finds the comments of a policy, which the grammar skips but `fmt` must keep.

use crate::span::Span;

/// A `# …` comment (span covers `#` to the end of the line, without the newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub span: Span,
    pub text: String,
}

/// Every comment in `src`, in order. Mirrors the grammar: `#` starts a comment anywhere
/// outside a double-quoted string, and strings cannot span lines.
#[must_use]
pub fn comments(src: &str) -> Vec<Comment> {
    let mut out = Vec::new();
    let mut in_string = false;
    let mut iter = src.char_indices();
    while let Some((i, c)) = iter.next() {
        match c {
            '"' => in_string = !in_string,
            '\n' => in_string = false,
            '#' if !in_string => {
                let end = src[i..].find('\n').map_or(src.len(), |n| i + n);
                let text = src[i..end].trim_end().to_string();
                out.push(Comment {
                    span: Span::new(i, end),
                    text,
                });
                // Skip to the newline; the loop then sees it and resets the string state.
                while let Some((j, _)) = iter.clone().next() {
                    if j >= end {
                        break;
                    }
                    iter.next();
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_comments_outside_strings() {
        let c = comments("a # one\nb \"x # not\" # two\n# three");
        let texts: Vec<_> = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["# one", "# two", "# three"]);
    }
}
