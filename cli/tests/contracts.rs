//! The protos under the standard toolchain's rules: `buf build` and `buf lint` pass
//! (proto/buf.yaml says which STANDARD rules are excepted and why), and `buf breaking`
//! holds them to the released baseline (proto/baseline.binpb): a removed, renumbered or
//! retyped field fails with buf's message naming the file and line.

use std::{path::Path, process::Command};

/// buf from npm: the official binary, in a registry package.
const BUF: &str = "@bufbuild/buf@1.75.0";

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn buf() -> std::path::PathBuf {
    platform::testing::npm_tools(&root().join("target/test-tools/node-buf"), &[BUF]).join("buf")
}

/// Runs buf in `dir`: (success, stdout and stderr).
fn run_buf(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(buf())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("buf runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_protos_build_and_lint_clean_with_buf() {
    let proto = root().join("proto");
    let (built, output) = run_buf(&proto, &["build"]);
    assert!(built, "buf build:\n{output}");
    let (clean, output) = run_buf(&proto, &["lint"]);
    assert!(clean, "buf lint:\n{output}");
}

#[test]
fn the_protos_keep_the_released_contract_and_a_break_is_named() {
    let proto = root().join("proto");
    let (kept, output) = run_buf(&proto, &["breaking", "--against", "baseline.binpb"]);
    assert!(
        kept,
        "a change breaks the released contract (if on purpose, a release updates \
         proto/baseline.binpb):\n{output}"
    );

    // A copy with a field removed and another renumbered: buf refuses it, naming both.
    let copy = std::env::temp_dir().join(format!("protos-{}", uuid::Uuid::new_v4()));
    let status = Command::new("cp")
        .arg("-r")
        .arg(&proto)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let catalog = copy.join("protos/orderflow/catalog/v1/catalog.proto");
    let text = std::fs::read_to_string(&catalog).unwrap();
    let broken = text.replacen("  int64 gross_price = 7;\n", "", 1).replacen(
        "  bool exempt = 8;",
        "  bool exempt = 18;",
        1,
    );
    assert_ne!(
        broken, text,
        "the fields to break are where this test expects"
    );
    std::fs::write(&catalog, broken).unwrap();
    let (kept, output) = run_buf(&copy, &["breaking", "--against", "baseline.binpb"]);
    std::fs::remove_dir_all(&copy).ok();
    assert!(!kept, "buf accepted a broken contract:\n{output}");
    assert!(
        output.contains("orderflow/catalog/v1/catalog.proto")
            && output.contains("gross_price")
            && output.contains("exempt"),
        "{output}"
    );
}

/// openapi-typescript, which turns the OpenAPI document into the web's API types.
const OPENAPI_TYPESCRIPT: &str = "openapi-typescript@7.13.0";

#[test]
fn the_web_api_client_is_generated_from_the_current_contract() {
    let table = gateway::routes::RouteTable::from_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .expect("routes from the protos");
    let doc = gateway::openapi::document(&table);
    let dir = std::env::temp_dir().join(format!("openapi-ts-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("openapi.json");
    let generated = dir.join("schema.d.ts");
    // As `orderflow openapi` prints it.
    std::fs::write(&spec, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    let tools = platform::testing::npm_tools(
        &root().join("target/test-tools/node-openapi"),
        &[OPENAPI_TYPESCRIPT],
    );
    let out = Command::new(tools.join("openapi-typescript"))
        .arg(&spec)
        .arg("-o")
        .arg(&generated)
        .output()
        .expect("openapi-typescript runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = std::fs::read_to_string(&generated).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let committed = std::fs::read_to_string(root().join("web/src/api/schema.d.ts"))
        .expect("web/src/api/schema.d.ts is committed");
    assert!(
        fresh == committed,
        "web/src/api/schema.d.ts is stale: the API changed; run web/generate-api and commit it"
    );
    // The client the web uses is typed by it.
    let client = std::fs::read_to_string(root().join("web/src/api/client.ts")).unwrap();
    assert!(client.contains("createClient<paths>"), "{client}");
}

/// The storefront the binary embeds (`web/dist`, committed so `cargo build` needs no npm)
/// is what `web/build` makes of `web/src` now: type-checked against the generated client,
/// bundled, and byte for byte the committed files.
#[test]
fn the_embedded_storefront_is_built_from_the_current_sources() {
    let out = root().join(format!("target/web-build-{}", uuid::Uuid::new_v4()));
    let built = Command::new(root().join("web/build"))
        .env("OUT", &out)
        .output()
        .expect("web/build runs (./dev test installs Node.js and npm)");
    assert!(
        built.status.success(),
        "web/build failed (a type error in web/src?):\n{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    for file in ["index.html", "app.js", "app.css", "admin.html", "admin.js"] {
        let fresh = std::fs::read(out.join(file)).unwrap();
        let committed = std::fs::read(root().join("web/dist").join(file)).unwrap();
        assert!(
            fresh == committed,
            "web/dist/{file} is stale: run web/build and commit web/dist"
        );
    }
    std::fs::remove_dir_all(&out).ok();
}
