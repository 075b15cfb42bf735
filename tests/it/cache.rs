//! The build cache, as the seed story tells it: rebuilds reuse every step
//! whose inputs did not change, by content, and say why the others ran.

use crate::util::{TestEnv, archive_layers, assert_success, layer_listing, stderr};

const DOCKERFILE: &str =
    "FROM scratch\nCOPY foo.txt /foo.txt\nCOPY bar.txt /bar.txt\nLABEL demo=1\n";

/// (step number, "cache"/"miss", image id) for every step of a plain log.
fn steps(log: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("Step ") {
            let n = rest.split('/').next().unwrap().parse().unwrap();
            cur = Some((n, "miss".into()));
        } else if line == " ---> Using cache" {
            if let Some(c) = cur.as_mut() {
                c.1 = "cache".into();
            }
        } else if let Some(id) = line.strip_prefix(" ---> ").filter(|s| s.len() == 12) {
            let (n, how) = cur.take().unwrap();
            out.push((n, how, id.to_string()));
        }
    }
    out
}

/// `build --dry-run` with the same epoch as [`build`]: (exit code, stdout).
fn dry_run(env: &TestEnv) -> (Option<i32>, String) {
    let mut c = env.cmd_in(
        &env.path().join("ctx"),
        &["build", "--dry-run", "-t", "demo:latest", "."],
    );
    c.env("SOURCE_DATE_EPOCH", "1700000000");
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn build(env: &TestEnv, args: &[&str]) -> String {
    let mut all = vec!["build", "--progress=plain", "-t", "demo:latest"];
    all.extend_from_slice(args);
    all.push(".");
    let mut c = env.cmd_in(&env.path().join("ctx"), &all);
    c.env("SOURCE_DATE_EPOCH", "1700000000");
    let out = c.output().unwrap();
    assert_success(&out, &all);
    stderr(&out)
}

crate::it_test!(issue_4_the_seed_cache_story);
fn issue_4_the_seed_cache_story() {
    let env = TestEnv::new();
    env.write("ctx/foo.txt", "Hello World\n");
    env.write("ctx/bar.txt", "bar\n");
    env.write("ctx/Dockerfile", DOCKERFILE);
    let ctx = env.path().join("ctx");

    let first = steps(&build(&env, &["-o", "demo.oci.tar", "--depfile", "demo.d"]));
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(first.iter().all(|s| s.1 == "miss"));

    // Unchanged: every step from the cache, the same image.
    let again = steps(&build(&env, &[]));
    assert!(again.iter().all(|s| s.1 == "cache"), "{again:?}");
    assert_eq!(
        again,
        first
            .iter()
            .map(|s| (s.0, "cache".to_string(), s.2.clone()))
            .collect::<Vec<_>>()
    );

    // Touched without changing content: still nothing to do.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for f in ["foo.txt", "bar.txt"] {
        std::fs::File::options()
            .write(true)
            .open(ctx.join(f))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let touched = steps(&build(&env, &[]));
    assert!(touched.iter().all(|s| s.1 == "cache"), "{touched:?}");
    assert_eq!(touched.last().unwrap().2, first.last().unwrap().2);

    // --dry-run: up to date now.
    let (code, plan) = dry_run(&env);
    assert_eq!(code, Some(0), "{plan}");

    // bar.txt changes: step 2 keeps its image, steps 3 and 4 rebuild, and say why.
    std::fs::write(ctx.join("bar.txt"), "bar, changed\n").unwrap();
    let (code, plan) = dry_run(&env);
    assert_eq!(code, Some(1), "{plan}");
    assert!(
        plan.contains("COPY bar.txt /bar.txt (/bar.txt changed)"),
        "{plan}"
    );
    let log = build(&env, &[]);
    let changed = steps(&log);
    assert_eq!(changed[0], (2, "cache".into(), first[0].2.clone()));
    assert_eq!((changed[1].0, changed[1].1.as_str()), (3, "miss"));
    assert_ne!(changed[1].2, first[1].2);
    assert_eq!((changed[2].0, changed[2].1.as_str()), (4, "miss"));
    assert!(log.contains("Cache miss: /bar.txt changed"), "{log}");
    assert!(
        log.contains("Cache miss: the step before it was rebuilt"),
        "{log}"
    );

    // history: the layers with CREATED BY and SIZE.
    let history = env.ok(&["history", "demo:latest"]);
    let lines: Vec<&str> = history.lines().collect();
    assert!(
        lines[0].starts_with("IMAGE")
            && lines[0].contains("CREATED BY")
            && lines[0].contains("SIZE")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("COPY bar.txt /bar.txt") && l.contains("B ")),
        "{history}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("COPY foo.txt /foo.txt") && l.starts_with(&first[0].2)),
        "{history}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("LABEL demo=1") && l.contains(" 0B ")),
        "{history}"
    );

    // export of the step-2 image: foo.txt, no bar.txt.
    let step2 = env.path().join("step2.tar");
    env.ok(&["export", &first[0].2, "-o", step2.to_str().unwrap()]);
    let names: Vec<String> = archive_layers(&step2)
        .iter()
        .flat_map(|l| layer_listing(l))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(names, ["foo.txt"]);

    // The depfile names both files (and the Dockerfile).
    let dep = std::fs::read_to_string(ctx.join("demo.d")).unwrap();
    for f in ["foo.txt", "bar.txt", "Dockerfile"] {
        assert!(
            dep.contains(&format!("{f} \\")) || dep.contains(&format!("/{f}\n")),
            "{f} not in:\n{dep}"
        );
    }
    assert!(dep.starts_with("demo.oci.tar:"), "{dep}");
}

crate::it_test!(no_cache_rebuilds_and_j1_equals_jn);
fn no_cache_rebuilds_and_j1_equals_jn() {
    let env = TestEnv::new();
    for i in 0..3 {
        env.write(
            &format!("ctx/p{i}/f.txt"),
            format!("part {i}\n").repeat(10_000),
        );
    }
    env.write(
        "ctx/Dockerfile",
        "FROM scratch AS s0\nCOPY p0/ /p0/\nFROM scratch AS s1\nCOPY p1/ /p1/\nFROM scratch AS s2\nCOPY p2/ /p2/\n\
         FROM scratch\nCOPY --from=s0 /p0/ /ctx/p0/\nCOPY --from=s1 /p1/ /ctx/p1/\nCOPY --from=s2 /p2/ /ctx/p2/\n",
    );
    let ctx = env.path().join("ctx");
    let run = |args: &[&str]| {
        let mut c = env.cmd_in(&ctx, args);
        c.env("SOURCE_DATE_EPOCH", "0");
        let out = c.output().unwrap();
        assert_success(&out, args);
        stderr(&out)
    };
    run(&["build", "-j", "1", "-o", "one.tar", "."]);
    let log = run(&["build", "--no-cache", "-j", "4", "-o", "four.tar", "."]);
    assert!(!log.contains("Using cache"), "{log}");
    assert!(log.contains("[s0]"), "parallel stages are prefixed:\n{log}");
    assert_eq!(
        std::fs::read(ctx.join("one.tar")).unwrap(),
        std::fs::read(ctx.join("four.tar")).unwrap()
    );
}

crate::it_test!(issue_13_copy_from_a_stage_rebuilt_to_the_same_files_hits_by_content);
/// `COPY --from` has a content key (BuildKit's `ComputeDigestFunc`): a
/// stage rebuilt to the same filesystem (here only its config changed)
/// leaves the copy, and every step after it, in the cache; a change of the
/// files it copies does not.
fn issue_13_copy_from_a_stage_rebuilt_to_the_same_files_hits_by_content() {
    let env = TestEnv::new();
    env.write("ctx/f.txt", "from a stage\n");
    env.write("ctx/h.txt", "here\n");
    let dockerfile = |label: &str| {
        format!(
            "FROM scratch AS a\nCOPY f.txt /f.txt\nLABEL v={label}\n\
             FROM scratch\nCOPY --from=a /f.txt /g.txt\nCOPY h.txt /h.txt\n"
        )
    };
    env.write("ctx/Dockerfile", dockerfile("1"));
    let first = steps(&build(&env, &[]));
    assert_eq!(first.len(), 4, "{first:?}");
    assert!(first.iter().all(|s| s.1 == "miss"), "{first:?}");

    env.write("ctx/Dockerfile", dockerfile("2"));
    let second = steps(&build(&env, &[]));
    let how: Vec<(usize, &str)> = second.iter().map(|s| (s.0, s.1.as_str())).collect();
    assert_eq!(
        how,
        [(2, "cache"), (3, "miss"), (5, "cache"), (6, "cache")],
        "{second:?}"
    );
    assert_eq!(second[3].2, first[3].2, "the same final image");

    // Now found by its definition key too: all cached.
    let third = steps(&build(&env, &[]));
    assert!(third.iter().all(|s| s.1 == "cache"), "{third:?}");

    // Other files in the stage: the copy runs again.
    env.write("ctx/f.txt", "changed\n");
    let fourth = steps(&build(&env, &[]));
    let how: Vec<(usize, &str)> = fourth.iter().map(|s| (s.0, s.1.as_str())).collect();
    assert_eq!(
        how,
        [(2, "miss"), (3, "miss"), (5, "miss"), (6, "miss")],
        "{fourth:?}"
    );
}
