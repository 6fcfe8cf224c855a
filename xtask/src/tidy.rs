//! The tidy tests, in the style of rust-analyzer's: checks of the source tree itself that
//! `cargo test --workspace` (so `cargo xtask test`) runs.
//!
//! - every module of every crate opens with `//!` module docs (a crate root may include its
//!   README instead);
//! - no source file passes [`MAX_LINES`] unless [`LONG_FILES`] names it with a reason;
//! - no module of a crate imports, directly or through others, a module that imports it
//!   back.
//!
//! The last check reads `crate::` and `super::` paths (in `use` items and in code), with the
//! `#[cfg(test)]` part of each file left out; a parent's use of its own child modules
//! (`child::item`) is how a module tree is built, not a circle, and is not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::shell::project_root;

/// The most lines a source file may have.
const MAX_LINES: usize = 600;

/// Source files allowed past [`MAX_LINES`], each with its reason. The list only shrinks.
const LONG_FILES: &[(&str, &str)] = &[];

/// One crate's source files: its `src/` folder and the files under it.
struct Crate {
    name: String,
    src: PathBuf,
    files: Vec<PathBuf>,
}

/// The crates of the workspace (`crates/*` and `xtask`), each with its `src/` files.
fn crates() -> Vec<Crate> {
    let root = project_root();
    let mut folders: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .expect("the crates folder")
        .map(|entry| entry.expect("a crates entry").path())
        .filter(|path| path.join("src").is_dir())
        .collect();
    folders.push(root.join("xtask"));
    folders.sort();
    folders
        .into_iter()
        .map(|folder| {
            let src = folder.join("src");
            let mut files = Vec::new();
            rust_files(&src, &mut files);
            files.sort();
            Crate {
                name: folder.file_name().unwrap().to_string_lossy().into_owned(),
                src,
                files,
            }
        })
        .collect()
}

fn rust_files(folder: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(folder).expect("a source folder") {
        let path = entry.expect("a source entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(project_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The module path of a file under `src` (`["consumer", "take"]` for `consumer/take.rs` and
/// for `consumer/take/mod.rs`; empty for `lib.rs` and `main.rs`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .strip_prefix(src)
        .expect("a file under src")
        .with_extension("")
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The part of a file outside its tests: everything before the first `#[cfg(test)]` at the
/// start of a line.
fn without_tests(text: &str) -> &str {
    text.find("\n#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// The code of `text` with comments, string and character literals blanked out, so that a
/// path in a doc comment or a message is not read as an import.
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                // A raw string (`r"..."`, `r#"..."#`) ends at a quote followed by as many
                // `#` as it opened with; a plain one at an unescaped quote.
                let opened = bytes[..i].iter().rev().take_while(|b| **b == b'#').count();
                let raw = i > opened && bytes[i - opened - 1] == b'r';
                let hashes = if raw { opened } else { 0 };
                i += 1;
                loop {
                    if i >= bytes.len() {
                        break;
                    }
                    if bytes[i] == b'\\' && !raw {
                        i += 2;
                        continue;
                    }
                    if bytes[i] == b'"' && bytes[i + 1..].iter().take(hashes).all(|b| *b == b'#') {
                        i += 1 + hashes;
                        break;
                    }
                    i += 1;
                }
                out.push_str("\"\"");
            }
            b'\'' if bytes.get(i + 2) == Some(&b'\'') || bytes.get(i + 1) == Some(&b'\\') => {
                // A character literal ('x' or '\n'); a lifetime has no closing quote.
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            }
            _ => {
                let c = text[i..].chars().next().expect("a char");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// Every path that `code` names from `crate::` or `super::`, as the segments after the
/// start, resolved against `module` (the module of the file): `use` groups are expanded.
fn paths_in(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let inline = inline_modules(code);
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // Not `$crate::` either: a macro's body names paths of the crate that expands it.
        let starts_word =
            i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':' && bytes[i - 1] != b'$';
        let rest = &code[i..];
        if starts_word && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            let mut base: Vec<String> = Vec::new();
            let mut at = i;
            if rest.starts_with("crate::") {
                at += "crate::".len();
            } else {
                // The module at this point: the file's, and the inline modules around it.
                base = module.to_vec();
                base.extend(
                    inline
                        .iter()
                        .filter(|(start, end, _)| (*start..*end).contains(&i))
                        .map(|(_, _, name)| name.clone()),
                );
                while code[at..].starts_with("super::") {
                    base.pop();
                    at += "super::".len();
                }
            }
            let end = use_tree(code, at, &base, &mut found);
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    found
}

/// The inline modules (`mod name { ... }`) of `code`: where each body starts and ends, and
/// its name, outermost first.
fn inline_modules(code: &str) -> Vec<(usize, usize, String)> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(offset) = code[at..].find("mod ") {
        let start = at + offset;
        at = start + 4;
        if start > 0 && is_ident(bytes[start - 1]) {
            continue;
        }
        let name_end = at + code[at..].bytes().take_while(|b| is_ident(*b)).count();
        let brace = name_end
            + code[name_end..]
                .bytes()
                .take_while(u8::is_ascii_whitespace)
                .count();
        if name_end == at || bytes.get(brace) != Some(&b'{') {
            continue;
        }
        let mut depth = 0usize;
        let mut end = brace;
        for (i, b) in bytes.iter().enumerate().skip(brace) {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        found.push((brace, end, code[at..name_end].to_string()));
    }
    found
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Reads one use tree (or a plain path) at `at` under `prefix`, pushing each full path to
/// `found`, and returns where it ends.
fn use_tree(code: &str, mut at: usize, prefix: &[String], found: &mut Vec<Vec<String>>) -> usize {
    let bytes = code.as_bytes();
    let mut path = prefix.to_vec();
    loop {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if at < bytes.len() && bytes[at] == b'{' {
            at += 1;
            loop {
                while at < bytes.len() && (bytes[at].is_ascii_whitespace() || bytes[at] == b',') {
                    at += 1;
                }
                if at >= bytes.len() || bytes[at] == b'}' {
                    return at + 1;
                }
                at = use_tree(code, at, &path, found);
            }
        }
        let start = at;
        while at < bytes.len() && is_ident(bytes[at]) {
            at += 1;
        }
        if at > start {
            path.push(code[start..at].to_string());
        }
        if code[at..].starts_with("::") {
            at += 2;
        } else {
            // A macro's path (`crate::name!`) names the crate root whichever file defines it.
            if !code[at..].trim_start().starts_with('!') {
                found.push(path);
            }
            return at;
        }
    }
}

/// The file of `path`'s longest prefix that names a module of the crate.
fn target<'a>(modules: &'a BTreeMap<Vec<String>, PathBuf>, path: &[String]) -> Option<&'a PathBuf> {
    (0..=path.len())
        .rev()
        .find_map(|len| modules.get(&path[..len]))
}

/// The circles among `files`' imports: each a sorted list of two or more files that reach
/// each other (Tarjan's strongly connected components).
fn circles(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        found: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a PathBuf) {
        let n = state.index.len();
        state.index.insert(node, n);
        state.low.insert(node, n);
        state.stack.push(node);
        state.on_stack.insert(node);
        for next in state.edges.get(node).into_iter().flatten() {
            if !state.index.contains_key(next) {
                visit(state, next);
                let low = state.low[node].min(state.low[next]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(next) {
                let low = state.low[node].min(state.index[next]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(top) = state.stack.pop() {
                state.on_stack.remove(top);
                component.push(top.clone());
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    state.found
}

/// Each file of `krate` with the files of the same crate its `crate::` and `super::` paths
/// name.
fn imports(krate: &Crate) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let modules: BTreeMap<Vec<String>, PathBuf> = krate
        .files
        .iter()
        .map(|file| (module_of(&krate.src, file), file.clone()))
        .collect();
    krate
        .files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).expect("a source file");
            let code = code_only(without_tests(&text));
            let module = module_of(&krate.src, file);
            let named = paths_in(&code, &module)
                .iter()
                .filter_map(|path| target(&modules, path))
                .filter(|to| *to != file)
                .cloned()
                .collect();
            (file.clone(), named)
        })
        .collect()
}

#[test]
fn every_module_opens_with_module_docs() {
    let missing: Vec<String> = crates()
        .iter()
        .flat_map(|krate| &krate.files)
        .filter(|file| {
            let text = std::fs::read_to_string(file).expect("a source file");
            // A crate root may take its docs from its README.
            let text = text.trim_start();
            !(text.starts_with("//!") || text.starts_with("#![doc = include_str!"))
        })
        .map(|file| relative(file))
        .collect();
    assert!(
        missing.is_empty(),
        "these modules do not open with `//!` docs saying what they are for:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn no_file_is_longer_than_the_limit() {
    let mut long = Vec::new();
    let mut listed_but_short = Vec::new();
    for file in crates().iter().flat_map(|krate| &krate.files) {
        let lines = std::fs::read_to_string(file)
            .expect("a source file")
            .lines()
            .count();
        let name = relative(file);
        let listed = LONG_FILES.iter().any(|(path, _)| *path == name);
        if lines > MAX_LINES && !listed {
            long.push(format!("{name}: {lines} lines"));
        } else if lines <= MAX_LINES && listed {
            listed_but_short.push(name);
        }
    }
    assert!(
        long.is_empty(),
        "these files are over {MAX_LINES} lines: split them along their seams (or list one in \
         LONG_FILES with the reason):\n  {}",
        long.join("\n  ")
    );
    assert!(
        listed_but_short.is_empty(),
        "LONG_FILES lists files that are no longer long: take them off\n  {}",
        listed_but_short.join("\n  ")
    );
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let mut report = Vec::new();
    for krate in crates() {
        let edges = imports(&krate);
        for circle in circles(&edges) {
            let mut lines = vec![format!("{}: {} modules", krate.name, circle.len())];
            for from in &circle {
                let to: Vec<String> = edges[from]
                    .iter()
                    .filter(|to| circle.contains(to))
                    .map(|to| relative(to))
                    .collect();
                lines.push(format!("    {} -> {}", relative(from), to.join(", ")));
            }
            report.push(lines.join("\n"));
        }
    }
    assert!(
        report.is_empty(),
        "modules that import each other, directly or through others (move what both need \
         to a module below them):\n  {}",
        report.join("\n  ")
    );
}

#[test]
fn the_path_reader_expands_groups_and_climbs_super() {
    let module = vec!["consumer".to_string(), "run".to_string()];
    let code = code_only(
        "use crate::{bus::Inner, keys::{a, b}};\n\
         // crate::comment::Ignored\n\
         let x = super::take::read(\"crate::string::Ignored\");\n\
         use super::super::clock::Skew;\n\
         crate::for_each!(x); $crate::private::Hidden\n\
         mod inner { use super::Outer; }",
    );
    let paths: Vec<String> = paths_in(&code, &module)
        .iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        paths,
        [
            "bus::Inner",
            "keys::a",
            "keys::b",
            "consumer::take::read",
            "clock::Skew",
            "consumer::run::Outer"
        ]
    );
}

#[test]
fn a_circle_is_found_through_a_third_module() {
    let edge = |from: &str, to: &[&str]| {
        (
            PathBuf::from(from),
            to.iter().map(PathBuf::from).collect::<BTreeSet<_>>(),
        )
    };
    let edges = BTreeMap::from([
        edge("a", &["b"]),
        edge("b", &["c"]),
        edge("c", &["a"]),
        edge("d", &["a"]),
    ]);
    assert_eq!(
        circles(&edges),
        [vec![
            PathBuf::from("a"),
            PathBuf::from("b"),
            PathBuf::from("c")
        ]]
    );
}
