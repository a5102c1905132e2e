//! The dependency rule of `src/` (README, "Architecture"), checked on the source text so a
//! crossing fails here before review:
//!
//!     api  <-  probe  <-  controller/<kind>/{observe, plan, apply}  <-  runtime  <-  cli  <-  main
//!     api  <-  webhook/mutate (pure)  <-  webhook router and handlers  <-  runtime
//!
//! Comments and string literals are ignored; `crate::{a, b::c}` groups count as `crate::a`
//! and `crate::b`.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, recursively, sorted.
fn rs_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The code of a Rust source: comments and string/char literal contents blanked out.
fn code(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if let Some(hashes) = raw_string_start(rest) {
            let open = 2 + hashes; // r, #..., "
            let close = format!("\"{}", "#".repeat(hashes));
            i += open
                + rest[open..]
                    .find(&close)
                    .map_or(rest.len(), |e| e + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if let Some(len) = char_literal(rest) {
            i += len;
            out.push_str("' '");
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `r"`, `r#"`, `br##"`...: the number of `#`s, when `s` opens a raw string.
fn raw_string_start(s: &str) -> Option<usize> {
    let s = s.strip_prefix('b').unwrap_or(s).strip_prefix('r')?;
    let hashes = s.len() - s.trim_start_matches('#').len();
    s[hashes..].starts_with('"').then_some(hashes)
}

/// The length of a char literal (`'x'`, `'\n'`, `'"'`) opening `s`; None for a lifetime.
fn char_literal(s: &str) -> Option<usize> {
    let mut chars = s.char_indices();
    if chars.next()?.1 != '\'' {
        return None;
    }
    let (_, c) = chars.next()?;
    if c == '\\' {
        return s[2..].find('\'').map(|e| e + 3);
    }
    let (at, close) = chars.next()?;
    (close == '\'').then_some(at + 1)
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first segment of every path after `prefix` (e.g. `crate::`), groups expanded.
fn segments_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue; // `mycrate::` is not `crate::`
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth < 0
                })
                .map_or(group.len(), |(e, _)| e);
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let name: String =
                            item.trim().chars().take_while(|&c| is_ident(c)).collect();
                        if !name.is_empty() {
                            found.insert(name);
                        }
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// (file relative to src/, its code) for every file under `src/<dir>`.
fn sources(dir: &str) -> Vec<(String, String)> {
    let root = src();
    rs_files(&root.join(dir))
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let rel = p.strip_prefix(&root).unwrap().display().to_string();
            (rel, code(&text))
        })
        .collect()
}

/// Every `crate::<module>` a file under `dir` names from `forbidden`.
fn crossings(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let mut out = vec![];
    for (file, code) in sources(dir) {
        for m in segments_after(&code, "crate::") {
            if forbidden.contains(&m.as_str()) {
                out.push(format!("{file} uses crate::{m}"));
            }
        }
    }
    out
}

#[test]
fn no_layer_is_crossed() {
    let rules: &[(&str, &[&str])] = &[
        // Types only: no I/O, no behaviour of any layer above.
        (
            "api",
            &[
                "controller",
                "webhook",
                "runtime",
                "probe",
                "agent",
                "cli",
                "server",
                "tls",
                "metrics",
                "state",
            ],
        ),
        // Busy sources serve the controllers; they never call them.
        (
            "probe",
            &["controller", "webhook", "runtime", "agent", "cli", "server"],
        ),
        // The in-pod client never depends on the server it talks to.
        (
            "agent",
            &["webhook", "controller", "runtime", "server", "cli", "probe"],
        ),
        // The webhook never imports a controller (shared names live in api).
        (
            "webhook",
            &["controller", "runtime", "agent", "cli", "server"],
        ),
        // A controller never imports the webhook, the server or the CLI.
        ("controller", &["webhook", "cli", "server", "agent", "tls"]),
    ];
    let mut all = vec![];
    for (dir, forbidden) in rules {
        all.extend(crossings(dir, forbidden));
    }
    assert!(all.is_empty(), "layers crossed:\n{}", all.join("\n"));
}

#[test]
fn nothing_below_cli_imports_cli() {
    let found: Vec<String> = sources("")
        .into_iter()
        .filter(|(file, _)| !["cli.rs", "main.rs", "lib.rs"].contains(&file.as_str()))
        .filter(|(_, code)| segments_after(code, "crate::").contains("cli"))
        .map(|(file, _)| file)
        .collect();
    assert!(found.is_empty(), "these import crate::cli: {found:?}");
}

#[test]
fn no_kind_imports_another_kind() {
    let kinds = ["hsd", "hsj", "singleton", "actor"];
    let mut found = vec![];
    for kind in kinds {
        for (file, code) in sources(&format!("controller/{kind}")) {
            for other in kinds.iter().filter(|&&k| k != kind) {
                for path in [format!("controller::{other}"), format!("super::{other}")] {
                    if !segments_after(&code, &format!("{path}::")).is_empty()
                        || code.contains(&format!("{path};"))
                    {
                        found.push(format!("{file} uses {path}"));
                    }
                }
            }
        }
    }
    // The two warm pools share `api::pool`, `api::probe` and `controller::pool`, never
    // each other's modules (not even the other's api types).
    for (kind, other) in [("hsd", "hsj"), ("hsj", "hsd")] {
        for (file, code) in sources(&format!("controller/{kind}")) {
            if code.contains(&format!("{other}::")) {
                found.push(format!("{file} names {other}::"));
            }
        }
    }
    assert!(found.is_empty(), "kinds cross:\n{}", found.join("\n"));
}

/// Sibling modules of one directory (`webhook::mutate`, `webhook::singleton`...) must not
/// name each other in a circle. (Top-level modules are wired by lib.rs; not checked here.)
#[test]
fn no_circle_among_sibling_modules() {
    let mut circles = vec![];
    let mut dirs: Vec<PathBuf> = subdirs(&src());
    while let Some(dir) = dirs.pop() {
        // module -> (code whose `super::` names a sibling, code whose `crate::` paths count)
        let mut modules: BTreeMap<String, (String, String)> = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            let read = |f: &Path| code(&std::fs::read_to_string(f).unwrap());
            let (own, all) = if p.is_dir() {
                dirs.push(p.clone());
                let root = p.join("mod.rs");
                let own = if root.exists() {
                    read(&root)
                } else {
                    String::new()
                };
                (own, rs_files(&p).iter().map(|f| read(f)).collect())
            } else if p.extension().is_some_and(|x| x == "rs") && name != "mod" {
                let text = read(&p);
                (text.clone(), text)
            } else {
                continue;
            };
            let m = modules.entry(name).or_default();
            m.0 += &own;
            m.1 += &all;
        }
        let module_path = dir.strip_prefix(src()).unwrap().display().to_string();
        let crate_prefix = format!("crate::{}::", module_path.replace('/', "::"));
        let edges: BTreeMap<&str, BTreeSet<String>> = modules
            .iter()
            .map(|(m, (own, all))| {
                let mut to = segments_after(own, "super::");
                to.extend(segments_after(all, &crate_prefix));
                to.retain(|t| t != m && modules.contains_key(t));
                (m.as_str(), to)
            })
            .collect();
        for (a, tos) in &edges {
            for b in tos {
                if reaches(&edges, b, a, &mut BTreeSet::new()) {
                    circles.push(format!("{crate_prefix}{{{a} -> {b} -> ... -> {a}}}"));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "module circles:\n{}",
        circles.join("\n")
    );
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect()
}

fn reaches(
    edges: &BTreeMap<&str, BTreeSet<String>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> bool {
    if from == to {
        return true;
    }
    if !seen.insert(from.to_string()) {
        return false;
    }
    edges
        .get(from)
        .is_some_and(|next| next.iter().any(|n| reaches(edges, n, to, seen)))
}

/// The scanner itself: it finds a crossing in code, groups included, and ignores comments
/// and strings.
#[test]
fn the_scanner_sees_crossings_and_ignores_comments_and_strings() {
    let text = r##"
        //! use crate::webhook::x;
        /* crate::runtime::y */
        use crate::{api::hsd, controller::{pool, shell}};
        const S: &str = "crate::cli::z";
        const R: &str = r#"crate::server "quoted""#;
        const C: char = '"';
        fn f<'a>(x: &'a str) -> &'a str { crate::probe::g(x) }
    "##;
    let found = segments_after(&code(text), "crate::");
    assert_eq!(
        found,
        ["api", "controller", "probe"]
            .map(String::from)
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
}
