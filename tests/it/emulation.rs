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
