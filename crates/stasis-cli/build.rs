//! Records the git commit the binary is built from (`stasis --version`): `git rev-parse
//! --short HEAD` when building in a checkout with git installed, else "unknown".
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let o = Command::new("git").args(args).output().ok()?;
    if !o.status.success() {
        return None;
    }
    let s = String::from_utf8(o.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STASIS_COMMIT={commit}");
    // Run again when HEAD moves: HEAD itself, the branch it names, and packed refs.
    let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(&["rev-parse", "--git-path", &branch]));
    }
    watch.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for p in watch.into_iter().flatten() {
        let p = std::path::Path::new(&p);
        let p = if p.is_relative() {
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or(p.into())
        } else {
            p.to_path_buf()
        };
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
}
