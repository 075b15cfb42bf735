//! Dockerfile builds end to end: the same image as a spec, stages and
//! --target, ARG scoping, .dockerignore, ADD archives, ONBUILD, diagnostics.

use crate::util::{
    TestEnv, archive_layers, assert_success, copy_tree, every_case, fixtures, golden,
    layer_listing, stderr, tool,
};

fn iid(env: &TestEnv, dir: &std::path::Path, args: &[&str]) -> String {
    let iidfile = env.path().join(format!("iid-{}", rand_name(args)));
    let mut all = vec!["build", "--iidfile", iidfile.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut c = env.cmd_in(dir, &all);
    c.env("SOURCE_DATE_EPOCH", "1700000000");
    let out = c.output().unwrap();
    assert_success(&out, &all);
    std::fs::read_to_string(iidfile).unwrap()
}

fn rand_name(args: &[&str]) -> String {
    imgbuild::digest::Digest::of(args.join(" ").as_bytes()).short()
}

crate::it_test!(a_dockerfile_and_a_spec_that_say_the_same_make_the_same_image);
fn a_dockerfile_and_a_spec_that_say_the_same_make_the_same_image() {
    let env = TestEnv::new();
    env.write("ctx/foo.txt", "Hello World\n");
    env.write("ctx/bin/tool", "#!/bin/sh\n");
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nCOPY foo.txt /foo.txt\nCOPY --chmod=755 bin/tool /usr/local/bin/\nENV A=1\nLABEL demo=1\nCMD [\"/usr/local/bin/tool\"]\n",
    );
    env.write(
        "ctx/spec.toml",
        r#"
[image.x]
from = "scratch"
env = { A = "1" }
labels = { demo = "1" }
cmd = ["/usr/local/bin/tool"]
[[image.x.step]]
copy = [{ src = "foo.txt", dest = "/foo.txt" }]
[[image.x.step]]
copy = [{ src = "bin/tool", dest = "/usr/local/bin/", mode = "0755" }]
"#,
    );
    let ctx = env.path().join("ctx");
    let from_dockerfile = iid(&env, &ctx, &["-o", "d.tar", "."]);
    let from_spec = iid(&env, &ctx, &["-o", "s.tar", "spec.toml"]);
    assert!(from_dockerfile.starts_with("sha256:"));
    assert_eq!(from_dockerfile, from_spec);
}

crate::it_test!(stages_target_and_build_args);
fn stages_target_and_build_args() {
    let env = TestEnv::new();
    env.write("ctx/a.txt", "A\n");
    env.write("ctx/b.txt", "B\n");
    env.write(
        "ctx/Dockerfile",
        "ARG VERSION=1.0\nARG BASE=scratch\n\
         FROM ${BASE} AS first\nCOPY a.txt /a.txt\n\
         FROM scratch AS unused\nCOPY b.txt /b.txt\n\
         FROM ${BASE} AS final\nARG VERSION\nARG TARGETARCH\n\
         COPY --from=0 /a.txt /from-index.txt\nCOPY --from=first /a.txt /from-name.txt\n\
         LABEL version=$VERSION arch=$TARGETARCH\n",
    );
    let ctx = env.path().join("ctx");
    let out = env.run_in(
        &ctx,
        &["build", "--build-arg", "VERSION=2.0", "-t", "staged:1", "."],
    );
    assert_success(&out, &["build"]);
    let log = stderr(&out);
    assert!(
        !log.contains("COPY b.txt"),
        "the unused stage was built:\n{log}"
    );
    // As `docker build`: stored and tagged, no file (least of all in the
    // context), and one line on how to get one.
    let written: Vec<_> = std::fs::read_dir(&ctx)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar"))
        .collect();
    assert!(written.is_empty(), "a build without -o wrote {written:?}");
    assert!(
        log.contains("No archive written (the image is in the store): add -o FILE, or run `imgbuild export staged:1 -o FILE`"),
        "{log}"
    );
    env.ok(&[
        "export",
        "staged:1",
        "-o",
        ctx.join("staged.oci.tar").to_str().unwrap(),
    ]);
    let cfg = tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &crate::util::oci_archive_ref(&ctx.join("staged.oci.tar")),
        ],
    );
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["config"]["Labels"]["version"], "2.0");
    assert_eq!(cfg["config"]["Labels"]["arch"], "amd64");
    let layers = archive_layers(&ctx.join("staged.oci.tar"));
    let names: Vec<String> = layers
        .iter()
        .flat_map(|l| layer_listing(l))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(names, ["from-index.txt", "from-name.txt"]);

    // --target first: only that stage; the final stage's COPYs never run.
    let out = env.run_in(
        &ctx,
        &["build", "--target", "first", "-o", "first.tar", "."],
    );
    assert_success(&out, &["build --target first"]);
    assert!(!stderr(&out).contains("from-index"), "{}", stderr(&out));
    let out = env.run_in(&ctx, &["build", "--target", "nope", "."]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no stage named `nope`"));
}

crate::it_test!(dockerignore_rules_apply);
fn dockerignore_rules_apply() {
    let env = TestEnv::new();
    for f in [
        "README.md",
        "NOTES.md",
        "src/main.rs",
        "target/big.bin",
        "secret.key",
    ] {
        env.write(&format!("ctx/{f}"), f);
    }
    env.write("ctx/.dockerignore", "# docs\n*.md\n!README.md\ntarget\n");
    env.write("ctx/Dockerfile", "FROM scratch\nCOPY . /app/\n");
    // A Dockerfile-specific ignore file beside it wins over the context's.
    env.write("ctx/other/Dockerfile", "FROM scratch\nCOPY . /app/\n");
    env.write("ctx/other/Dockerfile.dockerignore", "secret.key\nother\n");
    let ctx = env.path().join("ctx");
    env.ok(&[
        "build",
        "-o",
        ctx.join("a.tar").to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    let listing: Vec<String> = archive_layers(&ctx.join("a.tar"))
        .iter()
        .flat_map(|l| layer_listing(l))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert!(
        listing.contains(&"app/README.md".to_string()),
        "{listing:?}"
    );
    assert!(
        !listing
            .iter()
            .any(|p| p.contains("NOTES") || p.contains("target")),
        "{listing:?}"
    );
    assert!(listing.contains(&"app/secret.key".to_string()));
    env.ok(&[
        "build",
        "-f",
        ctx.join("other/Dockerfile").to_str().unwrap(),
        "-o",
        ctx.join("b.tar").to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    let listing: Vec<String> = archive_layers(&ctx.join("b.tar"))
        .iter()
        .flat_map(|l| layer_listing(l))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert!(
        !listing.contains(&"app/secret.key".to_string()),
        "{listing:?}"
    );
    assert!(
        listing.contains(&"app/NOTES.md".to_string()),
        "the context's .dockerignore was not used: {listing:?}"
    );
}

crate::it_test!(add_unpacks_local_archives);
fn add_unpacks_local_archives() {
    let env = TestEnv::new();
    let ctx = env.path().join("ctx");
    env.write("src/bin/app", "binary");
    env.write("src/etc/app.conf", "x=1");
    std::os::unix::fs::symlink("app", env.path().join("src/bin/app-link")).unwrap();
    std::fs::create_dir_all(&ctx).unwrap();
    let st = std::process::Command::new("tar")
        .args(["--owner=1000", "--group=1000", "--mtime=@1000", "-czf"])
        .arg(ctx.join("app.tar.gz"))
        .args(["-C", env.path().join("src").to_str().unwrap(), "bin", "etc"])
        .status()
        .unwrap();
    assert!(st.success());
    env.write("ctx/plain.txt", "not an archive");
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nADD app.tar.gz /opt/\nADD plain.txt /plain.txt\n",
    );
    let mut c = env.cmd_in(&ctx, &["build", "-o", "x.tar", "."]);
    c.env("SOURCE_DATE_EPOCH", "2000");
    assert_success(&c.output().unwrap(), &["build ADD"]);
    let layers = archive_layers(&ctx.join("x.tar"));
    let l0 = layer_listing(&layers[0]);
    assert!(
        l0.iter()
            .any(|l| l.starts_with("opt/bin/app 644 1000:1000")),
        "{l0:?}"
    );
    assert!(
        l0.iter().any(|l| l.starts_with("opt/etc/app.conf ")),
        "{l0:?}"
    );
    assert!(
        l0.iter()
            .any(|l| l.starts_with("opt/bin/app-link 777 1000:1000")),
        "{l0:?}"
    );
    assert!(!l0.iter().any(|l| l.contains("app.tar.gz")));
    assert_eq!(layer_listing(&layers[1]), ["plain.txt 644 0:0 2000 14"]);
}

crate::it_test!(onbuild_triggers_run_in_the_child);
fn onbuild_triggers_run_in_the_child() {
    let env = TestEnv::new();
    env.write(
        "parent/Dockerfile",
        "FROM scratch\nONBUILD COPY hello.txt /from-trigger.txt\nLABEL parent=1\n",
    );
    env.write("child/hello.txt", "hi\n");
    env.write("child/Dockerfile", "FROM parent:1\nLABEL child=1\n");
    env.ok(&[
        "build",
        "-t",
        "parent:1",
        "-o",
        env.path().join("p.tar").to_str().unwrap(),
        env.path().join("parent").to_str().unwrap(),
    ]);
    let out = env.run_in(&env.path().join("child"), &["build", "-o", "c.tar", "."]);
    assert_success(&out, &["build child"]);
    let log = stderr(&out);
    assert!(log.contains("COPY hello.txt /from-trigger.txt"), "{log}");
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--config",
            &crate::util::oci_archive_ref(&env.path().join("child/c.tar")),
        ],
    );
    let cfg: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert!(
        cfg["config"].get("OnBuild").is_none(),
        "triggers are consumed: {cfg}"
    );
    assert_eq!(cfg["config"]["Labels"]["child"], "1");
}

crate::it_test!(run_on_scratch_has_no_shell);
fn run_on_scratch_has_no_shell() {
    let env = TestEnv::new();
    env.write("ctx/Dockerfile", "FROM scratch\nRUN echo hi\n");
    let out = env.run_in(&env.path().join("ctx"), &["build", "."]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains("Dockerfile:2:1")
            && e.contains("RUN echo hi")
            && e.contains("exec: \"/bin/sh\": executable file not found"),
        "{e}"
    );
}

crate::it_test!(check_warns_about_undeclared_args_and_unused_stages);
fn check_warns_about_undeclared_args_and_unused_stages() {
    let env = TestEnv::new();
    env.write(
        "ctx/Dockerfile",
        "FROM scratch AS a\nFROM scratch AS b\nLABEL x=$NOPE\n",
    );
    let out = env.run_in(&env.path().join("ctx"), &["check", "Dockerfile"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("Dockerfile:3:9: warning: `$NOPE` is not declared"),
        "{e}"
    );
    assert!(
        e.contains("Dockerfile:1:6: warning: stage `a` is never used"),
        "{e}"
    );
}

/// One folder of tests/fixtures/dockerfile-invalid/: `Dockerfile`, the
/// golden `stderr` of both `check` and `build` (exit 2), and optionally
/// `stderr.contains` (lines stderr must hold: the hint a case is about).
fn invalid(case: &str, dir: &std::path::Path) {
    let env = TestEnv::new();
    let work = env.path().join("case");
    copy_tree(dir, &work);
    for extra in ["stderr", "stderr.contains"] {
        std::fs::remove_file(work.join(extra)).ok();
    }
    for cmd in ["check", "build"] {
        let arg = if cmd == "check" { "Dockerfile" } else { "." };
        let out = env.run_in(&work, &[cmd, arg]);
        assert_eq!(out.status.code(), Some(2), "{cmd} {case}: {}", stderr(&out));
        golden(&dir.join("stderr"), &stderr(&out));
        crate::util::contains_every_line(&dir.join("stderr.contains"), &stderr(&out));
    }
}

// Every folder is a case: an unknown instruction or flag suggests the right
// one, JSON arrays must hold strings, a missing source points at its word,
// ENV needs a value, an unterminated heredoc, a misspelled stage gets a hint...
crate::it_test!(every_invalid_dockerfile_folder);
fn every_invalid_dockerfile_folder() {
    every_case(
        &fixtures().join("dockerfile-invalid"),
        &["Dockerfile"],
        &["stderr"],
        invalid,
    );
}
