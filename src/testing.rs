//! Policies the unit tests generate: many host classes on a few interfaces.

/// `netqos 1` with an interface `eth{i}` at `rate` for each of `sizes`, holding `sizes[i]`
/// classes and a default `rest`; class `c` of interface `i` is named `c{n}` and matches
/// `m`, where `(n, m) = class(i, c)`.
pub(crate) fn host_policy(
    rate: &str,
    sizes: &[usize],
    class: &dyn Fn(usize, usize) -> (usize, String),
) -> String {
    let mut p = String::from("netqos 1\n");
    for (i, &n) in sizes.iter().enumerate() {
        p.push_str(&format!("interface eth{i} {{\n  rate {rate}\n"));
        for c in 0..n {
            let (name, m) = class(i, c);
            p.push_str(&format!(
                "  class c{name} {{\n    rate 1mbit\n    match {m}\n  }}\n"
            ));
        }
        p.push_str("  class rest {\n    rate 1mbit\n    default\n  }\n}\n");
    }
    p
}

/// Class `c` of interface `i` as its own host: `(c, dst 10.i.X.Y)`.
pub(crate) fn host(i: usize, c: usize) -> (usize, String) {
    (c, format!("dst 10.{i}.{}.{}", c / 250, c % 250 + 1))
}
