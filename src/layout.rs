//! The layout's rules, checked on the source tree (tests only): no import circle between
//! modules, children never reaching back into their parent, no file over 600 lines.
//!
//! A module is a file of `src/` (`a/b.rs` and `a/b/mod.rs` are `a::b`; the binaries and the
//! `tests.rs` children are left out). It imports another when it names it by a path from
//! `crate::`, `super::` or `self::` (in a `use`, in code, or in a doc link: a link is a
//! dependency a reader follows too), or, in a module with children, by a child's name. Test
//! modules at the end of a file (`#[cfg(test)] mod tests`) do not count, nor do arrows to the
//! crate root (`lib.rs` declares the modules; `crate::schema!` is a macro, not a module).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

type Module = Vec<String>;

const MAX_LINES: usize = 600;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(root: &Path, file: &Path) -> Option<Module> {
    let rel = file.strip_prefix(root).ok()?.with_extension("");
    let mut parts: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.last().map(String::as_str) {
        Some("main" | "tests") => return None,
        Some("mod" | "lib") => {
            parts.pop();
        }
        _ => {}
    }
    Some(parts)
}

/// Every module (by path) and the text of its file, test modules cut off.
fn modules(root: &Path) -> BTreeMap<Module, (PathBuf, String)> {
    let mut files = Vec::new();
    sources(root, &mut files);
    files
        .into_iter()
        .filter_map(|f| {
            let module = module_of(root, &f)?;
            let text = std::fs::read_to_string(&f).expect("a source file is readable");
            let cut = Regex::new(r"#\[cfg\(test\)\]\s*mod tests")
                .unwrap()
                .find(&text)
                .map_or(text.len(), |m| m.start());
            Some((module, (f, text[..cut].to_string())))
        })
        .collect()
}

/// The longest existing module that `path` (`crate::a::b::Item`, `super::x`) names from `at`.
fn resolve(
    modules: &BTreeMap<Module, (PathBuf, String)>,
    at: &Module,
    path: &[&str],
) -> Option<Module> {
    let (mut base, rest): (Module, &[&str]) = match *path.first()? {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (at.clone(), &path[1..]),
        "super" => {
            let mut base = at.clone();
            let mut rest = path;
            while rest.first() == Some(&"super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        _ => return None,
    };
    for part in rest {
        base.push(part.to_string());
        if !modules.contains_key(&base) {
            base.pop();
            break;
        }
    }
    Some(base)
}

/// Who imports whom, with one place that says so for each pair.
fn imports(modules: &BTreeMap<Module, (PathBuf, String)>) -> BTreeMap<(Module, Module), String> {
    let path = Regex::new(r"\b((?:crate|super|self)(?:::\w+)+)").unwrap();
    let group = Regex::new(r"use\s+(crate|super)::\{([^;]*)\};").unwrap();
    let item = Regex::new(r"\w+(?:::\w+)*").unwrap();
    let child = Regex::new(r"(?:^|[^:\w])(\w+)::").unwrap();
    let glob = Regex::new(r"(?m)^\s*use super::\*;").unwrap();
    let mut edges = BTreeMap::new();
    let mut add = |from: &Module, to: Option<Module>, why: &str| {
        // The crate root only declares the modules (and holds the exported macros, which any
        // module may call): an arrow to it is no dependency on another module's code.
        if let Some(to) = to
            && &to != from
            && !to.is_empty()
        {
            edges
                .entry((from.clone(), to))
                .or_insert_with(|| why.to_string());
        }
    };
    for (module, (file, text)) in modules {
        for m in path.find_iter(text) {
            let parts: Vec<&str> = m.as_str().split("::").collect();
            add(module, resolve(modules, module, &parts), m.as_str());
        }
        for g in group.captures_iter(text) {
            for i in item.find_iter(&g[2]) {
                let mut parts = vec![&g[1]];
                parts.extend(i.as_str().split("::"));
                add(module, resolve(modules, module, &parts), i.as_str());
            }
        }
        if glob.is_match(text) {
            let mut parent = module.clone();
            parent.pop();
            add(module, Some(parent), "use super::*");
        }
        let has_children = file.ends_with("mod.rs")
            || file.ends_with("lib.rs")
            || file.with_extension("").is_dir();
        if has_children {
            for c in child.captures_iter(text) {
                let mut target = module.clone();
                target.push(c[1].to_string());
                if modules.contains_key(&target) {
                    add(module, Some(target), &c[0]);
                }
            }
        }
    }
    edges
}

/// The strongly connected components of more than one module (Tarjan).
fn circles(edges: &BTreeMap<(Module, Module), String>) -> Vec<BTreeSet<Module>> {
    let mut next: BTreeMap<&Module, Vec<&Module>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        next.entry(a).or_default().push(b);
        next.entry(b).or_default();
    }
    struct State<'a> {
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<BTreeSet<Module>>,
    }
    fn visit<'a>(v: &'a Module, next: &BTreeMap<&'a Module, Vec<&'a Module>>, s: &mut State<'a>) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in &next[v] {
            if !s.index.contains_key(w) {
                visit(w, next, s);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.insert(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in next.keys() {
        if !state.index.contains_key(v) {
            visit(v, &next, &mut state);
        }
    }
    state.found
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_imports_another_that_imports_it_back_directly_or_around_a_circle() {
    let modules = modules(&src());
    assert!(modules.len() > 50, "the tree was read");
    let edges = imports(&modules);
    let mut said = String::new();
    for circle in circles(&edges) {
        let names: Vec<String> = circle.iter().map(name).collect();
        said.push_str(&format!("circle: {}\n", names.join(", ")));
        for ((a, b), why) in &edges {
            if circle.contains(a) && circle.contains(b) {
                said.push_str(&format!("  {} -> {}  ({why})\n", name(a), name(b)));
            }
        }
    }
    assert!(said.is_empty(), "import circles:\n{said}");
}

#[test]
fn the_check_finds_a_circle_when_there_is_one() {
    // The same reading on a tree made for it: a parent re-exporting its child, and the child
    // naming its parent's item.
    let dir = std::env::temp_dir().join(format!("onboard-layout-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(
        dir.join("a/mod.rs"),
        "mod c;\npub use c::C;\npub struct P;\n",
    )
    .unwrap();
    std::fs::write(dir.join("a/c.rs"), "use super::P;\npub struct C(P);\n").unwrap();
    std::fs::write(dir.join("b.rs"), "use crate::a::C;\n").unwrap();
    let modules = modules(&dir);
    let found = circles(&imports(&modules));
    std::fs::remove_dir_all(&dir).unwrap();
    let a: Module = vec!["a".into()];
    let c: Module = vec!["a".into(), "c".into()];
    assert_eq!(found, vec![BTreeSet::from([a, c])]);
}

#[test]
fn no_source_file_is_over_600_lines() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    files.push(src().join("bin/onboard-lab.rs"));
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}
