//! The crate's layers, checked from its source: no import cycle among the Rust files of `src/`,
//! and each file imports only from its own layer or the layers below it (README, "Architecture").
//!
//! An import is any path through `crate::`, `super::` or `self::` (in `use` declarations or
//! inline), resolved to the file that defines it, following re-exports (`pub use`). Items under
//! `#[cfg(test)]` are left out: a unit test may drive its module through any layer. The binary
//! (`src/bin/`) is a client of the library and is not part of the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, lowest first, as module-path prefixes (the longest matching prefix decides). A
/// file may import from its own layer and from every layer below it.
const LAYERS: &[(&str, &[&str])] = &[
    // plain data and its checks: no device, no kernel, no launching
    (
        "types",
        &["error", "dtype", "shape", "options", "caps", "host", "pages", "kv_dtype", "varlen", "retrieval", "vecmath", "tensor_cores", "tuning"],
    ),
    // validation of calls, shared by the GPU, the CPU path and Backend
    ("problem", &["problem"]),
    // the CPU path and the f64 reference
    ("cpu", &["cpu"]),
    // kernel variants (WGSL, bindings, constants, workgroup memory, what they need from the
    // adapter) and the pure planning of grids and routes: nothing of who launches them
    ("kernels", &["kernels", "plan"]),
    // the device: context, pipelines and their cache, tensors, recording, readback, timing
    (
        "device",
        &[
            "context",
            "backward_call",
            "diagnostics",
            "pipeline_cache",
            "pipeline",
            "tensor",
            "record",
            "readback",
            "reuse",
            "timestamps",
            "timing",
            "paged",
            "block_table",
        ],
    ),
    // launching a variant: a checked call's buffers, parameters and dispatches
    ("launch", &["launch"]),
    // operations: validation, planning, launching; the tensor-core self-check
    ("ops", &["ops"]),
    // the public facade and conveniences built on operations
    ("api", &["backend", "index", ""]),
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Punct(char),
    PathSep,
}

/// Identifiers and punctuation of a Rust file, comments, strings and literals removed.
fn tokens(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == 'r' && (c.get(i + 1) == Some(&'"') || (c.get(i + 1) == Some(&'#') && c.get(i + 2) != Some(&'['))) {
            // raw string r"..." or r#"..."#
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            i = j;
        } else if ch == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if ch == '\'' {
            // a char literal ('x', '\n', '\u{..}') or a lifetime ('a)
            if c.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let s = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[s..i].iter().collect()));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || c[i] == '.') {
                i += 1;
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Tok::PathSep);
            i += 2;
        } else {
            if !ch.is_whitespace() {
                out.push(Tok::Punct(ch));
            }
            i += 1;
        }
    }
    out
}

/// Drops every item under `#[cfg(test)]` (the attribute up to the end of the item it marks).
fn without_test_items(t: Vec<Tok>) -> Vec<Tok> {
    let is = |t: &[Tok], i: usize, s: &str| matches!(t.get(i), Some(Tok::Ident(x)) if x == s);
    let p = |t: &[Tok], i: usize, ch: char| t.get(i) == Some(&Tok::Punct(ch));
    let mut out = vec![];
    let mut i = 0;
    while i < t.len() {
        let cfg_test =
            p(&t, i, '#') && p(&t, i + 1, '[') && is(&t, i + 2, "cfg") && p(&t, i + 3, '(') && is(&t, i + 4, "test");
        if !cfg_test || !p(&t, i + 5, ')') || !p(&t, i + 6, ']') {
            out.push(t[i].clone());
            i += 1;
            continue;
        }
        i += 7;
        // the item: up to a `;` outside braces, or the end of its first brace block
        let mut depth = 0;
        while i < t.len() {
            match &t[i] {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                Tok::Punct(';') if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    out
}

/// The paths of a use tree starting at `t[i]` (after a `::`), each appended to `prefix`.
fn use_tree(t: &[Tok], mut i: usize, prefix: Vec<String>, out: &mut Vec<(Vec<String>, String)>) -> usize {
    let mut path = prefix;
    loop {
        match t.get(i) {
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match t.get(i) {
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        None => return i,
                        _ => i = use_tree(t, i, path.clone(), out),
                    }
                }
            }
            Some(Tok::Ident(s)) => {
                if s != "self" {
                    path.push(s.clone());
                }
                if t.get(i + 1) == Some(&Tok::PathSep) {
                    i += 2;
                } else {
                    // `as alias` renames what the path brings in
                    if matches!(t.get(i + 1), Some(Tok::Ident(a)) if a == "as") {
                        if let Some(Tok::Ident(alias)) = t.get(i + 2) {
                            out.push((path, alias.clone()));
                        }
                        return i + 3;
                    }
                    let name = path.last().cloned().unwrap_or_default();
                    out.push((path, name));
                    return i + 1;
                }
            }
            _ => {
                // `*` or the end: the path so far
                out.push((path, String::new()));
                return i + 1;
            }
        }
    }
}

/// One source file: its module path, the absolute paths it names, and what it re-exports
/// (name -> absolute path).
struct File {
    /// Absolute module paths (crate root = empty) of everything the file names.
    refs: Vec<Vec<String>>,
    reexports: BTreeMap<String, Vec<String>>,
}

fn parse(module: &[String], src: &str) -> File {
    let t = without_test_items(tokens(src));
    let here: Vec<String> = module.to_vec();
    // the child modules this file declares (`mod x;`): paths may start with their names
    let mut children = BTreeSet::new();
    for w in t.windows(3) {
        if let [Tok::Ident(m), Tok::Ident(name), Tok::Punct(';')] = w {
            if m == "mod" {
                children.insert(name.clone());
            }
        }
    }
    let mut refs = vec![];
    let mut reexports = BTreeMap::new();
    let mut i = 0;
    while i < t.len() {
        let Tok::Ident(first) = &t[i] else {
            i += 1;
            continue;
        };
        let starts_path = matches!(first.as_str(), "crate" | "super" | "self") || children.contains(first);
        // a preceding `::` means this is not the start of a path (e.g. `x::self`)
        if !starts_path || t.get(i + 1) != Some(&Tok::PathSep) || (i > 0 && t[i - 1] == Tok::PathSep) {
            i += 1;
            continue;
        }
        let mut base: Vec<String> = if first == "crate" { vec![] } else { here.clone() };
        let mut j = i;
        if first == "crate" {
            j = i + 2;
        } else {
            // self::, super::super::, or a child's name (then part of the path)
            while let Some(Tok::Ident(s)) = t.get(j) {
                if t.get(j + 1) != Some(&Tok::PathSep) || !(s == "super" || s == "self") {
                    break;
                }
                if s == "super" {
                    base.pop();
                }
                j += 2;
            }
        }
        let in_use = i > 0 && matches!(&t[i - 1], Tok::Ident(u) if u == "use");
        let is_pub_use = in_use && (2..7).any(|k| i >= k && matches!(&t[i - k], Tok::Ident(p) if p == "pub"));
        let mut found = vec![];
        let end = use_tree(&t, j, base, &mut found);
        for (path, name) in found {
            if is_pub_use && !name.is_empty() {
                reexports.insert(name, path.clone());
            }
            refs.push(path);
        }
        i = end.max(i + 1);
    }
    File { refs, reexports }
}

/// Every Rust file of `src/` (the binary left out), by module path.
fn source_files() -> BTreeMap<Vec<String>, (String, File)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("src/ is readable") {
            let p = e.expect("entry").path();
            let rel = p.strip_prefix(&root).expect("under src").to_string_lossy().replace('\\', "/");
            if p.is_dir() {
                if rel != "bin" {
                    stack.push(p);
                }
                continue;
            }
            if !rel.ends_with(".rs") {
                continue;
            }
            let mut module: Vec<String> = rel.trim_end_matches(".rs").split('/').map(String::from).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            let src = std::fs::read_to_string(&p).expect("source is readable");
            let f = parse(&module, &src);
            files.insert(module, (rel, f));
        }
    }
    files
}

/// The file a path lands in: the longest prefix that is a module file, then through that
/// file's re-exports of the next name (a few levels deep).
fn resolve(files: &BTreeMap<Vec<String>, (String, File)>, path: &[String], depth: usize) -> Option<Vec<String>> {
    let mut n = path.len();
    while n > 0 && !files.contains_key(&path[..n]) {
        n -= 1;
    }
    let module = path[..n].to_vec();
    if depth < 8 {
        if let Some(next) = path.get(n) {
            if let Some(target) = files.get(&module).and_then(|(_, f)| f.reexports.get(next)) {
                let mut full = target.clone();
                full.extend_from_slice(&path[n + 1..]);
                if full != path {
                    return resolve(files, &full, depth + 1);
                }
            }
        }
    }
    Some(module)
}

fn layer_of(module: &[String]) -> (usize, &'static str) {
    let name = module.join("::");
    let mut best: Option<(usize, usize, &'static str)> = None;
    for (rank, (layer, prefixes)) in LAYERS.iter().enumerate() {
        for p in prefixes.iter() {
            let hit = p.is_empty() || name == *p || name.starts_with(&format!("{p}::"));
            if hit && best.is_none_or(|(len, _, _)| p.len() > len) {
                best = Some((p.len(), rank, layer));
            }
        }
    }
    let (_, rank, layer) = best.expect("the root prefix matches everything");
    (rank, layer)
}

/// Edges between files (module paths), self-edges left out.
fn graph() -> (BTreeMap<Vec<String>, String>, BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) {
    let files = source_files();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, (_, f)) in &files {
        let e = edges.entry(module.clone()).or_default();
        for r in &f.refs {
            if let Some(target) = resolve(&files, r, 0) {
                if &target != module {
                    e.insert(target);
                }
            }
        }
    }
    let names = files.iter().map(|(m, (rel, _))| (m.clone(), rel.clone())).collect();
    (names, edges)
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct T<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Vec<String>) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.edges.get(v) {
            for w in ws {
                if !t.edges.contains_key(w) {
                    continue;
                }
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = vec![];
            loop {
                let w = t.stack.pop().expect("on the stack");
                t.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on: BTreeSet::new(),
        out: vec![],
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_import_cycle_among_source_files() {
    let (names, edges) = graph();
    let found = cycles(&edges);
    let show: Vec<String> = found
        .iter()
        .map(|c| {
            // each file of the cycle with what it imports from the others
            c.iter()
                .map(|m| {
                    let inner: Vec<&String> = edges[m].iter().filter(|t| c.contains(t)).map(|t| &names[t]).collect();
                    format!("  {} -> {inner:?}", names[m])
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert!(found.is_empty(), "import cycles among src/ files:\n{}", show.join("\n\n"));
}

#[test]
fn files_import_only_from_their_layer_or_below() {
    let (names, edges) = graph();
    let mut bad = vec![];
    for (from, tos) in &edges {
        let (lf, nf) = layer_of(from);
        for to in tos {
            let (lt, nt) = layer_of(to);
            if lt > lf {
                bad.push(format!("{} ({nf}) imports {} ({nt})", names[from], names[to]));
            }
        }
    }
    assert!(bad.is_empty(), "imports from a higher layer:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_sees_imports_cycles_and_test_items() {
    // a use tree, an inline path, super, a re-export, a test item, strings and comments
    let src = r#"
        use crate::{a::{B, c::D}, e};
        mod child;
        pub use self::child::Thing as Other;
        pub(crate) use child::More;
        fn f() { let _ = crate::g::h(); let s = "crate::not::this"; } // crate::nor::this
        #[cfg(test)]
        mod tests { use crate::hidden::X; }
        fn k<'a>(x: &'a str) -> char { let _ = super::up::Y; 'x' }
    "#;
    let module = vec!["m".to_string(), "n".to_string()];
    let f = parse(&module, src);
    let refs: BTreeSet<String> = f.refs.iter().map(|p| p.join("::")).collect();
    let want: BTreeSet<String> =
        ["a::B", "a::c::D", "e", "m::n::child::Thing", "m::n::child::More", "g::h", "m::up::Y"].iter().map(|s| s.to_string()).collect();
    assert_eq!(refs, want);
    assert_eq!(f.reexports.get("Other").map(|p| p.join("::")), Some("m::n::child::Thing".into()));
    assert_eq!(f.reexports.get("More").map(|p| p.join("::")), Some("m::n::child::More".into()));
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut e = BTreeMap::new();
    e.insert(s(&["a"]), BTreeSet::from([s(&["b"])]));
    e.insert(s(&["b"]), BTreeSet::from([s(&["c"])]));
    e.insert(s(&["c"]), BTreeSet::from([s(&["a"])]));
    e.insert(s(&["d"]), BTreeSet::from([s(&["a"])]));
    assert_eq!(cycles(&e), vec![vec![s(&["a"]), s(&["b"]), s(&["c"])]]);
}

