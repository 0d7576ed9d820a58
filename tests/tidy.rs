//! Conventions kept by a test that reads the source, in the spirit of
//! rust-analyzer's `tidy.rs`: the layer order written in ARCHITECTURE.md,
//! SQL only in the store, short functions, reasons on every lint exception,
//! module docs, and comments that point at files which exist.
//!
//! Each rule is a function from source text to violations, so the tests at
//! the bottom can prove with a fixture that a rule fails when it should.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAX_FUNCTION_LINES: usize = 80;

/// Functions allowed to be longer than [`MAX_FUNCTION_LINES`], with the
/// length they may not exceed. The list only shrinks: an entry whose
/// function got shorter than the limit must be removed, and a listed
/// function may not grow.
const LONG_FUNCTIONS: &[(&str, &str, usize)] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, sorted, with its path relative to the
/// repository root.
fn rust_files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root()).unwrap().display().to_string();
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn src_files() -> Vec<(String, String)> {
    rust_files(&root().join("src"))
}

/// The top-level module a file of `src/` belongs to (`src/api/ws.rs` →
/// `api`); `None` for the crate roots.
fn top_module(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("src/")?;
    let first = rest.split('/').next()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then_some(name)
}

/// The text of a file without comments and without the contents of string
/// literals, line by line, so rules about code are not fooled by prose.
fn code_only(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        let mut code = String::new();
        let mut chars = line.chars().peekable();
        let mut in_str = false;
        while let Some(c) = chars.next() {
            if in_block {
                if c == '*' && chars.peek() == Some(&'/') {
                    chars.next();
                    in_block = false;
                }
                continue;
            }
            if in_str {
                if c == '\\' {
                    chars.next();
                } else if c == '"' {
                    in_str = false;
                    code.push('"');
                }
                continue;
            }
            match c {
                '/' if chars.peek() == Some(&'/') => break,
                '/' if chars.peek() == Some(&'*') => {
                    chars.next();
                    in_block = true;
                }
                '"' => {
                    in_str = true;
                    code.push('"');
                }
                // A char literal such as '"' must not open a string.
                '\'' => {
                    let rest: String = chars.clone().take(3).collect();
                    if rest.starts_with("\"'") {
                        chars.next();
                        chars.next();
                    }
                    code.push('\'');
                }
                _ => code.push(c),
            }
        }
        out.push(code);
    }
    out
}

/// Lines from the first `#[cfg(test)]` on are test code.
fn non_test_part(text: &str) -> &str {
    match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// The layers of ARCHITECTURE.md's "Layers" section, lowest first: each
/// numbered line lists the top-level modules of one layer in backquotes.
fn layers() -> BTreeMap<String, usize> {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let section = doc
        .split("\n## Layers")
        .nth(1)
        .expect("ARCHITECTURE.md has a `## Layers` section");
    let section = section.split("\n## ").next().unwrap();
    let mut map = BTreeMap::new();
    let mut rank = 0;
    for line in section.lines() {
        let trimmed = line.trim_start();
        let numbered = trimmed
            .split_once(". ")
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if !numbered {
            continue;
        }
        rank += 1;
        // Only the module list before the first dash: the rest explains.
        let list = trimmed.split(" — ").next().unwrap();
        for name in list.split('`').skip(1).step_by(2) {
            map.insert(name.to_owned(), rank);
        }
    }
    map
}

/// Top-level modules named by `crate::x` paths in one file's code,
/// including the members of `use crate::{a, b::c}`.
fn crate_references(code: &[String]) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    for (n, line) in code.iter().enumerate() {
        let mut rest = line.as_str();
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name = item.trim().split("::").next().unwrap_or("").trim();
                    if !name.is_empty() {
                        refs.push((n + 1, name.to_owned()));
                    }
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    refs.push((n + 1, name));
                }
            }
            rest = after;
        }
    }
    refs
}

/// Imports that break the layer order: a module may name modules of lower
/// layers only, never one of its own layer or above.
fn layer_violations(path: &str, text: &str, layers: &BTreeMap<String, usize>) -> Vec<String> {
    let Some(module) = top_module(path) else {
        return Vec::new();
    };
    let Some(&own) = layers.get(module) else {
        return vec![format!(
            "{path}: module `{module}` is in no layer of ARCHITECTURE.md"
        )];
    };
    let mut out = Vec::new();
    for (line, target) in crate_references(&code_only(text)) {
        if target == module {
            continue;
        }
        match layers.get(&target) {
            Some(&rank) if rank < own => {}
            Some(_) => out.push(format!(
                "{path}:{line}: `{module}` (layer {own}) names `{target}` (layer {}), which is not below it",
                layers[&target]
            )),
            None => out.push(format!(
                "{path}:{line}: `{target}` is in no layer of ARCHITECTURE.md"
            )),
        }
    }
    out
}

/// SQL text in string literals, outside the store.
fn sql_violations(path: &str, text: &str) -> Vec<String> {
    if path.starts_with("src/store/") {
        return Vec::new();
    }
    const SQL: &[&str] = &[
        "SELECT ",
        "INSERT INTO",
        "DELETE FROM",
        "CREATE TABLE",
        "ALTER TABLE",
        "UPDATE ",
    ];
    let mut out = Vec::new();
    for (n, line) in non_test_part(text).lines().enumerate() {
        let code_quote = line.contains('"') && !line.trim_start().starts_with("//");
        if code_quote
            && SQL
                .iter()
                .any(|k| string_literals(line).any(|s| s.contains(k)))
        {
            out.push(format!("{path}:{}: SQL text outside src/store", n + 1));
        }
    }
    out
}

fn string_literals(line: &str) -> impl Iterator<Item = &str> {
    line.split('"').skip(1).step_by(2)
}

/// Functions longer than the limit, as `(path, name, lines)`.
fn long_functions(path: &str, text: &str) -> Vec<(String, String, usize)> {
    let code = code_only(non_test_part(text));
    let mut out = Vec::new();
    for (i, line) in code.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(name) = function_name(trimmed) else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        let closing = " ".repeat(indent) + "}";
        let Some(len) = code[i..].iter().position(|l| l.trim_end() == closing) else {
            continue;
        };
        // A signature that ends in `;` is a declaration, not a body.
        let signature_end = code[i..]
            .iter()
            .position(|l| l.contains('{') || l.contains(';'));
        if signature_end.is_some_and(|s| code[i + s].contains(';') && !code[i + s].contains('{')) {
            continue;
        }
        if len + 1 > MAX_FUNCTION_LINES {
            out.push((path.to_owned(), name, len + 1));
        }
    }
    out
}

fn function_name(line: &str) -> Option<String> {
    let mut rest = line;
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let after = rest.strip_prefix("fn ")?;
    let name: String = after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Lint exceptions without a reason, and code that must not land.
fn exception_violations(path: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let code = code_only(text);
    for (n, line) in code.iter().enumerate() {
        let exempts_lint = line.contains("allow(") || line.contains("expect(clippy");
        // An attribute that rustfmt spread over lines ends at its `)]`.
        let attribute: String = code[n..]
            .iter()
            .scan(false, |done, l| {
                (!std::mem::replace(done, l.contains(")]"))).then_some(l.as_str())
            })
            .collect();
        if line.contains("#[") && exempts_lint && !attribute.contains("reason") {
            out.push(format!(
                "{path}:{}: a lint exception needs `reason = \"…\"`",
                n + 1
            ));
        }
        for banned in ["todo!(", "unimplemented!(", "dbg!("] {
            if line.contains(banned) {
                out.push(format!("{path}:{}: `{banned}` must not land", n + 1));
            }
        }
    }
    out
}

/// Paths named in comments (under `src`, `tests`, `docs` and the other
/// top-level folders, or any `dir/file.ext`) that do not exist in the
/// repository. A path relative to `src` is accepted too.
fn dangling_paths(path: &str, text: &str, exists: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some(comment) = comment_part(line) else {
            continue;
        };
        for word in comment.split(|c: char| c.is_whitespace() || "`()[],;:'\"".contains(c)) {
            let word = word.trim_end_matches(['.', '!', '?']);
            if !looks_like_path(word) {
                continue;
            }
            if !exists(word) {
                out.push(format!(
                    "{path}:{}: comment names `{word}`, which does not exist",
                    n + 1
                ));
            }
        }
    }
    out
}

/// The comment at the end of a line, if any, ignoring `//` inside strings.
fn comment_part(line: &str) -> Option<&str> {
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_str => escaped = true,
            '"' => in_str = !in_str,
            '/' if !in_str && line[i + 1..].starts_with('/') => return Some(&line[i + 2..]),
            _ => {}
        }
    }
    None
}

fn looks_like_path(word: &str) -> bool {
    let known_roots = [
        "src/", "tests/", "benches/", "docs/", "modules/", "config/", "deploy/", "certs/", "fuzz/",
        ".ci/", "shared/", "../",
    ];
    let has_ext = [".rs", ".md", ".lua", ".toml", ".json", ".sql", ".txt"]
        .iter()
        .any(|e| word.ends_with(e));
    let rooted = known_roots.iter().any(|r| word.starts_with(r));
    !word.contains("://")
        && !word.starts_with('/')
        && !word.contains(['{', '…', '\\'])
        && (rooted || (has_ext && word.contains('/')) || word == "MISSION.md")
}

fn path_exists(word: &str) -> bool {
    let candidates = [root().join(word), root().join("src").join(word)];
    candidates.iter().any(|p| {
        if word.contains('*') {
            glob_exists(p)
        } else {
            p.exists()
        }
    })
}

/// `dir/prefix*` exists when some entry of `dir` starts with `prefix`.
fn glob_exists(pattern: &Path) -> bool {
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
        return false;
    };
    let prefix = name.to_string_lossy();
    let prefix = prefix.split('*').next().unwrap_or("");
    std::fs::read_dir(dir).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with(prefix)))
    })
}

fn assert_none(what: &str, violations: Vec<String>) {
    assert!(violations.is_empty(), "{what}:\n{}", violations.join("\n"));
}

#[test]
fn layers_are_respected() {
    let layers = layers();
    let violations = src_files()
        .iter()
        .flat_map(|(path, text)| layer_violations(path, text, &layers))
        .collect();
    assert_none(
        "imports that break ARCHITECTURE.md's layer order",
        violations,
    );
}

#[test]
fn every_top_level_module_has_a_layer() {
    let layers = layers();
    let mut missing: Vec<String> = src_files()
        .iter()
        .filter_map(|(p, _)| top_module(p))
        .filter(|m| !layers.contains_key(*m))
        .map(str::to_owned)
        .collect();
    missing.dedup();
    assert_none("modules missing from ARCHITECTURE.md's layers", missing);
}

#[test]
fn sql_lives_in_the_store() {
    let violations = src_files()
        .iter()
        .flat_map(|(p, t)| sql_violations(p, t))
        .collect();
    assert_none("SQL outside the store", violations);
}

#[test]
fn functions_fit_on_a_screen() {
    let found: Vec<(String, String, usize)> = src_files()
        .iter()
        .flat_map(|(p, t)| long_functions(p, t))
        .collect();
    let mut violations = Vec::new();
    for (path, name, len) in &found {
        match LONG_FUNCTIONS.iter().find(|(p, n, _)| p == path && n == name) {
            Some((_, _, max)) if len <= max => {}
            Some((_, _, max)) => violations.push(format!(
                "{path}: `{name}` grew to {len} lines (allowed {max}); split it"
            )),
            None => violations.push(format!(
                "{path}: `{name}` is {len} lines (limit {MAX_FUNCTION_LINES}); split it along its steps"
            )),
        }
    }
    for (path, name, _) in LONG_FUNCTIONS {
        if !found.iter().any(|(p, n, _)| p == path && n == name) {
            violations.push(format!(
                "{path}: `{name}` is within the limit now; remove it from LONG_FUNCTIONS"
            ));
        }
    }
    assert_none("long functions", violations);
}

#[test]
fn lint_exceptions_give_reasons_and_nothing_unfinished_lands() {
    let violations = src_files()
        .iter()
        .flat_map(|(p, t)| exception_violations(p, t))
        .collect();
    assert_none("lint exceptions and unfinished code", violations);
}

#[test]
fn every_source_file_says_what_it_is_for() {
    let violations = src_files()
        .into_iter()
        .chain(rust_files(&root().join("tests")))
        .chain(rust_files(&root().join("benches")))
        .filter(|(_, t)| !t.starts_with("//!"))
        .map(|(p, _)| format!("{p}: starts without a `//!` line"))
        .collect();
    assert_none("files without a module doc", violations);
}

#[test]
fn comments_name_files_that_exist() {
    let violations = src_files()
        .into_iter()
        .chain(rust_files(&root().join("tests")))
        .chain(rust_files(&root().join("benches")))
        .flat_map(|(p, t)| dangling_paths(&p, &t, &path_exists))
        .collect();
    assert_none("comments naming missing files", violations);
}

// The rules themselves, each shown to fail on a fixture.

fn fixture_layers() -> BTreeMap<String, usize> {
    [("util", 1), ("store", 2), ("runtime", 2), ("api", 3)]
        .into_iter()
        .map(|(m, r)| (m.to_owned(), r))
        .collect()
}

#[test]
fn a_forbidden_import_is_caught() {
    let layers = fixture_layers();
    let upward = "//! A store file.\nuse crate::api::Ops;\n";
    let sideways = "//! A store file.\nuse crate::{util::describe, runtime::Runtime};\n";
    let downward =
        "//! An api file.\nuse crate::store::Store;\n// crate::api in a comment is prose\n";
    assert_eq!(
        layer_violations("src/store/mod.rs", upward, &layers).len(),
        1
    );
    assert_eq!(
        layer_violations("src/store/x.rs", sideways, &layers).len(),
        1
    );
    assert!(layer_violations("src/api/mod.rs", downward, &layers).is_empty());
    let unknown = "use crate::nowhere::Thing;";
    assert_eq!(
        layer_violations("src/api/mod.rs", unknown, &layers).len(),
        1
    );
}

#[test]
fn the_layers_are_read_from_architecture_md() {
    let layers = layers();
    assert!(layers["util"] < layers["store"]);
    assert!(layers["store"] < layers["api"]);
    assert!(layers["api"] < layers["master"]);
    assert_eq!(layers["master"], layers["edge"]);
}

#[test]
fn sql_outside_the_store_is_caught() {
    let text = "fn f() { let q = \"SELECT id FROM documents\"; }";
    assert_eq!(sql_violations("src/api/x.rs", text).len(), 1);
    assert!(sql_violations("src/store/sql.rs", text).is_empty());
    assert!(sql_violations("src/api/x.rs", "// SELECT in a comment").is_empty());
}

#[test]
fn a_long_function_is_caught() {
    let body = "    let x = 1;\n".repeat(MAX_FUNCTION_LINES);
    let text = format!("fn long() {{\n{body}}}\nfn short() {{\n}}\n");
    let found = long_functions("src/x.rs", &text);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1, "long");
}

#[test]
fn an_exception_without_reason_is_caught() {
    let bad = "#[allow(clippy::expect_used)]\nfn f() {}";
    let good = "#[allow(clippy::expect_used, reason = \"static\")]\nfn f() {}";
    assert_eq!(exception_violations("src/x.rs", bad).len(), 1);
    assert!(exception_violations("src/x.rs", good).is_empty());
    assert_eq!(
        exception_violations("src/x.rs", "fn f() { todo!() }").len(),
        1
    );
}

#[test]
fn a_dangling_path_in_a_comment_is_caught() {
    let text = "// see src/store/sql.rs and shared/seeds/001_*.txt\nlet s = \"// src/nowhere.rs\";";
    let found = dangling_paths("src/x.rs", text, &|p| p == "src/store/sql.rs");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("shared/seeds"));
}
