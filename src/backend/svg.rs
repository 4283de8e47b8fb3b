//! The `svg` artefact: each device's hierarchy as a picture for pull requests (GitHub shows
//! `tree.svg` inline). One row per class, indented by depth, named with its tc id; a solid
//! bar whose length is the guaranteed rate and an outline to the ceiling, both on the
//! scale of the link; the match lines in the policy's words under the name. Plain SVG 1.1,
//! deterministic, no scripts or external references.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::plan::{ClassPlan, DevicePlan, Handle, Plan};
use crate::units::fmt_rate;

const WIDTH: u64 = 1000;
const BAR_X: u64 = 380;
const BAR_W: u64 = 360;
const ROW: u64 = 26;
const MATCH_ROW: u64 = 16;
const INDENT: u64 = 18;

/// Renders every device of the plan into one SVG document.
pub fn svg(plan: &Plan) -> String {
    let mut out = Vec::new();
    let _ = write_svg(plan, &mut out);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// [`svg`] written to `w` one device at a time (the height is worked out first).
pub fn write_svg(plan: &Plan, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    let rows: Vec<Vec<(&ClassPlan, u64)>> = plan.devices.iter().map(order).collect();
    let mut y = 20;
    for r in &rows {
        y += HEAD + r.iter().map(|(c, _)| row_height(c)).sum::<u64>() + 24;
    }
    let height = y.max(60);
    write!(
        w,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{WIDTH}\" \
         height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" font-family=\"DejaVu Sans, \
         Verdana, sans-serif\" font-size=\"13\">\n\
         <title>netqos class tree</title>\n\
         <rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{height}\" fill=\"#ffffff\"/>\n"
    )?;
    let mut y = 20;
    let mut body = String::new();
    for (d, rows) in plan.devices.iter().zip(&rows) {
        y = device(d, rows, y, &mut body, w)? + 24;
    }
    w.write_all(body.as_bytes())?;
    w.write_all(b"</svg>\n")
}

/// Past this many bytes the text so far goes to the writer: a device of 50,000 classes is
/// tens of megabytes of SVG, never held whole.
const FLUSH_AT: usize = 1 << 16;

/// The rows above a device's first class: its title and the legend.
const HEAD: u64 = 18 + 10 + 8;

/// The height of one class row with its match lines.
fn row_height(c: &ClassPlan) -> u64 {
    ROW + MATCH_ROW * c.matches.len() as u64
}

/// Escapes text for an XML text node or attribute.
fn xml(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"']) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;"),
    )
}

/// Pixels for `rate` on the link's scale, at least 1 so a tiny class stays visible.
fn px(rate: u64, link: u64) -> u64 {
    if link == 0 {
        return 0;
    }
    let w = u128::from(rate) * u128::from(BAR_W) / u128::from(link);
    u64::try_from(w).unwrap_or(BAR_W).clamp(1, BAR_W)
}

/// Draws one device's `rows` starting at `y`; returns the y below it.
fn device(
    d: &DevicePlan,
    rows: &[(&ClassPlan, u64)],
    mut y: u64,
    out: &mut String,
    w: &mut dyn std::io::Write,
) -> std::io::Result<u64> {
    let on = match &d.ifb {
        Some(ifb) => format!("{} ingress (shaped on {ifb})", d.device),
        None => format!("{} egress", d.device),
    };
    let link = d.classes.first().map_or(0, |c| c.rate);
    y += 18;
    let _ = writeln!(
        out,
        "<text x=\"12\" y=\"{y}\" font-size=\"16\" font-weight=\"bold\">{} — link {}, ids as \
         `tc class show dev {}`</text>",
        xml(&on),
        xml(&fmt_rate(link)),
        xml(&d.shaped_device)
    );
    y += 10;
    let _ = writeln!(
        out,
        "<text x=\"{BAR_X}\" y=\"{}\" font-size=\"11\" fill=\"#555555\">solid: guaranteed \
         rate · outline: ceiling · scale: the link</text>",
        y + 4
    );
    y += 8;
    let default = Handle::class(d.root.default.0);
    for &(c, depth) in rows {
        y = class(c, depth, link, c.classid == default || c.is_default, y, out);
        if out.len() >= FLUSH_AT {
            w.write_all(out.as_bytes())?;
            out.clear();
        }
    }
    Ok(y)
}

/// The classes of a device under its root class, depth first, in plan order.
fn order(d: &DevicePlan) -> Vec<(&ClassPlan, u64)> {
    let mut children: BTreeMap<Handle, Vec<&ClassPlan>> = BTreeMap::new();
    for c in d.classes.iter().skip(1) {
        children.entry(c.parent).or_default().push(c);
    }
    let mut out = Vec::new();
    walk(&children, Handle::ROOT_CLASS, 0, &mut out);
    out
}

fn walk<'a>(
    children: &BTreeMap<Handle, Vec<&'a ClassPlan>>,
    parent: Handle,
    depth: u64,
    out: &mut Vec<(&'a ClassPlan, u64)>,
) {
    for &c in children.get(&parent).map_or(&[][..], Vec::as_slice) {
        out.push((c, depth));
        walk(children, c.classid, depth + 1, out);
    }
}

/// One class row (and its match lines); returns the y below it.
fn class(c: &ClassPlan, depth: u64, link: u64, default: bool, y: u64, out: &mut String) -> u64 {
    let x = 12 + depth * INDENT;
    let top = y + 6;
    let name = c.name.rsplit('/').next().unwrap_or(&c.name);
    let colour = if c.leaf.is_some() {
        "#2f6fb0"
    } else {
        "#6a8caf"
    };
    let _ = writeln!(
        out,
        "<g><text x=\"{x}\" y=\"{}\"><tspan font-weight=\"bold\">{}</tspan> \
         <tspan fill=\"#555555\">{}{}</tspan></text>",
        top + 14,
        xml(name),
        xml(&c.classid.to_string()),
        if default { " · default" } else { "" }
    );
    let _ = writeln!(
        out,
        "<rect x=\"{BAR_X}\" y=\"{}\" width=\"{}\" height=\"14\" fill=\"none\" \
         stroke=\"{colour}\" stroke-width=\"1\"/>",
        top + 3,
        px(c.ceil, link)
    );
    let _ = writeln!(
        out,
        "<rect x=\"{BAR_X}\" y=\"{}\" width=\"{}\" height=\"14\" fill=\"{colour}\"/>",
        top + 3,
        px(c.rate, link)
    );
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" font-size=\"12\">{} · ceil {} · prio {}</text></g>",
        BAR_X + BAR_W + 10,
        top + 14,
        xml(&fmt_rate(c.rate)),
        xml(&fmt_rate(c.ceil)),
        c.prio
    );
    let mut y = y + ROW;
    for (words, _) in &c.matches {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#333333\">◂ {}</text>",
            x + 12,
            y + 8,
            xml(&shorten(words))
        );
        y += MATCH_ROW;
    }
    y
}

/// A match line cut to what fits left of the bars.
fn shorten(words: &str) -> String {
    const MAX: usize = 52;
    if words.chars().count() <= MAX {
        return words.to_string();
    }
    let cut: String = words.chars().take(MAX - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_and_escaping() {
        assert_eq!(px(500, 1000), BAR_W / 2);
        assert_eq!(px(1, 1_000_000_000), 1);
        assert_eq!(px(2000, 1000), BAR_W);
        assert_eq!(xml("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        assert!(shorten(&"x".repeat(80)).ends_with('…'));
    }
}
