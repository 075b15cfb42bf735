//! Build behaviour: several images per spec, step images, RUN until the sandbox
//! lands, SOURCE_DATE_EPOCH precedence.

use crate::util::{TestEnv, assert_success, stderr, tool};

const MULTI: &str = r#"
[build]
source_date_epoch = 1700000000

[stage.assets]
from = "scratch"
[[stage.assets.step]]
copy = [{ src = "a.txt", dest = "/assets/" }]

[image.one]
from = "scratch"
tags = ["one:1"]
output = "out/one.tar"
[[image.one.step]]
copy = [{ from = "assets", src = "/assets/a.txt", dest = "/a.txt" }]

[image.two]
from = "one"
tags = ["two:1"]
output = "out/two.tar"
labels = { which = "two" }
"#;

crate::it_test!(a_spec_writes_every_image_it_defines);
fn a_spec_writes_every_image_it_defines() {
    let env = TestEnv::new();
    env.write("ctx/a.txt", "A\n");
    env.write("ctx/spec.toml", MULTI);
    let ctx = env.path().join("ctx");
    let out = env.run_in(&ctx, &["spec.toml"]);
    assert_success(&out, &["build"]);
    let text = stderr(&out);
    assert!(
        text.contains("Successfully tagged one:1") && text.contains("Successfully tagged two:1"),
        "{text}"
    );
    for t in ["one", "two"] {
        let v = tool(
            "skopeo",
            &[
                "inspect",
                &crate::util::oci_archive_ref(&ctx.join(format!("out/{t}.tar"))),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
    }
    // --target picks one; -o then names its archive.
    let out = env.run_in(
        &ctx,
        &[
            "build",
            "--target",
            "two",
            "-o",
            "just-two.tar",
            "spec.toml",
        ],
    );
    assert_success(&out, &["build --target"]);
    assert!(ctx.join("just-two.tar").is_file());
    let out = env.run_in(&ctx, &["build", "-o", "x.tar", "spec.toml"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "-o with two images is ambiguous"
    );
    assert!(stderr(&out).contains("--target"));
}

crate::it_test!(every_step_is_an_image);
fn every_step_is_an_image() {
    let env = TestEnv::new();
    env.write("ctx/a.txt", "A\n");
    env.write("ctx/spec.toml", MULTI);
    let ctx = env.path().join("ctx");
    let out = env.run_in(&ctx, &["spec.toml"]);
    let ids: Vec<String> = stderr(&out)
        .lines()
        .filter_map(|l| l.strip_prefix(" ---> "))
        .filter(|l| l.len() == 12)
        .map(str::to_string)
        .collect();
    assert!(ids.len() >= 3, "{ids:?}");
    let all = env.ok(&["images", "-a", "-q"]);
    for id in &ids {
        assert!(
            all.contains(id.as_str()),
            "step image {id} is not in `images -a`:\n{all}"
        );
        // Any step image can be exported and read back.
        let file = env.path().join(format!("{id}.tar"));
        env.ok(&["export", id, "-o", file.to_str().unwrap()]);
        tool("skopeo", &["inspect", &crate::util::oci_archive_ref(&file)]);
    }
}

crate::it_test!(a_run_with_no_shell_fails_clearly);
fn a_run_with_no_shell_fails_clearly() {
    let env = TestEnv::new();
    env.write(
        "ctx/spec.toml",
        "[image.x]\nfrom = \"scratch\"\noutput = \"x.tar\"\n[[image.x.step]]\nrun = \"make all\"\n",
    );
    let out = env.run_in(&env.path().join("ctx"), &["spec.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("spec.toml:4:1")
            && err.contains("RUN make all")
            && err.contains("exec: \"/bin/sh\": executable file not found"),
        "{err}"
    );
    assert!(!env.path().join("ctx/x.tar").exists());
}

crate::it_test!(source_date_epoch_from_the_environment_wins);
fn source_date_epoch_from_the_environment_wins() {
    let env = TestEnv::new();
    env.write("ctx/a.txt", "A\n");
    env.write(
        "ctx/spec.toml",
        "[build]\nsource_date_epoch = 1700000000\n[image.x]\nfrom = \"scratch\"\noutput = \"x.tar\"\n\
         [[image.x.step]]\ncopy = [{ src = \"a.txt\", dest = \"/\" }]\n",
    );
    let ctx = env.path().join("ctx");
    let mut c = env.cmd_in(&ctx, &["spec.toml"]);
    c.env("SOURCE_DATE_EPOCH", "86400");
    assert_success(&c.output().unwrap(), &["build with SOURCE_DATE_EPOCH"]);
    let cfg = tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &crate::util::oci_archive_ref(&ctx.join("x.tar")),
        ],
    );
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["created"], "1970-01-02T00:00:00Z");
    // Every entry of the layer carries the same time.
    let layers = crate::util::archive_layers(&ctx.join("x.tar"));
    let listing = crate::util::layer_listing(&layers[0]);
    assert_eq!(listing, ["a.txt 644 0:0 86400 2"]);
    let mut c = env.cmd_in(&ctx, &["spec.toml"]);
    c.env("SOURCE_DATE_EPOCH", "yesterday");
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("SOURCE_DATE_EPOCH"));
}

crate::it_test!(outputs_inside_the_context_are_not_read_back);
/// What a build writes inside its context (the archive, --iidfile,
/// --depfile, --metadata-file) is never read back by the next build: with
/// `COPY . /app/`, the second build takes every step from the cache and
/// writes the same archive, which holds only the context's own files.
fn outputs_inside_the_context_are_not_read_back() {
    let env = TestEnv::new();
    env.write("ctx/a.txt", "a\n");
    env.write("ctx/sub/b.txt", "b\n");
    env.write("ctx/Dockerfile", "FROM scratch\nCOPY . /app/\n");
    let ctx = env.path().join("ctx");
    let args = [
        "build",
        "--progress=plain",
        "-t",
        "app:1",
        "-o",
        "sub/app.oci.tar",
        "--iidfile",
        "app.id",
        "--depfile",
        "sub/app.d",
        "--metadata-file",
        "meta.json",
        ".",
    ];
    let build = || {
        let mut c = env.cmd_in(&ctx, &args);
        c.env("SOURCE_DATE_EPOCH", "0");
        let out = c.output().unwrap();
        assert_success(&out, &args);
        stderr(&out)
    };
    build();
    let first = std::fs::read(ctx.join("sub/app.oci.tar")).unwrap();
    let log = build();
    assert!(log.contains("Using cache"), "{log}");
    assert!(
        !log.contains("Cache miss"),
        "the second build missed:\n{log}"
    );
    assert_eq!(std::fs::read(ctx.join("sub/app.oci.tar")).unwrap(), first);
    let names: Vec<String> = crate::util::archive_layers(&ctx.join("sub/app.oci.tar"))
        .iter()
        .flat_map(|l| crate::util::layer_listing(l))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "app/",
            "app/Dockerfile",
            "app/a.txt",
            "app/sub/",
            "app/sub/b.txt"
        ]
    );
}
