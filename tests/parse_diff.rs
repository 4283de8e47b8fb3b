//! The hand-written reader (`netqos::syntax::parse`) proved against the pest oracle
//! (`netqos::syntax::reference::parse`, the normative `grammar/netqos.pest`): the same tree
//! with the same spans, or the same NQ040 (`invariants::parse_diff`, which the `parse_diff`
//! libFuzzer target runs too). Inputs: every policy of the repository and of
//! `/work/shared/fixtures`, the fuzz seeds, grammar-driven programs (valid and near-valid)
//! and byte-level mutations of all of them, from a fixed seed.

use std::path::{Path, PathBuf};

use crate::fuzz::invariants::parse_diff;
use crate::support::*;
use netqos::syntax::{self, MAX_DEPTH};

/// Runs `f` on a thread with a large stack: pest's limit is its stack, and the oracle must
/// not stop where the reader goes on.
fn big_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

/// Every `.nq` file under `dir`, recursively, sorted.
fn nq_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            nq_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "nq") {
            out.push(p);
        }
    }
}

/// The repository's policies, the shared fixtures, and the fuzz seeds (`fuzz/fuzz.sh seeds`
/// copies the first two; a seed corpus left on disk is read too).
fn corpus() -> Vec<String> {
    let mut files = Vec::new();
    for dir in ["examples", "tests/fixtures", "fuzz/corpus/policy"] {
        nq_files(&root().join(dir), &mut files);
    }
    nq_files(Path::new("/work/shared/fixtures"), &mut files);
    if let Ok(entries) = std::fs::read_dir(root().join("fuzz/corpus/policy")) {
        files.extend(entries.map(|e| e.unwrap().path()));
    }
    files.sort();
    files.dedup();
    files
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| String::from_utf8(b).ok())
        .collect()
}

/// Shrinks a failing input line by line, then character by character, for the report.
fn shrink(input: &str) -> String {
    let fails = |s: &str| parse_diff(s).is_err();
    let mut cur: Vec<char> = input.chars().collect();
    let mut chunk = cur.len() / 2;
    while chunk >= 1 {
        let mut i = 0;
        while i + chunk <= cur.len() {
            let mut cand = cur.clone();
            cand.drain(i..i + chunk);
            let s: String = cand.iter().collect();
            if fails(&s) {
                cur = cand;
            } else {
                i += chunk;
            }
        }
        chunk /= 2;
    }
    cur.into_iter().collect()
}

fn check(input: &str, what: &str) {
    if let Err(why) = parse_diff(input) {
        let small = shrink(input);
        panic!(
            "{what}: {why}\ninput: {input:?}\nshrunk: {small:?}\nshrunk: {}",
            parse_diff(&small).err().unwrap_or_default()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Grammar-driven programs

/// Writes policies the way the grammar reads them, with the variations a person (or a
/// mistake) makes: every statement kind, one-line bodies, comments everywhere, CRLF, tabs,
/// unicode, `$vars`, sets and lists across lines; now and then a wrong token.
struct Gen {
    rng: Rng,
    nl: &'static str,
}

const ATOMS: &[&str] = &[
    "1gbit",
    "100mbit",
    "60%",
    "0",
    "7",
    "65535",
    "2379-2380",
    "10.0.0.1",
    "10.42.0.0/16",
    "fd00::/8",
    "::1",
    "1:10",
    "50ms",
    "64kb",
    "a.b",
    "x+y*",
    "_",
    "-",
    "ü",
    "1..2gbit",
];
const NAMES: &[&str] = &["a", "web", "_x", "db-1", "A9", "c_d-e"];
const BAD: &[&str] = &[
    "",
    "{",
    "}",
    "\"",
    "#",
    "=",
    ",",
    "$",
    "$1",
    "é",
    "\u{a0}",
    "\u{2003}x",
    "🚀",
    ";",
    "\t",
    "\r",
    "{}",
    "\"x",
    "ingress",
    "class",
    "rate",
];

impl Gen {
    fn chance(&mut self, percent: u64) -> bool {
        self.rng.chance(percent)
    }

    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.rng.index(v.len())]
    }

    /// A blank run between tokens of one statement.
    fn sp(&mut self) -> &'static str {
        match self.rng.below(8) {
            0 => "\t",
            1 => "  ",
            2 => " \t ",
            _ => " ",
        }
    }

    /// Usually nothing; sometimes a wrong token.
    fn noise(&mut self) -> String {
        if self.chance(4) {
            let b = self.pick(BAD);
            format!("{}{b}", self.sp())
        } else {
            String::new()
        }
    }

    /// An end of statement: a newline, maybe a comment before it, maybe blank lines.
    fn eol(&mut self) -> String {
        let mut s = String::new();
        if self.chance(15) {
            s.push_str(self.sp());
        }
        if self.chance(15) {
            s.push_str(self.pick(&["# note", "#", "# { } \" $x", "#ü", "## rate 1"]));
        }
        s.push_str(self.nl);
        if self.chance(10) {
            s.push_str(self.nl);
        }
        s
    }

    fn name(&mut self) -> String {
        if self.chance(3) {
            self.pick(&["1a", "-a", "é", "a.b"]).to_string()
        } else {
            self.pick(NAMES).to_string()
        }
    }

    fn scalar(&mut self) -> String {
        match self.rng.below(10) {
            0 => format!("${}", self.name()),
            1 => format!("\"{}\"", self.pick(&["eth0", "a b # c", "", "{", "ü"])),
            2 if self.chance(20) => "\"open".to_string(),
            _ => self.pick(ATOMS).to_string(),
        }
    }

    fn comma(&mut self) -> String {
        let nl = self.nl;
        match self.rng.below(6) {
            0 => format!(" ,{nl}  "),
            1 => format!(",# c{nl}\t"),
            2 => ",".to_string(),
            3 => format!(",{nl}{nl} "),
            _ => ", ".to_string(),
        }
    }

    fn set(&mut self) -> String {
        let mut s = String::from("{");
        let n = self.rng.below(4);
        for i in 0..n {
            if i > 0 {
                s.push_str(&self.comma());
            } else {
                s.push_str(self.pick(&[" ", "", "\n  ", " # c\n "]));
            }
            s.push_str(&self.scalar());
        }
        if n > 0 && self.chance(20) {
            s.push(',');
        }
        s.push_str(self.pick(&[" ", "", "\n", " # c\n"]));
        s.push('}');
        s
    }

    fn value(&mut self) -> String {
        if self.chance(25) {
            self.set()
        } else {
            self.scalar()
        }
    }

    fn list(&mut self) -> String {
        let mut s = self.value();
        for _ in 0..self.rng.below(3) {
            s.push_str(&self.comma());
            s.push_str(&self.value());
        }
        s
    }

    fn match_stmt(&mut self) -> String {
        let mut s = String::from("match");
        for _ in 0..=self.rng.below(4) {
            s.push_str(self.sp());
            let f = match self.rng.below(9) {
                0 => self.pick(&["tcp", "udp", "icmp", "tcpx"]).to_string(),
                1 => "pods".to_string(),
                2 => format!("pod {} {}", self.pick(&["src", "dst", "sr"]), self.list()),
                3 | 4 => format!("{} {}", self.pick(&["src", "dst"]), self.list()),
                5 | 6 => format!("{} {}", self.pick(&["sport", "dport"]), self.list()),
                _ => self
                    .pick(&["foo", "class", "prio", "é=1", "src"])
                    .to_string(),
            };
            s.push_str(&f);
        }
        s
    }

    fn unknown(&mut self) -> String {
        match self.rng.below(4) {
            0 => format!("cieling {}", self.scalar()),
            1 => format!("frob {{ a {{ b }} # }} {}c }}", self.nl),
            2 => "x\u{a0}y z".to_string(),
            _ => format!("{} rest of line", self.pick(&["bogus", "ü", "interfac"])),
        }
    }

    fn class(&mut self, depth: usize) -> String {
        let mut s = format!("class{}{}{}{{", self.sp(), self.name(), self.sp());
        let one_line = self.chance(30);
        let n = self.rng.below(5);
        for _ in 0..n {
            s.push_str(if one_line { " " } else { self.nl });
            let st = match self.rng.below(14) {
                0 => format!("rate {}", self.scalar()),
                1 => format!("ceil{}{}", self.sp(), self.scalar()),
                2 => format!("prio {}", self.scalar()),
                3 => format!("burst {}", self.scalar()),
                4 => format!("cburst {}", self.scalar()),
                5 => format!("quantum {}", self.scalar()),
                6 => {
                    let mut q = format!("qdisc {}", self.pick(&["fq_codel", "tbf", "sfq", "1x"]));
                    for _ in 0..self.rng.below(3) {
                        q.push_str(&format!(" {} {}", self.name(), self.scalar()));
                    }
                    q
                }
                7 => format!("id {}", self.scalar()),
                8 | 9 => self.match_stmt(),
                10 => "default".to_string(),
                11 if depth < 4 => self.class(depth + 1),
                12 => self.unknown(),
                _ => format!("rate {}", self.scalar()),
            };
            s.push_str(&st);
            s.push_str(&self.noise());
            if !one_line {
                s.push_str(&self.eol());
            }
        }
        s.push_str(if one_line { " " } else { self.nl });
        s.push('}');
        s
    }

    fn interface(&mut self) -> String {
        let name = match self.rng.below(5) {
            0 => "$up".to_string(),
            1 => "\"eth 0\"".to_string(),
            2 => "we$ird".to_string(),
            _ => self.pick(&["eth0", "ens3", "bond0.10", "ü"]).to_string(),
        };
        let dir = self.pick(&["", " ingress", " egress", "\tegress", " ingressx"]);
        let mut s = format!("interface {name}{dir}{}{{{}", self.sp(), self.eol());
        for _ in 0..self.rng.below(6) {
            let st = match self.rng.below(11) {
                0 | 1 => format!("rate {}", self.scalar()),
                2 => format!("burst {}", self.scalar()),
                3 => format!("cburst {}", self.scalar()),
                4 => format!("r2q {}", self.scalar()),
                5 => format!("mtu {}", self.scalar()),
                6 => format!("default {}", self.name()),
                7 => format!("ifb {}", self.pick(&["ifb0", "$i", "\"x\"", "{"])),
                8 => self.unknown(),
                _ => self.class(0),
            };
            s.push_str(self.sp());
            s.push_str(&st);
            s.push_str(&self.noise());
            s.push_str(&self.eol());
        }
        s.push('}');
        s
    }

    fn pods(&mut self) -> String {
        let mut s = format!("pods{}{{{}", self.pick(&[" ", "", "\t"]), self.nl);
        for _ in 0..self.rng.below(6) {
            let st = match self.rng.below(9) {
                0 => format!("cni {}", self.pick(&["rke2-flannel", "calico", "file"])),
                1 => format!("cni file {}", self.pick(&["\"/etc/x\"", "$f", "x"])),
                2 => format!("cidr {}", self.list()),
                3 => format!(
                    "overlay {}",
                    self.pick(&["vxlan 4789", "none", "vxlan", "1"])
                ),
                4 => format!("burst {}", self.scalar()),
                5 | 6 => {
                    let mut l = format!("limit {}", self.pick(&["app=web", "ns=a,b", "x"]));
                    for _ in 0..self.rng.below(3) {
                        let d = self.pick(&["ingress", "egress", "ingres"]);
                        l.push_str(&format!(" {d} {}", self.scalar()));
                    }
                    l
                }
                _ => self.unknown(),
            };
            s.push_str(&st);
            s.push_str(&self.noise());
            s.push_str(&self.eol());
        }
        s.push('}');
        s
    }

    fn file(&mut self) -> String {
        self.nl = if self.chance(20) { "\r\n" } else { "\n" };
        let mut s = String::new();
        if self.chance(10) {
            s.push_str(&self.eol());
        }
        if self.chance(85) {
            let v = self.pick(&["1", "1", "2", "x", ""]);
            let sep = self.pick(&[" ", " ", "\t", ""]);
            s.push_str(&format!("netqos{sep}{v}"));
            s.push_str(&self.eol());
        }
        for _ in 0..self.rng.below(6) {
            let item = match self.rng.below(9) {
                0 => format!("let {} ={}{}", self.name(), self.sp(), self.value()),
                1 => {
                    let mut a = String::from("allow NQ066");
                    for _ in 0..self.rng.below(3) {
                        a.push_str(&self.comma());
                        a.push_str(self.pick(&["NQ044", "nq1", "X"]));
                    }
                    a
                }
                2..=4 => self.interface(),
                5 => self.pods(),
                6 => self.unknown(),
                7 => self.pick(&["# only a comment", "", "}", "{"]).to_string(),
                _ => self.interface(),
            };
            s.push_str(&item);
            s.push_str(&self.noise());
            s.push_str(&self.eol());
        }
        s
    }
}

/// Byte-level damage at character boundaries: delete, insert or duplicate a brace, quote,
/// `#`, newline or comma; drop a run; truncate.
fn mutate(rng: &mut Rng, base: &str) -> String {
    let mut s: Vec<char> = base.chars().collect();
    for _ in 0..=rng.below(3) {
        let at = rng.index(s.len() + 1);
        match rng.below(6) {
            0 if !s.is_empty() => {
                s.remove(at.min(s.len() - 1));
            }
            1 => {
                let c = *rng.pick(&['{', '}', '"', '#', '\n', ',', '$', '=', ' ', '\r', 'é']);
                s.insert(at, c);
            }
            2 => {
                // Duplicate (or delete) a brace or quote somewhere.
                let targets: Vec<usize> = s
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| matches!(c, '{' | '}' | '"' | '#' | '\n'))
                    .map(|(i, _)| i)
                    .collect();
                if !targets.is_empty() {
                    let i = *rng.pick(&targets);
                    if rng.chance(50) {
                        let c = s[i];
                        s.insert(i, c);
                    } else {
                        s.remove(i);
                    }
                }
            }
            3 if !s.is_empty() => {
                let end = (at + rng.index(20)).min(s.len());
                s.drain(at.min(end)..end);
            }
            4 => s.truncate(at),
            _ => {
                let dup: Vec<char> = s.iter().skip(at).take(rng.index(30)).copied().collect();
                for (i, c) in dup.into_iter().enumerate() {
                    s.insert(at + i, c);
                }
            }
        }
    }
    s.into_iter().collect()
}

#[test]
fn reader_matches_the_grammar_on_every_repository_policy() {
    big_stack(|| {
        let corpus = corpus();
        assert!(corpus.len() > 30, "only {} policies found", corpus.len());
        for src in &corpus {
            check(src, "corpus");
        }
    });
}

#[test]
fn reader_matches_the_grammar_on_generated_and_mutated_policies() {
    big_stack(|| {
        let corpus = corpus();
        let mut rng = Rng(0x0f1e_2d3c_4b5a_6978);
        let mut gen_ = Gen {
            rng: Rng(0x1234_5678_9abc_def1),
            nl: "\n",
        };
        let (mut ok, mut err) = (0, 0);
        for i in 0..4000 {
            let input = match i % 4 {
                0 | 1 => gen_.file(),
                2 => {
                    let g = gen_.file();
                    mutate(&mut rng, &g)
                }
                _ => {
                    let base = &corpus[rng.index(corpus.len())];
                    mutate(&mut rng, base)
                }
            };
            check(&input, &format!("case {i}"));
            if syntax::parse(&input).is_ok() {
                ok += 1;
            } else {
                err += 1;
            }
        }
        // Both sides of the grammar are exercised: trees and errors.
        assert!(ok > 800 && err > 800, "{ok} parsed, {err} refused");
    });
}

#[test]
fn every_prefix_of_an_example_agrees() {
    // Truncation at every character: the unclosed-block and end-of-file errors.
    big_stack(|| {
        let src = std::fs::read_to_string(root().join("examples/pods.nq")).unwrap();
        for (i, _) in src.char_indices() {
            check(&src[..i], &format!("prefix {i}"));
        }
    });
}

#[test]
fn nesting_up_to_the_limit_agrees_and_deeper_is_nq040() {
    let nest = |n: usize| {
        let mut s = String::from("netqos 1\ninterface eth0 {\n");
        for i in 1..n {
            s.push_str(&format!("class c{i} {{\n"));
        }
        for _ in 1..n {
            s.push_str("}\n");
        }
        s.push_str("}\n");
        s
    };
    let at_limit = nest(MAX_DEPTH);
    big_stack(move || check(&at_limit, "at the limit"));
    // On this (test) thread's own stack: the reader neither overflows nor follows.
    let e = syntax::parse(&nest(MAX_DEPTH + 1)).unwrap_err();
    assert!(e.message.contains("too deeply"), "{e:?}");
    let braces = format!("netqos 1\nx {}", "{".repeat(1_000_000));
    let e = syntax::parse(&braces).unwrap_err();
    assert!(e.message.contains("too deeply"), "{e:?}");
    assert_eq!(e.labels[0].span.start, "netqos 1\nx ".len() + MAX_DEPTH);
}
