//! Foreign platforms: `imgbuild platforms` over a fabricated binfmt_misc
//! directory (`IMGBUILD_BINFMT_MISC`), and RUN through QEMU user-mode
//! emulation in the sandbox, on a real arm64 userland (Debian's
//! `busybox-static:arm64`).
//!
//! [`arm64_busybox_rootfs`] is the arm64 base's root for every
//! multi-platform test: `.ci/run` adds the arm64 architecture and registers
//! `qemu-aarch64`; elsewhere a test that needs it is skipped with
//! [`arm64_unavailable`]'s reason.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use imgbuild::exec::binfmt;
use imgbuild::platform::{Platform, host};

use crate::util::{TestEnv, archive_layers, assert_success};

/// Entries as the kernel prints them (Debian 12, qemu-user-static), one
/// with the fix-binary flag, one without, one disabled.
const AARCH64_F: &str = "enabled\n\
    interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
    flags: PF\n\
    offset 0\n\
    magic 7f454c460201010000000000000000000200b700\n\
    mask ffffffffffffff00fffffffffffffffffeffffff\n";
const ARM_NO_F: &str = "enabled\n\
    interpreter /usr/bin/qemu-arm\n\
    flags: P\n\
    offset 0\n\
    magic 7f454c4601010100000000000000000002002800\n\
    mask ffffffffffffff00fffffffffffffffffeffffff\n";
const RISCV64_DISABLED: &str = "disabled\n\
    interpreter /usr/libexec/qemu-binfmt/riscv64-binfmt-P\n\
    flags: PF\n\
    offset 0\n\
    magic 7f454c460201010000000000000000000200f300\n\
    mask ffffffffffffff00fffffffffffffffffeffffff\n";

/// The listing's first line is the host: the expected text is written for
/// the amd64 machines CI runs on.
fn amd64_host() -> Option<String> {
    (host().arch != "amd64")
        .then(|| format!("the expected listing is an amd64 host's, not {}", host()))
}

fn platforms(env: &TestEnv, binfmt_misc: &Path, args: &[&str]) -> String {
    let mut c = env.cmd_in(env.path(), &[&["platforms"], args].concat());
    c.env("IMGBUILD_BINFMT_MISC", binfmt_misc);
    let out = c.output().unwrap();
    assert_success(&out, &["platforms"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

crate::it_test!(platforms_lists_what_binfmt_misc_can_run, needs = amd64_host);
fn platforms_lists_what_binfmt_misc_can_run() {
    let env = TestEnv::new();
    let dir = env.path().join("binfmt_misc");
    env.write("binfmt_misc/status", "enabled\n");
    env.write("binfmt_misc/register", "");
    env.write("binfmt_misc/qemu-aarch64", AARCH64_F);
    env.write("binfmt_misc/qemu-arm", ARM_NO_F);
    env.write("binfmt_misc/qemu-riscv64", RISCV64_DISABLED);
    assert_eq!(
        platforms(&env, &dir, &[]),
        "\
linux/amd64     native
linux/arm64     emulated (qemu-aarch64, /usr/libexec/qemu-binfmt/aarch64-binfmt-P)
linux/arm/v7    unavailable: qemu-arm lacks the fix-binary (F) flag
linux/arm/v6    unavailable: qemu-arm lacks the fix-binary (F) flag
linux/386       native
linux/ppc64le   unavailable: no binfmt_misc handler for ppc64le
linux/ppc64     unavailable: no binfmt_misc handler for ppc64
linux/s390x     unavailable: no binfmt_misc handler for s390x
linux/riscv64   unavailable: qemu-riscv64 is disabled
linux/mips64le  unavailable: no binfmt_misc handler for mips64el
linux/mips64    unavailable: no binfmt_misc handler for mips64
linux/mipsle    unavailable: no binfmt_misc handler for mipsel
linux/mips      unavailable: no binfmt_misc handler for mips
linux/loong64   unavailable: no binfmt_misc handler for loongarch64
"
    );
    // JSON: one object a line, the whole message (what to do) included.
    let json = platforms(&env, &dir, &["--format", "json"]);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 14);
    assert_eq!(rows[1]["status"], "emulated");
    assert_eq!(rows[1]["handler"], "qemu-aarch64");
    let arm = rows[2]["message"].as_str().unwrap();
    assert!(arm.contains("re-register it with the F flag"), "{arm}");
    let riscv = rows[8]["message"].as_str().unwrap();
    assert!(
        riscv.contains("`update-binfmts --enable qemu-riscv64`"),
        "{riscv}"
    );
    let ppc = rows[5]["message"].as_str().unwrap();
    assert!(
        ppc.contains("`apt-get install qemu-user-static binfmt-support`"),
        "{ppc}"
    );
    // Not mounted (no status file): only the native platforms run.
    let empty = env.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let text = platforms(&env, &empty, &[]);
    assert!(text.starts_with("linux/amd64     native\n"), "{text}");
    assert!(
        text.contains("linux/arm64     unavailable: binfmt_misc is not mounted\n"),
        "{text}"
    );
}

/// Why this machine cannot run arm64 binaries in a RUN step, or fetch
/// Debian's arm64 busybox; `None` when it can (the .deb then sits in the
/// cache). Decided once per test binary; the download happens once per
/// target directory.
pub fn arm64_unavailable() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| {
            let arm64 = Platform::parse("linux/arm64").unwrap();
            if let Err(e) = binfmt::check(&arm64, &host(), Path::new(binfmt::DEFAULT_DIR)) {
                return Some(e.to_string());
            }
            arm64_busybox().err()
        })
        .clone()
}

/// `target/test-cache`, beside the binaries (any `CARGO_TARGET_DIR`).
fn test_cache() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_imgbuild"));
    bin.ancestors().nth(2).unwrap().join("test-cache")
}

/// Debian's arm64 `busybox` binary, downloaded (`apt-get download
/// busybox-static:arm64`) and extracted (`dpkg-deb -x`) into the test cache
/// the first time.
fn arm64_busybox() -> Result<PathBuf, String> {
    static BUSYBOX: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUSYBOX
        .get_or_init(|| {
            let cache = test_cache().join("busybox-static-arm64");
            let busybox = cache.join("bin/busybox");
            if busybox.is_file() {
                return Ok(busybox);
            }
            std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
            let run = |program: &str, args: &[&str]| -> Result<(), String> {
                let out = std::process::Command::new(program)
                    .args(args)
                    .current_dir(&cache)
                    .output()
                    .map_err(|e| format!("cannot run {program}: {e}"))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "`{program} {}` failed (see .ci/run: `dpkg --add-architecture arm64 && \
                         apt-get update`): {}",
                        args.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                }
            };
            run(
                "apt-get",
                &[
                    "download",
                    "-o",
                    "Acquire::Retries=0",
                    "-o",
                    "Acquire::http::Timeout=30",
                    "busybox-static:arm64",
                ],
            )?;
            let deb = std::fs::read_dir(&cache)
                .map_err(|e| e.to_string())?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with("busybox-static_") && n.ends_with("_arm64.deb")
                    })
                })
                .ok_or("apt-get download left no busybox-static_*_arm64.deb")?;
            // Extracted beside, then renamed: a half-extracted tree is never used.
            let tmp = cache.join("extract.tmp");
            let _ = std::fs::remove_dir_all(&tmp);
            run("dpkg-deb", &["-x", deb.to_str().unwrap(), "extract.tmp"])?;
            std::fs::create_dir_all(cache.join("bin")).map_err(|e| e.to_string())?;
            std::fs::rename(tmp.join("bin/busybox"), &busybox).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(busybox)
        })
        .clone()
}

/// An arm64 root filesystem at `dest`: Debian's static arm64 busybox as
/// `/bin/busybox` and its applets `sh`, `uname`, `cat`, `echo`, `ls` as
/// links; `COPY rootfs/ /` onto `FROM scratch` makes the arm64 base. Tests
/// that call it register with `needs = arm64_unavailable`.
pub fn arm64_busybox_rootfs(dest: &Path) -> PathBuf {
    let busybox = arm64_busybox().unwrap_or_else(|e| panic!("{e}"));
    let bin = dest.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(&busybox, bin.join("busybox")).unwrap();
    for applet in ["sh", "uname", "cat", "echo", "ls"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    dest.to_path_buf()
}

crate::it_test!(
    run_executes_arm64_binaries_through_qemu,
    needs = arm64_unavailable
);
/// The sandbox pivots into the image's root, where qemu's interpreter path
/// does not exist: only the fix-binary flag (the kernel opened the
/// interpreter at registration) lets the arm64 shell start.
fn run_executes_arm64_binaries_through_qemu() {
    let env = TestEnv::new();
    arm64_busybox_rootfs(&env.path().join("ctx/rootfs"));
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nCOPY rootfs/ /\nRUN uname -m > /arch\n",
    );
    let ctx = env.path().join("ctx");
    let args = ["build", "--progress=plain", "-o", "out.tar", "."];
    let out = env.run_in(&ctx, &args);
    assert_success(&out, &args);
    let layers = archive_layers(&ctx.join("out.tar"));
    let run = layers.last().unwrap();
    let mut a = tar::Archive::new(&run[..]);
    let arch = a
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap().as_os_str() == "arch")
        .map(|mut e| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            s
        })
        .unwrap_or_else(|| panic!("the RUN layer has no /arch"));
    assert_eq!(arch, "aarch64\n");
}

/// The file `name` in the last layer of `platform`'s image in an OCI
/// archive holding an index (taken out with skopeo, as a user would).
fn file_in_last_layer(env: &TestEnv, archive: &Path, arch: &str, name: &str) -> String {
    let one = env.path().join(format!("{arch}.tar"));
    crate::util::tool(
        "skopeo",
        &[
            "copy",
            "--override-arch",
            arch,
            &format!("oci-archive:{}", archive.display()),
            &format!("oci-archive:{}", one.display()),
        ],
    );
    let layers = archive_layers(&one);
    let mut a = tar::Archive::new(&layers.last().unwrap()[..]);
    a.entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap().as_os_str() == name)
        .map(|mut e| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            s
        })
        .unwrap_or_else(|| panic!("{arch}: the last layer has no /{name}"))
}

/// A context whose bases are the host's busybox and Debian's arm64 one,
/// chosen by `$TARGETARCH` (BuildKit's idiom for per-platform bases).
fn two_arch_context(env: &TestEnv, dockerfile_tail: &str) -> PathBuf {
    let ctx = env.path().join("ctx");
    arm64_busybox_rootfs(&ctx.join("arm64"));
    let amd64 = ctx.join("amd64/bin");
    std::fs::create_dir_all(&amd64).unwrap();
    std::fs::copy("/bin/busybox", amd64.join("busybox")).unwrap();
    for applet in ["sh", "uname", "cat", "echo", "ls"] {
        std::os::unix::fs::symlink("busybox", amd64.join(applet)).unwrap();
    }
    env.write(
        "ctx/Dockerfile",
        format!(
            "FROM scratch AS base-amd64\nCOPY amd64/ /\n\
             FROM scratch AS base-arm64\nCOPY arm64/ /\n\
             {dockerfile_tail}"
        ),
    );
    ctx
}

/// `build --platform linux/amd64,linux/arm64 -o out.tar .` in `ctx`, with
/// SOURCE_DATE_EPOCH; asserts success and returns the progress log.
fn build_both(env: &TestEnv, ctx: &Path) -> String {
    let args = [
        "build",
        "--progress=plain",
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        "out.tar",
        ".",
    ];
    let mut c = env.cmd_in(ctx, &args);
    c.env("SOURCE_DATE_EPOCH", "1700000000");
    let out = c.output().unwrap();
    assert_success(&out, &args);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn amd64_with_arm64() -> Option<String> {
    amd64_host().or_else(arm64_unavailable)
}

crate::it_test!(
    run_gives_each_platform_its_own_architecture,
    needs = amd64_with_arm64
);
fn run_gives_each_platform_its_own_architecture() {
    let env = TestEnv::new();
    let ctx = two_arch_context(&env, "FROM base-$TARGETARCH\nRUN uname -m > /arch\n");
    build_both(&env, &ctx);
    let archive = ctx.join("out.tar");
    assert_eq!(
        file_in_last_layer(&env, &archive, "arm64", "arch"),
        "aarch64\n"
    );
    assert_eq!(
        file_in_last_layer(&env, &archive, "amd64", "arch"),
        "x86_64\n"
    );
}

crate::it_test!(
    a_build_platform_stage_runs_once_for_every_target,
    needs = amd64_with_arm64
);
/// The cross-compilation pattern: the tool stage runs on the build
/// platform once; each target copies its output.
fn a_build_platform_stage_runs_once_for_every_target() {
    let env = TestEnv::new();
    let ctx = two_arch_context(
        &env,
        "FROM --platform=$BUILDPLATFORM base-amd64 AS build\n\
         ARG TARGETARCH\n\
         RUN echo \"built on $(uname -m) for $TARGETARCH\" > /out-$TARGETARCH\n\
         RUN echo common > /common\n\
         FROM base-$TARGETARCH\n\
         ARG TARGETARCH\n\
         COPY --from=build /out-$TARGETARCH /out\n\
         RUN uname -m > /arch\n",
    );
    let log = build_both(&env, &ctx);
    // TARGETARCH is used in the build stage, so it is built per target
    // (BuildKit does the same), on the build platform.
    let archive = ctx.join("out.tar");
    assert_eq!(log.matches("echo common > /common\n").count(), 2, "{log}");
    for (arch, uname) in [("amd64", "x86_64\n"), ("arm64", "aarch64\n")] {
        assert_eq!(file_in_last_layer(&env, &archive, arch, "arch"), uname);
        let one = env.path().join(format!("{arch}.tar"));
        let layers = archive_layers(&one);
        let copied = &layers[layers.len() - 2];
        let mut a = tar::Archive::new(&copied[..]);
        let mut text = String::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().as_os_str() == "out" {
                std::io::Read::read_to_string(&mut e, &mut text).unwrap();
            }
        }
        assert_eq!(text, format!("built on x86_64 for {arch}\n"));
    }
}

crate::it_test!(
    a_stage_without_target_variables_is_built_once,
    needs = amd64_with_arm64
);
fn a_stage_without_target_variables_is_built_once() {
    let env = TestEnv::new();
    let ctx = two_arch_context(
        &env,
        "FROM --platform=$BUILDPLATFORM base-amd64 AS build\n\
         RUN echo tool > /tool\n\
         FROM base-$TARGETARCH\n\
         COPY --from=build /tool /tool\n",
    );
    let log = build_both(&env, &ctx);
    assert_eq!(log.matches("RUN echo tool > /tool").count(), 1, "{log}");
    // base-arm64 serves the arm64 target: used, though not by amd64.
    assert!(!log.contains("never used"), "{log}");
    // A stage made for one target shows it, as BuildKit does.
    assert!(log.contains("[linux/arm64 3] "), "{log}");
}

crate::it_test!(a_missing_emulator_stops_the_build_with_what_to_do);
fn a_missing_emulator_stops_the_build_with_what_to_do() {
    let env = TestEnv::new();
    // A binfmt_misc with nothing registered (the seam the CLI reads).
    env.write("binfmt_misc/status", "enabled\n");
    env.write("binfmt_misc/register", "");
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nCOPY Dockerfile /\nRUN true\n",
    );
    let foreign = if host().arch == "arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    let mut c = env.cmd_in(
        &env.path().join("ctx"),
        &["build", "--platform", foreign, "-o", "out.tar", "."],
    );
    c.env("IMGBUILD_BINFMT_MISC", env.path().join("binfmt_misc"));
    let out = c.output().unwrap();
    assert!(!out.status.success());
    let err = crate::util::stderr(&out);
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(
        err.contains(&format!("RUN for {foreign} cannot run")),
        "{err}"
    );
    assert!(err.contains("apt-get install"), "{err}");
    assert!(!env.path().join("ctx/out.tar").exists());
}

crate::it_test!(
    run_takes_the_platform_asked_of_a_multi_platform_tag,
    needs = amd64_with_arm64
);
/// Issue 14 item 5: `run --platform` runs that platform's image of a
/// multi-platform tag (arm64 through QEMU); without it, the host's.
fn run_takes_the_platform_asked_of_a_multi_platform_tag() {
    let env = TestEnv::new();
    let ctx = two_arch_context(&env, "FROM base-$TARGETARCH\nCMD [\"uname\", \"-m\"]\n");
    let args = [
        "build",
        "-q",
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        "mp:1",
        ".",
    ];
    let out = env.run_in(&ctx, &args);
    assert_success(&out, &args);
    let run = |args: &[&str]| {
        let all = [&["run", "--network", "none"], args].concat();
        let out = env.run(&all);
        assert_success(&out, &all);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run(&["--platform", "linux/arm64", "mp:1"]), "aarch64\n");
    assert_eq!(run(&["mp:1"]), "x86_64\n");
    assert_eq!(
        run(&["--platform", "linux/amd64", "mp:1", "uname", "-m"]),
        "x86_64\n"
    );
}

crate::it_test!(run_of_a_platform_without_an_emulator_says_what_to_do);
/// A foreign image and no emulator registered: the build's words and what
/// to install, before anything is extracted; a platform the image is not
/// for is a usage error.
fn run_of_a_platform_without_an_emulator_says_what_to_do() {
    let env = TestEnv::new();
    env.write("binfmt_misc/status", "enabled\n");
    env.write("binfmt_misc/register", "");
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nCOPY Dockerfile /\nCMD [\"/x\"]\n",
    );
    let foreign = if host().arch == "arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    let args = ["build", "-q", "--platform", foreign, "-t", "foreign:1", "."];
    let out = env.run_in(&env.path().join("ctx"), &args);
    assert_success(&out, &args);
    let run = |args: &[&str]| {
        let mut c = env.cmd_in(env.path(), &[&["run"], args].concat());
        c.env("IMGBUILD_BINFMT_MISC", env.path().join("binfmt_misc"));
        c.output().unwrap()
    };
    let out = run(&["foreign:1"]);
    assert_eq!(
        out.status.code(),
        Some(125),
        "{}",
        crate::util::stderr(&out)
    );
    let err = crate::util::stderr(&out);
    assert!(
        err.contains(&format!(
            "foreign:1: {foreign} cannot run on this machine ({})",
            host()
        )),
        "{err}"
    );
    assert!(err.contains("apt-get install"), "{err}");
    let out = run(&["--platform", "linux/s390x", "foreign:1"]);
    assert_eq!(out.status.code(), Some(2), "{}", crate::util::stderr(&out));
    assert!(
        crate::util::stderr(&out).contains(&format!(
            "foreign:1 has no image for linux/s390x in the store (it has: {foreign})"
        )),
        "{}",
        crate::util::stderr(&out)
    );
}

crate::it_test!(
    steps_before_arg_targetarch_run_once,
    needs = amd64_with_arm64
);
/// The cross-compilation pattern with its dependencies fetched before
/// `ARG TARGETARCH`: those steps run once, the rest once per target.
fn steps_before_arg_targetarch_run_once() {
    let env = TestEnv::new();
    let ctx = two_arch_context(
        &env,
        "FROM --platform=$BUILDPLATFORM base-amd64 AS build\n\
         RUN echo deps > /deps\n\
         ARG TARGETARCH\n\
         RUN echo \"for $TARGETARCH\" > /out\n\
         FROM base-$TARGETARCH\n\
         COPY --from=build /out /out\n",
    );
    let log = build_both(&env, &ctx);
    assert_eq!(log.matches("RUN echo deps > /deps\n").count(), 1, "{log}");
    assert_eq!(
        log.matches("echo \"for $TARGETARCH\" > /out\n").count(),
        2,
        "{log}"
    );
    let archive = ctx.join("out.tar");
    for arch in ["amd64", "arm64"] {
        assert_eq!(
            file_in_last_layer(&env, &archive, arch, "out"),
            format!("for {arch}\n")
        );
    }
}
