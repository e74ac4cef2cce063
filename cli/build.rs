//! The commit the binary is built from, for the traces' `service.version`
//! (`0.1.0+<commit>`): `ORDERFLOW_REVISION` when the build sets it (the image's builder,
//! whose context has no `.git`), else `git rev-parse`; empty when neither knows.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=ORDERFLOW_REVISION");
    let given = std::env::var("ORDERFLOW_REVISION")
        .ok()
        .filter(|r| !r.is_empty() && r != "unknown");
    let revision = given.or_else(|| {
        // A commit or a checkout moves HEAD or a branch: build again then.
        if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
            // (Only paths that exist: a missing one would run this script every build.)
            for path in ["HEAD", "refs/heads", "packed-refs"] {
                let path = std::path::Path::new(&dir).join(path);
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    let revision: String = revision
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(40)
        .collect();
    println!("cargo:rustc-env=ORDERFLOW_REVISION={revision}");
}
