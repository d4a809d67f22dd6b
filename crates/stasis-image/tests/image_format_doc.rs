//! `docs/image-format.md` is generated, between markers, from the prost record definitions
//! (read as Rust source with `syn`): every message with its fields (tag, name, type, label and
//! doc comment), every enumeration with its values, every `oneof`. This test renders those
//! sections and fails when the committed document differs.
//!
//! Regenerate with `STASIS_BLESS=1 cargo test -p stasis-image --test image_format_doc`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Fields, Item, Lit, Meta, Token};

/// One generated section: its marker name and the source files it renders, in order.
const SECTIONS: &[(&str, &[&str])] = &[
    ("manifest", &["crates/stasis-image/src/manifest.rs"]),
    ("records", &["crates/stasis-image/src/records/mod.rs"]),
    (
        "partition",
        &[
            "crates/stasis-partition/src/image.rs",
            "crates/stasis-partition/src/mounts.rs",
        ],
    ),
];

const DOC: &str = "docs/image-format.md";
const REGEN: &str = "STASIS_BLESS=1 cargo test -p stasis-image --test image_format_doc";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The doc comment of an item or field as one line of Markdown: rustdoc links become code.
fn doc(attrs: &[Attribute]) -> String {
    let mut lines = Vec::new();
    for a in attrs {
        if let Meta::NameValue(nv) = &a.meta {
            if nv.path.is_ident("doc") {
                if let Expr::Lit(l) = &nv.value {
                    if let Lit::Str(s) = &l.lit {
                        lines.push(s.value().trim().to_owned());
                    }
                }
            }
        }
    }
    lines
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .replace("[`", "`")
        .replace("`]", "`")
        .replace('|', "\\|")
}

/// Which prost derive an item has: `Message`, `Enumeration` or `Oneof`.
fn prost_derive(attrs: &[Attribute]) -> Option<&'static str> {
    for a in attrs.iter().filter(|a| a.path().is_ident("derive")) {
        let list = a
            .parse_args_with(Punctuated::<syn::Path, Token![,]>::parse_terminated)
            .expect("derive list");
        for p in list {
            let last = p.segments.last().expect("path").ident.to_string();
            for kind in ["Message", "Enumeration", "Oneof"] {
                if last == kind {
                    return Some(kind);
                }
            }
        }
    }
    None
}

/// The parsed `#[prost(...)]` attribute of a field: bare words and `key = "value"` pairs.
#[derive(Default)]
struct ProstAttr {
    words: Vec<String>,
    pairs: Vec<(String, String)>,
}

impl ProstAttr {
    fn of(attrs: &[Attribute]) -> Option<ProstAttr> {
        let a = attrs.iter().find(|a| a.path().is_ident("prost"))?;
        let list = a
            .parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
            .expect("prost attribute");
        let mut out = ProstAttr::default();
        for m in list {
            match m {
                Meta::Path(p) => out.words.push(p.get_ident().expect("word").to_string()),
                Meta::NameValue(nv) => {
                    let key = nv.path.get_ident().expect("key").to_string();
                    let Expr::Lit(l) = &nv.value else {
                        panic!("prost {key}: not a literal")
                    };
                    let Lit::Str(s) = &l.lit else {
                        panic!("prost {key}: not a string")
                    };
                    out.pairs.push((key, s.value()));
                }
                Meta::List(_) => panic!("unexpected prost attribute form"),
            }
        }
        Some(out)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, word: &str) -> bool {
        self.words.iter().any(|w| w == word)
    }

    /// The protobuf type: a scalar name, `bytes`, `enum X`, or a message name taken from the
    /// Rust type (`Option<X>`, `Vec<X>`, `X`).
    fn proto_type(&self, rust: &syn::Type) -> String {
        if let Some(e) = self.get("enumeration") {
            return format!("enum `{e}`");
        }
        if self.get("bytes").is_some() || self.has("bytes") {
            return "bytes".into();
        }
        if self.has("message") {
            return format!("`{}`", innermost(rust));
        }
        const SCALARS: &[&str] = &[
            "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64",
            "sfixed32", "sfixed64", "bool", "string", "float", "double",
        ];
        for s in SCALARS {
            if self.has(s) {
                return (*s).into();
            }
        }
        panic!(
            "unknown prost field type: {:?} {:?}",
            self.words, self.pairs
        )
    }

    fn label(&self) -> &'static str {
        if self.has("repeated") {
            "repeated"
        } else if self.has("optional") {
            "optional"
        } else {
            ""
        }
    }
}

/// `X` of `Option<X>`, `Vec<X>`, `a::X`.
fn innermost(ty: &syn::Type) -> String {
    let syn::Type::Path(p) = ty else {
        panic!("unexpected field type")
    };
    let last = p.path.segments.last().expect("type path");
    if let syn::PathArguments::AngleBracketed(args) = &last.arguments {
        if let Some(syn::GenericArgument::Type(inner)) = args.args.first() {
            return innermost(inner);
        }
    }
    last.ident.to_string()
}

fn heading(out: &mut String, name: &str, what: &str, attrs: &[Attribute]) {
    let _ = writeln!(out, "### `{name}`{what}\n");
    let d = doc(attrs);
    if !d.is_empty() {
        let _ = writeln!(out, "{d}\n");
    }
}

/// Render the prost items of one source file (modules included, for `oneof`s).
fn render_items(out: &mut String, items: &[Item], prefix: &str) -> usize {
    let mut rows = 0;
    for item in items {
        match item {
            Item::Struct(s) if prost_derive(&s.attrs) == Some("Message") => {
                let name = format!("{prefix}{}", s.ident);
                heading(out, &name, "", &s.attrs);
                let _ = writeln!(out, "| tag | field | type | label | meaning |");
                let _ = writeln!(out, "|---:|---|---|---|---|");
                let Fields::Named(fields) = &s.fields else {
                    panic!("{name}: message without named fields")
                };
                for f in &fields.named {
                    let Some(p) = ProstAttr::of(&f.attrs) else {
                        continue;
                    };
                    let field = f.ident.as_ref().expect("named field");
                    let (tag, ty, label) = if let Some(oneof) = p.get("oneof") {
                        let tags = p.get("tags").expect("oneof tags").to_owned();
                        (tags, format!("oneof `{oneof}`"), "")
                    } else {
                        let tag = p.get("tag").expect("tag").to_owned();
                        (tag, p.proto_type(&f.ty), p.label())
                    };
                    let _ = writeln!(
                        out,
                        "| {tag} | `{field}` | {ty} | {label} | {} |",
                        doc(&f.attrs)
                    );
                    rows += 1;
                }
                out.push('\n');
            }
            Item::Enum(e) if prost_derive(&e.attrs) == Some("Enumeration") => {
                let name = format!("{prefix}{}", e.ident);
                heading(out, &name, " (enumeration)", &e.attrs);
                let _ = writeln!(out, "| value | name | meaning |");
                let _ = writeln!(out, "|---:|---|---|");
                for v in &e.variants {
                    let (_, Expr::Lit(l)) = v.discriminant.as_ref().expect("explicit value") else {
                        panic!("{name}::{}: value is not a literal", v.ident)
                    };
                    let Lit::Int(i) = &l.lit else {
                        panic!("{name}::{}: value is not an integer", v.ident)
                    };
                    let _ = writeln!(out, "| {i} | `{}` | {} |", v.ident, doc(&v.attrs));
                }
                out.push('\n');
            }
            Item::Enum(e) if prost_derive(&e.attrs) == Some("Oneof") => {
                let name = format!("{prefix}{}", e.ident);
                heading(out, &name, " (oneof)", &e.attrs);
                let _ = writeln!(out, "| tag | variant | type | meaning |");
                let _ = writeln!(out, "|---:|---|---|---|");
                for v in &e.variants {
                    let p = ProstAttr::of(&v.attrs).expect("oneof variant attribute");
                    let tag = p.get("tag").expect("tag");
                    let ty = match &v.fields {
                        Fields::Unnamed(u) if u.unnamed.len() == 1 => {
                            p.proto_type(&u.unnamed[0].ty)
                        }
                        _ => panic!("{name}::{}: one unnamed field expected", v.ident),
                    };
                    let _ = writeln!(out, "| {tag} | `{}` | {ty} | {} |", v.ident, doc(&v.attrs));
                    rows += 1;
                }
                out.push('\n');
            }
            Item::Mod(m) => {
                if let Some((_, inner)) = &m.content {
                    rows += render_items(out, inner, &format!("{prefix}{}::", m.ident));
                }
            }
            _ => {}
        }
    }
    rows
}

/// Render one source file, then the out-of-line modules it declares (`mod pipe;` in
/// `records/mod.rs` is `records/pipe.rs`), so a new record file is picked up by itself.
fn render_file(out: &mut String, f: &str) {
    let path = workspace().join(f);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("parsing {f}: {e}"));
    let _ = writeln!(out, "<!-- from {f} -->\n");
    render_items(out, &file.items, "");
    let dir = Path::new(f).parent().expect("source file in a directory");
    for item in &file.items {
        if let Item::Mod(m) = item {
            if m.content.is_none() && f.ends_with("mod.rs") {
                let sub = dir.join(format!("{}.rs", m.ident));
                render_file(out, sub.to_str().expect("utf-8 path"));
            }
        }
    }
}

fn render(files: &[&str]) -> String {
    let mut out = String::new();
    for f in files {
        render_file(&mut out, f);
    }
    out
}

fn begin(name: &str) -> String {
    format!("<!-- BEGIN GENERATED {name}: do not edit; regenerate with `{REGEN}` -->")
}

fn end(name: &str) -> String {
    format!("<!-- END GENERATED {name} -->")
}

/// The document with every generated section replaced by a fresh rendering.
fn regenerate(doc: &str) -> String {
    let mut out = doc.to_owned();
    for (name, files) in SECTIONS {
        let (b, e) = (begin(name), end(name));
        let start = out
            .find(&b)
            .unwrap_or_else(|| panic!("{DOC}: marker missing: {b}"));
        let body_start = start + b.len();
        let stop = body_start
            + out[body_start..]
                .find(&e)
                .unwrap_or_else(|| panic!("{DOC}: marker missing: {e}"));
        let body = format!("\n\n{}", render(files));
        out.replace_range(body_start..stop, &body);
    }
    out
}

#[test]
fn image_format_doc_matches_the_record_definitions() {
    let path = workspace().join(DOC);
    let committed = std::fs::read_to_string(&path).expect("reading docs/image-format.md");
    let fresh = regenerate(&committed);
    if fresh == committed {
        return;
    }
    if std::env::var_os("STASIS_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).expect("writing docs/image-format.md");
        return;
    }
    let (n, (want, got)) = fresh
        .lines()
        .zip(committed.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .unwrap_or((
            fresh.lines().count().min(committed.lines().count()),
            ("<end>", "<end>"),
        ));
    panic!(
        "{DOC} is out of date with the record definitions (first difference at line {}):\n  \
         document:  {got}\n  generated: {want}\nRegenerate it with `{REGEN}` and commit the result.",
        n + 1
    );
}

#[test]
fn every_tagged_field_is_rendered() {
    // Guard against the renderer skipping fields: every `tag = "…"`/`tags = "…"` of the
    // sources is one table row.
    for (name, files) in SECTIONS {
        let mut tags = 0;
        for f in *files {
            let text = std::fs::read_to_string(workspace().join(f)).expect("source");
            tags += text.matches("tag = \"").count() + text.matches("tags = \"").count();
        }
        let mut rows = 0;
        for f in *files {
            let text = std::fs::read_to_string(workspace().join(f)).expect("source");
            let file = syn::parse_file(&text).expect("parse");
            rows += render_items(&mut String::new(), &file.items, "");
        }
        assert_eq!(
            rows, tags,
            "{name}: rendered field rows vs tags in the sources"
        );
    }
}
