//! Output that reads like docker's: history and image sizes are content
//! sizes, `images` and `inspect` take `--format` (json and Go templates),
//! the terminal view says why a step missed the cache, `build --help`
//! shows examples.

use crate::util::{TestEnv, assert_success};

/// An image of one compressible megabyte (so content and compressed sizes
/// differ a thousandfold), tagged `big:1`, with env, labels, cmd and user.
fn big(env: &TestEnv) -> std::path::PathBuf {
    env.write("ctx/zeros", vec![0u8; 1_000_000]);
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nCOPY zeros /zeros\nENV A=1 B=two\nLABEL a.b=dotted\nUSER 7:7\nWORKDIR /w\n\
         ENTRYPOINT [\"/bin/x\"]\nCMD [\"--help\"]\n",
    );
    let ctx = env.path().join("ctx");
    let mut c = env.cmd_in(&ctx, &["build", "-q", "-t", "big:1", "-o", "big.tar", "."]);
    c.env("SOURCE_DATE_EPOCH", "1700000000");
    let out = c.output().unwrap();
    assert_success(&out, &["build big"]);
    ctx.join("big.tar")
}

fn stdout(env: &TestEnv, args: &[&str]) -> String {
    let out = env.run(args);
    assert_success(&out, args);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

crate::it_test!(sizes_are_what_the_layers_hold);
fn sizes_are_what_the_layers_hold() {
    let env = TestEnv::new();
    let archive = big(&env);
    let layers = crate::util::archive_layers(&archive);
    let content: usize = layers.iter().map(Vec::len).sum();
    let size = stdout(&env, &["inspect", "-f", "{{.Size}}", "big:1"]);
    assert_eq!(size.trim(), content.to_string());
    let mb = |n: usize| {
        let s = format!("{:.3}", n as f64 / 1e6);
        format!("{}MB", s.trim_end_matches('0').trim_end_matches('.'))
    };
    let (human, copy_layer) = (mb(content), mb(layers[0].len()));
    assert!(layers[0].len() > 1_000_000);
    let history = stdout(&env, &["history", "big:1"]);
    let copy = history
        .lines()
        .find(|l| l.contains("COPY zeros /zeros"))
        .unwrap_or_else(|| panic!("{history}"));
    assert!(
        copy.contains(&copy_layer),
        "history shows {copy:?}, want {copy_layer}"
    );
    let images = stdout(
        &env,
        &["images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}"],
    );
    assert_eq!(images, format!("big:1 {human}\n"));
}

crate::it_test!(images_and_inspect_take_docker_formats);
fn images_and_inspect_take_docker_formats() {
    let env = TestEnv::new();
    big(&env);
    let id = stdout(&env, &["inspect", "-f", "{{.Id}}", "big:1"]);
    let id = id.trim().trim_start_matches("sha256:").to_string();
    assert_eq!(id.len(), 64);

    let json = stdout(&env, &["images", "--format", "json"]);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["Repository"], "big");
    assert_eq!(rows[0]["Tag"], "1");
    assert_eq!(rows[0]["ID"], id[..12]);
    assert_eq!(rows[0]["CreatedAt"], "2023-11-14 22:13:20 +0000 UTC");
    assert!(rows[0]["CreatedSince"].as_str().unwrap().ends_with(" ago"));
    let line = stdout(
        &env,
        &[
            "images",
            "--format",
            "{{.ID}}\t{{.CreatedAt}}\t{{.CreatedSince | json}}",
        ],
    );
    assert!(
        line.starts_with(&format!("{}\t2023-11-14 22:13:20 +0000 UTC\t\"", &id[..12])),
        "{line}"
    );

    let t = "{{.Id}}|{{.RepoTags}}|{{.Created}}|{{.Os}}/{{.Architecture}}|{{.Config.Env}}|\
             {{.Config.Cmd}}|{{.Config.Entrypoint}}|{{.Config.WorkingDir}}|{{.Config.User}}|\
             {{.Config.Labels}}|{{index .Config.Labels \"a.b\"}}|{{len1}}";
    let out = env.run(&["inspect", "-f", t, "big:1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown function is a usage error"
    );
    let t = t.trim_end_matches("|{{len1}}");
    let got = stdout(&env, &["inspect", "-f", t, "big:1"]);
    assert_eq!(
        got,
        format!(
            "sha256:{id}|[big:1]|2023-11-14T22:13:20Z|linux/amd64|[A=1 B=two]|[--help]|[/bin/x]|/w|7:7|map[a.b:dotted]|dotted\n"
        )
    );
    let layers = stdout(
        &env,
        &["inspect", "--format", "{{json .RootFS.Layers}}", "big:1"],
    );
    let layers: Vec<String> = serde_json::from_str(&layers).unwrap();
    assert_eq!(
        layers.len(),
        2,
        "the COPY and WORKDIR's directory: {layers:?}"
    );
    assert!(layers.iter().all(|l| l.starts_with("sha256:")));
    // Several images: one line each; json is the default output.
    let two = stdout(&env, &["inspect", "-f", "{{.Os}}", "big:1", &id]);
    assert_eq!(two, "linux\nlinux\n");
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&env, &["inspect", "--format", "json", "big:1"])).unwrap();
    assert_eq!(v[0]["RootFS"]["Type"], "layers");

    // What an image leaves out is docker's zero value, not `<no value>`;
    // `\t` is a tab; `table` puts a header first.
    env.write("plain/Dockerfile", "FROM scratch\nCOPY Dockerfile /\n");
    let out = env.run_in(
        &env.path().join("plain"),
        &["build", "-q", "-t", "plain:1", "."],
    );
    assert_success(&out, &["build plain"]);
    let got = stdout(
        &env,
        &[
            "inspect",
            "-f",
            r#"[{{.Config.User}}][{{.Config.Env}}][{{index .Config.Labels "k"}}]"#,
            "plain:1",
        ],
    );
    assert_eq!(got, "[][[]][]\n");
    let table = stdout(
        &env,
        &["images", "--format", r"table {{.Repository}}\t{{.Tag}}"],
    );
    assert_eq!(table, "REPOSITORY\tTAG\nplain\t1\nbig\t1\n");
}

crate::it_test!(the_terminal_view_says_why_a_step_missed);
fn the_terminal_view_says_why_a_step_missed() {
    let env = TestEnv::new();
    env.write("ctx/a.txt", "a\n");
    env.write("ctx/Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n");
    let ctx = env.path().join("ctx");
    // `script` gives the build a terminal: the live view, not plain output.
    let run = || {
        let inner = format!(
            "cd {} && IMGBUILD_STORE={} {} build -t t:1 .",
            ctx.display(),
            env.store().display(),
            env!("CARGO_BIN_EXE_imgbuild"),
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &inner, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("script (util-linux)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run();
    assert!(first.contains("cache miss: not built before"), "{first}");
    std::fs::write(ctx.join("a.txt"), "changed\n").unwrap();
    let second = run();
    assert!(second.contains("cache miss: /a.txt changed"), "{second}");
    assert!(
        !second.contains(" ---> "),
        "plain output on a terminal:\n{second}"
    );
}

crate::it_test!(build_help_shows_examples);
fn build_help_shows_examples() {
    let env = TestEnv::new();
    let help = stdout(&env, &["build", "--help"]);
    for want in [
        "Examples:",
        "imgbuild build -t app:1 .",
        "imgbuild build -t app:1 -o app.tar .",
        "imgbuild build specs/app.toml",
        "imgbuild build --dry-run -o app.tar .",
    ] {
        assert!(help.contains(want), "no `{want}` in:\n{help}");
    }
}
