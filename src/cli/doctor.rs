//! `netqos doctor [FILE]`: reads the node (read-only) and prints its findings; exit 0 when
//! the policy can hold, 1 when something makes it fail, 3 when the node cannot be read.

use std::path::{Path, PathBuf};

use super::check::{external_vars, print, read_source};
use super::{Exit, Format, Ui, VarArgs};
use netqos::doctor::{self, node::FsNode, node::Node as _};
use netqos::report::Source;

pub struct Args<'a> {
    pub file: Option<&'a Path>,
    pub format: Format,
    pub root: Option<PathBuf>,
    pub vars: &'a VarArgs,
}

pub fn run(a: &Args<'_>, ui: Ui) -> Exit {
    let node = FsNode::new(a.root.as_deref().unwrap_or(Path::new("/")));
    if let Err(e) = node.readable() {
        eprintln!("netqos: {e}");
        return Exit::Io;
    }
    let mut json = Vec::new();
    let mut policy = None;
    if let Some(file) = a.file {
        let vars = match external_vars(a.vars) {
            Ok(v) => v,
            Err((diags, exit)) => {
                let src = Source {
                    name: "<command line>".into(),
                    text: String::new(),
                };
                print(&diags, &src, a.format, ui, &mut json);
                super::check::finish_json(a.format, &json);
                return exit;
            }
        };
        let src = match read_source(file) {
            Ok(s) => s,
            Err(e) => return e.report(ui),
        };
        match netqos::pipeline::check(&src.text, &vars, &[], false) {
            Ok(c) => policy = Some((c.model, src)),
            Err(diags) => {
                print(&diags, &src, a.format, ui, &mut json);
                super::check::finish_json(a.format, &json);
                return Exit::Invalid;
            }
        }
    }
    let report = doctor::inspect(&node, policy.as_ref().map(|(m, s)| (m, s.text.as_str())));
    let node_src = Source {
        name: format!("node {}", node.describe()),
        text: String::new(),
    };
    print(&report.node, &node_src, a.format, ui, &mut json);
    if let Some((_, src)) = &policy {
        print(&report.policy, src, a.format, ui, &mut json);
    }
    super::check::finish_json(a.format, &json);
    if report.has_errors() {
        if a.format == Format::Human {
            eprintln!("netqos: the policy cannot hold on this node as it is");
        }
        Exit::Invalid
    } else {
        Exit::Ok
    }
}
