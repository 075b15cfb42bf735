//! Reproducibility: the same spec built from two checkouts in different
//! directories, with different umask, mtimes, file creation order, stores and
//! working directories, gives byte-identical archives.

use std::process::Command;

use crate::archive::app_checkout;
use crate::util::{TestEnv, assert_success};

crate::it_test!(two_checkouts_give_identical_archives);
fn two_checkouts_give_identical_archives() {
    let env = TestEnv::new();
    let a = app_checkout(&env.path().join("first/checkout"));
    // The second checkout: files created in reverse order under umask 077,
    // every mtime moved to 2001, in a directory with another name and depth.
    let b = env.path().join("elsewhere/deeper/second");
    let script = format!(
        "set -e; umask 077; cd '{a}'; find . -type f | sort -r | while read -r f; do \
         mkdir -p \"{b}/$(dirname \"$f\")\"; cp \"$f\" \"{b}/$f\"; done; \
         find '{b}' -exec touch -h -d @1000000000 {{}} +",
        a = a.display(),
        b = b.display()
    );
    let st = Command::new("sh").arg("-c").arg(&script).status().unwrap();
    assert!(st.success());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&b.join("README.md")),
        0o600,
        "the second checkout really differs"
    );
    assert_ne!(mode(&a.join("README.md")), 0o600);

    let out = env.run_in(&a, &["build", "specs/app.toml"]);
    assert_success(&out, &["build (first)"]);
    let mut cmd = env.cmd_in(
        std::path::Path::new("/"),
        &["build", b.join("specs/app.toml").to_str().unwrap()],
    );
    cmd.env("IMGBUILD_STORE", env.path().join("second-store"));
    let out = cmd.output().unwrap();
    assert_success(&out, &["build (second)"]);

    let first = std::fs::read(a.join("dist/imgbuild.oci.tar")).unwrap();
    let second = std::fs::read(b.join("dist/imgbuild.oci.tar")).unwrap();
    assert!(first.len() > 1000);
    assert!(
        first == second,
        "archives differ ({} vs {} bytes)",
        first.len(),
        second.len()
    );
}

crate::it_test!(rebuilding_gives_the_same_bytes_and_leaves_the_file_alone);
fn rebuilding_gives_the_same_bytes_and_leaves_the_file_alone() {
    let env = TestEnv::new();
    let a = app_checkout(&env.path().join("checkout"));
    env.run_in(&a, &["specs/app.toml"]);
    let archive = a.join("dist/imgbuild.oci.tar");
    let before = std::fs::metadata(&archive).unwrap().modified().unwrap();
    let bytes = std::fs::read(&archive).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    // --no-cache rebuilds every layer from scratch: same bytes, file untouched.
    let out = env.run_in(&a, &["build", "--no-cache", "specs/app.toml"]);
    assert_success(&out, &["rebuild"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unchanged"));
    assert_eq!(std::fs::read(&archive).unwrap(), bytes);
    assert_eq!(
        std::fs::metadata(&archive).unwrap().modified().unwrap(),
        before
    );
}
