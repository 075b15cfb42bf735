//! Whether this kernel can execute binaries of a platform: natively, or
//! through a QEMU user-mode emulator registered in binfmt_misc with the
//! fix-binary flag. Reads a binfmt_misc directory it is given (the CLI
//! passes `/proc/sys/fs/binfmt_misc`, tests a fabricated one); registers,
//! mounts and runs nothing.
//!
//! A handler is recognized by its magic, not only its name: the ELF header
//! of a static executable of the architecture (class, byte order and
//! `e_machine`) must match the handler's `magic` under its `mask`, as the
//! kernel's own match does. So Debian's `qemu-user-static` (`qemu-aarch64`),
//! tonistiigi/binfmt's registration (the same names) and a handler
//! registered by hand under any name are all found.
//!
//! The fix-binary flag (`F`) is required: the sandbox pivots into the
//! image's root, where the interpreter's path does not exist; with `F` the
//! kernel opened the interpreter when it was registered (binfmt_misc's
//! documentation, `Documentation/admin-guide/binfmt-misc.rst`).

use std::path::{Path, PathBuf};

use crate::platform::Platform;

/// Where binfmt_misc is mounted on Linux.
pub const DEFAULT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// Platforms QEMU's user-mode emulators run (every architecture with a
/// [`Platform::qemu_arch`]), in the order `imgbuild platforms` lists them.
pub const EMULATED: &[&str] = &[
    "linux/amd64",
    "linux/arm64",
    "linux/arm/v7",
    "linux/arm/v6",
    "linux/386",
    "linux/ppc64le",
    "linux/ppc64",
    "linux/s390x",
    "linux/riscv64",
    "linux/mips64le",
    "linux/mips64",
    "linux/mipsle",
    "linux/mips",
    "linux/loong64",
];

/// How binaries of a platform run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// The CPU runs them.
    Native,
    /// A binfmt_misc handler with the fix-binary flag runs them.
    Emulated {
        /// The handler's name (`qemu-aarch64`).
        handler: String,
        /// Its interpreter (`/usr/libexec/qemu-binfmt/aarch64-binfmt-P`).
        interpreter: PathBuf,
    },
}

/// Why binaries of a platform cannot run here; each message says what to
/// do on Debian.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `status` file: binfmt_misc is not mounted.
    #[error(
        "cannot run {platform} binaries: binfmt_misc is not mounted at {}; mount binfmt_misc: \
         `mount -t binfmt_misc binfmt_misc {}`, then register the emulator: \
         `update-binfmts --enable qemu-{qemu}` (Debian's qemu-user-static and binfmt-support)",
        .dir.display(),
        .dir.display()
    )]
    NotMounted {
        /// The platform asked for (boxed: errors stay small).
        platform: Box<Platform>,
        /// Its QEMU name (`aarch64`).
        qemu: &'static str,
        /// The binfmt_misc directory.
        dir: PathBuf,
    },
    /// binfmt_misc is disabled as a whole (`status` says `disabled`).
    #[error(
        "cannot run {platform} binaries: binfmt_misc is disabled; enable it: \
         `echo 1 > {}/status`",
        .dir.display()
    )]
    AllDisabled {
        /// The platform asked for (boxed: errors stay small).
        platform: Box<Platform>,
        /// The binfmt_misc directory.
        dir: PathBuf,
    },
    /// No handler matches the architecture's executables.
    #[error(
        "cannot run {platform} binaries: no binfmt_misc handler for {qemu} is registered; \
         install the emulators: `apt-get install qemu-user-static binfmt-support` (registers \
         qemu-{qemu} with the fix-binary flag); without systemd run \
         `update-binfmts --enable qemu-{qemu}`"
    )]
    NoHandler {
        /// The platform asked for (boxed: errors stay small).
        platform: Box<Platform>,
        /// Its QEMU name (`aarch64`).
        qemu: &'static str,
    },
    /// The only matching handlers are disabled.
    #[error(
        "cannot run {platform} binaries: the binfmt_misc handler {handler} is disabled; \
         enable it: `update-binfmts --enable {handler}`"
    )]
    Disabled {
        /// The platform asked for (boxed: errors stay small).
        platform: Box<Platform>,
        /// The handler's name.
        handler: String,
    },
    /// The matching handler lacks the fix-binary flag, so its interpreter
    /// would be looked up inside the image.
    #[error(
        "cannot run {platform} binaries: the binfmt_misc handler {handler} has no fix-binary \
         (F) flag, so the kernel would look for its interpreter {} inside the image; \
         re-register it with the F flag: remove it (`echo -1 > {}/{handler}`), then \
         `apt-get install qemu-user-static binfmt-support` and \
         `update-binfmts --enable qemu-{qemu}` (Debian registers it with F)",
        .interpreter.display(),
        .dir.display()
    )]
    NoFixBinary {
        /// The platform asked for (boxed: errors stay small).
        platform: Box<Platform>,
        /// Its QEMU name (`aarch64`).
        qemu: &'static str,
        /// The handler's name.
        handler: String,
        /// Its interpreter.
        interpreter: PathBuf,
        /// The binfmt_misc directory.
        dir: PathBuf,
    },
    /// Not a Linux platform, or an architecture QEMU has no user-mode
    /// emulator for.
    #[error(
        "cannot run {platform} binaries: only Linux binaries of the host or of an architecture \
         QEMU emulates (qemu-user-static: {}) can run here",
        EMULATED.join(", ")
    )]
    Unknown {
        /// The platform asked for (boxed: errors stay small).
        platform: Box<Platform>,
    },
    /// The binfmt_misc directory or an entry could not be read.
    #[error("reading {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The reason in a few words, for a table (`imgbuild platforms`).
    pub fn short(&self) -> String {
        match self {
            Error::NotMounted { .. } => "binfmt_misc is not mounted".into(),
            Error::AllDisabled { .. } => "binfmt_misc is disabled".into(),
            Error::NoHandler { qemu, .. } => format!("no binfmt_misc handler for {qemu}"),
            Error::Disabled { handler, .. } => format!("{handler} is disabled"),
            Error::NoFixBinary { handler, .. } => {
                format!("{handler} lacks the fix-binary (F) flag")
            }
            Error::Unknown { .. } => "no emulator for this architecture".into(),
            Error::Read { path, source } => format!("reading {}: {source}", path.display()),
        }
    }
}

/// One binfmt_misc entry, as its file under the binfmt_misc directory
/// shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// The entry's name (its file name).
    pub name: String,
    /// First line `enabled` (else `disabled`).
    pub enabled: bool,
    /// `interpreter PATH`.
    pub interpreter: PathBuf,
    /// `flags: …` (`P`, `O`, `C`, `F`).
    pub flags: String,
    /// `offset N`: where the magic starts in the file.
    pub offset: usize,
    /// `magic HEX`; empty for an extension entry (`extension .jar`).
    pub magic: Vec<u8>,
    /// `mask HEX`; all ones when the entry has none.
    pub mask: Vec<u8>,
}

impl Handler {
    /// Parses the text of an entry file (what
    /// `cat /proc/sys/fs/binfmt_misc/qemu-aarch64` prints); `None` when it
    /// is not an entry (`status`, `register`) or is malformed.
    pub fn parse(name: &str, text: &str) -> Option<Handler> {
        let mut lines = text.lines();
        let enabled = match lines.next()?.trim() {
            "enabled" => true,
            "disabled" => false,
            _ => return None,
        };
        let mut h = Handler {
            name: name.to_string(),
            enabled,
            interpreter: PathBuf::new(),
            flags: String::new(),
            offset: 0,
            magic: Vec::new(),
            mask: Vec::new(),
        };
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "interpreter" => h.interpreter = PathBuf::from(value),
                // The kernel prints `flags: ` and then the letters.
                "flags:" => h.flags = value.trim().to_string(),
                "offset" => h.offset = value.trim().parse().ok()?,
                "magic" => h.magic = hex::decode(value.trim()).ok()?,
                "mask" => h.mask = hex::decode(value.trim()).ok()?,
                _ => {}
            }
        }
        if h.mask.is_empty() {
            h.mask = vec![0xff; h.magic.len()];
        }
        if h.mask.len() != h.magic.len() || h.interpreter.as_os_str().is_empty() {
            return None;
        }
        Some(h)
    }

    /// Whether the kernel gives it files that start with `header` (the
    /// masked magic equals the masked bytes at the offset). Bytes past
    /// `header` are unknown: they match only where the mask ignores them.
    pub fn matches(&self, header: &[u8]) -> bool {
        !self.magic.is_empty()
            && self
                .magic
                .iter()
                .zip(&self.mask)
                .enumerate()
                .all(|(i, (m, k))| match header.get(self.offset + i) {
                    Some(b) => b & k == m & k,
                    None => *k == 0,
                })
    }

    /// Whether it has the fix-binary flag.
    pub fn fix_binary(&self) -> bool {
        self.flags.contains('F')
    }
}

/// The ELF identity of a QEMU architecture: class (1: 32-bit, 2: 64-bit),
/// byte order (1: little, 2: big) and `e_machine`.
fn elf_identity(qemu: &str) -> Option<(u8, u8, u16)> {
    Some(match qemu {
        "x86_64" => (2, 1, 0x3e),
        "aarch64" => (2, 1, 0xb7),
        "arm" => (1, 1, 0x28),
        "i386" => (1, 1, 0x03),
        "ppc64le" => (2, 1, 0x15),
        "ppc64" => (2, 2, 0x15),
        "s390x" => (2, 2, 0x16),
        "riscv64" => (2, 1, 0xf3),
        "mips64el" => (2, 1, 0x08),
        "mips64" => (2, 2, 0x08),
        "mipsel" => (1, 1, 0x08),
        "mips" => (1, 2, 0x08),
        "loongarch64" => (2, 1, 0x102),
        _ => return None,
    })
}

/// The ELF header (64 bytes, the 64-bit size) of a plain executable of the
/// architecture with `e_type` `ty` (2: `ET_EXEC`, 3: `ET_DYN`, a static
/// PIE): the identity, type, machine and `e_version` 1, every other field
/// zero. Zero flags matter for MIPS: Debian's `qemu-mipsel` requires the
/// n32 bit of `e_flags` clear and `qemu-mipsn32el` set.
fn elf_header(class: u8, data: u8, machine: u16, ty: u16) -> [u8; 64] {
    let mut h = [0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = data;
    h[6] = 1; // EV_CURRENT
    let (t, m) = if data == 2 {
        (ty.to_be_bytes(), machine.to_be_bytes())
    } else {
        (ty.to_le_bytes(), machine.to_le_bytes())
    };
    h[16..18].copy_from_slice(&t);
    h[18..20].copy_from_slice(&m);
    h[20..24].copy_from_slice(&if data == 2 {
        1u32.to_be_bytes()
    } else {
        1u32.to_le_bytes()
    });
    h
}

/// A snapshot of a binfmt_misc directory.
#[derive(Debug, Clone)]
pub struct Binfmt {
    dir: PathBuf,
    /// `None`: not mounted (no `status` file); else whether it is enabled.
    status: Option<bool>,
    handlers: Vec<Handler>,
}

impl Binfmt {
    /// Reads the binfmt_misc directory `dir` (its `status` and every entry,
    /// sorted by name). A directory without `status` is binfmt_misc not
    /// mounted, which is not an error here: [`Binfmt::support`] reports it
    /// for the platforms that need it.
    ///
    /// # Errors
    /// A `status` or entry that exists but cannot be read.
    pub fn read(dir: &Path) -> Result<Binfmt, Error> {
        let read_err = |path: &Path, source| Error::Read {
            path: path.to_path_buf(),
            source,
        };
        let status_path = dir.join("status");
        let status = match fs_err::read_to_string(&status_path) {
            Ok(s) => Some(s.trim() == "enabled"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(read_err(&status_path, e)),
        };
        let mut handlers = Vec::new();
        if status.is_some() {
            let entries = fs_err::read_dir(dir).map_err(|e| read_err(dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| read_err(dir, e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if name == "status" || name == "register" {
                    continue;
                }
                let path = entry.path();
                let text = match fs_err::read_to_string(&path) {
                    Ok(t) => t,
                    // Unregistered since the listing.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(read_err(&path, e)),
                };
                handlers.extend(Handler::parse(&name, &text));
            }
        }
        handlers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Binfmt {
            dir: dir.to_path_buf(),
            status,
            handlers,
        })
    }

    /// The entries read, sorted by name.
    pub fn handlers(&self) -> &[Handler] {
        &self.handlers
    }

    /// How binaries of `platform` run on a `host` (normally
    /// [`crate::platform::host`]) with these handlers.
    ///
    /// Native: the same architecture, or `386` on `amd64`. Otherwise the
    /// handlers whose magic matches the architecture's executables decide,
    /// the one named `qemu-ARCH` first: an enabled one with the fix-binary
    /// flag is the emulator.
    ///
    /// # Errors
    /// Why it cannot run them, with what to do about it.
    pub fn support(&self, platform: &Platform, host: &Platform) -> Result<Support, Error> {
        if is_native(platform, host) {
            return Ok(Support::Native);
        }
        let unknown = || Error::Unknown {
            platform: Box::new(platform.clone()),
        };
        if platform.os != "linux" {
            return Err(unknown());
        }
        let qemu = platform.qemu_arch().ok_or_else(unknown)?;
        let Some(enabled) = self.status else {
            return Err(Error::NotMounted {
                platform: Box::new(platform.clone()),
                qemu,
                dir: self.dir.clone(),
            });
        };
        if !enabled {
            return Err(Error::AllDisabled {
                platform: Box::new(platform.clone()),
                dir: self.dir.clone(),
            });
        }
        let conventional = format!("qemu-{qemu}");
        let mut matching: Vec<&Handler> = match elf_identity(qemu) {
            Some((class, data, machine)) => {
                let exec = elf_header(class, data, machine, 2);
                let pie = elf_header(class, data, machine, 3);
                self.handlers
                    .iter()
                    .filter(|h| h.matches(&exec) || h.matches(&pie))
                    .collect()
            }
            None => self
                .handlers
                .iter()
                .filter(|h| h.name == conventional)
                .collect(),
        };
        // Stable: the conventional name first, then by name.
        matching.sort_by_key(|h| h.name != conventional);
        if let Some(h) = matching.iter().find(|h| h.enabled && h.fix_binary()) {
            return Ok(Support::Emulated {
                handler: h.name.clone(),
                interpreter: h.interpreter.clone(),
            });
        }
        if let Some(h) = matching.iter().find(|h| h.enabled) {
            return Err(Error::NoFixBinary {
                platform: Box::new(platform.clone()),
                qemu,
                handler: h.name.clone(),
                interpreter: h.interpreter.clone(),
                dir: self.dir.clone(),
            });
        }
        if let Some(h) = matching.first() {
            return Err(Error::Disabled {
                platform: Box::new(platform.clone()),
                handler: h.name.clone(),
            });
        }
        Err(Error::NoHandler {
            platform: Box::new(platform.clone()),
            qemu,
        })
    }
}

/// Whether `host`'s CPU runs `platform`'s binaries itself: the same OS and
/// architecture, or 32-bit x86 on amd64. 32-bit arm on arm64 is not
/// assumed: many arm64 CPUs (and kernels) lack AArch32.
pub fn is_native(platform: &Platform, host: &Platform) -> bool {
    platform.os == host.os
        && (platform.arch == host.arch || (platform.arch == "386" && host.arch == "amd64"))
}

/// How binaries of `platform` run on `host` with the binfmt_misc
/// directory `dir` ([`DEFAULT_DIR`]); a native platform needs no
/// binfmt_misc at all.
///
/// # Errors
/// Why they cannot run (see [`Binfmt::support`]), or a binfmt_misc file
/// that cannot be read.
pub fn check(platform: &Platform, host: &Platform, dir: &Path) -> Result<Support, Error> {
    if is_native(platform, host) {
        return Ok(Support::Native);
    }
    Binfmt::read(dir)?.support(platform, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `cat /proc/sys/fs/binfmt_misc/qemu-aarch64` prints on Debian 12
    /// after `apt-get install qemu-user-static binfmt-support`.
    const DEBIAN_AARCH64: &str = "enabled\n\
        interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        flags: PF\n\
        offset 0\n\
        magic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";
    const DEBIAN_ARM: &str = "enabled\n\
        interpreter /usr/libexec/qemu-binfmt/arm-binfmt-P\n\
        flags: PF\n\
        offset 0\n\
        magic 7f454c4601010100000000000000000002002800\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";
    const DEBIAN_S390X: &str = "enabled\n\
        interpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P\n\
        flags: PF\n\
        offset 0\n\
        magic 7f454c4602020100000000000000000000020016\n\
        mask fffffffffffffffcfffffffffffffffffffeffff\n";
    const DEBIAN_PPC64LE: &str = "enabled\n\
        interpreter /usr/libexec/qemu-binfmt/ppc64le-binfmt-P\n\
        flags: PF\n\
        offset 0\n\
        magic 7f454c4602010100000000000000000002001500\n\
        mask fffffffffffffffcfffffffffffffffffeffff00\n";
    const DEBIAN_RISCV64: &str = "enabled\n\
        interpreter /usr/libexec/qemu-binfmt/riscv64-binfmt-P\n\
        flags: PF\n\
        offset 0\n\
        magic 7f454c460201010000000000000000000200f300\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";
    const DEBIAN_MIPS64EL: &str = "enabled\n\
        interpreter /usr/libexec/qemu-binfmt/mips64el-binfmt-P\n\
        flags: PF\n\
        offset 0\n\
        magic 7f454c4602010100000000000000000002000800\n\
        mask ffffffffffffff00fefffffffffffffffeffffff\n";
    const DEBIAN_LOONGARCH64: &str = "enabled\n\
        interpreter /usr/libexec/qemu-binfmt/loongarch64-binfmt-P\n\
        flags: PF\n\
        offset 0\n\
        magic 7f454c4602010100000000000000000002000201\n\
        mask fffffffffffffffc00fffffffffffffffeffffff\n";
    /// MIPS entries look into `e_flags` (byte 36) for the n32 ABI bit.
    const DEBIAN_MIPSEL: &str = "enabled\n\
        interpreter /usr/libexec/qemu-binfmt/mipsel-binfmt-P\n\
        flags: PF\n\
        offset 0\n\
        magic 7f454c46010101000000000000000000020008000000000000000000000000000000000000\n\
        mask ffffffffffffff00fefffffffffffffffeffffff0000000000000000000000000000000020\n";
    const DEBIAN_MIPSN32EL: &str = "enabled\n\
        interpreter /usr/libexec/qemu-binfmt/mipsn32el-binfmt-P\n\
        flags: PF\n\
        offset 0\n\
        magic 7f454c46010101000000000000000000020008000000000000000000000000000000000020\n\
        mask ffffffffffffff00fefffffffffffffffeffffff0000000000000000000000000000000020\n";
    /// A Java entry binfmt-support registers: an extension, no magic.
    const JAR: &str = "enabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n";

    fn dir(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs_err::write(d.path().join("status"), "enabled\n").unwrap();
        fs_err::write(d.path().join("register"), "").unwrap();
        for (name, text) in entries {
            fs_err::write(d.path().join(name), text).unwrap();
        }
        d
    }

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    fn amd64() -> Platform {
        p("linux/amd64")
    }

    fn check_in(d: &tempfile::TempDir, platform: &str) -> Result<Support, Error> {
        check(&p(platform), &amd64(), d.path())
    }

    fn emulated(handler: &str, interpreter: &str) -> Support {
        Support::Emulated {
            handler: handler.into(),
            interpreter: interpreter.into(),
        }
    }

    #[test]
    fn parses_what_the_kernel_prints() {
        let h = Handler::parse("qemu-aarch64", DEBIAN_AARCH64).unwrap();
        assert!(h.enabled && h.fix_binary());
        assert_eq!(h.flags, "PF");
        assert_eq!(h.offset, 0);
        assert_eq!(h.magic.len(), 20);
        assert_eq!(&h.magic[18..], &[0xb7, 0x00]);
        let jar = Handler::parse("jar", JAR).unwrap();
        assert!(jar.magic.is_empty() && !jar.fix_binary());
        assert!(!jar.matches(&elf_header(2, 1, 0xb7, 2)));
        assert_eq!(Handler::parse("status", "enabled\n"), None);
        assert_eq!(Handler::parse("register", ""), None);
        assert_eq!(Handler::parse("x", "enabled\nmagic zz\n"), None);
        assert_eq!(Handler::parse("x", "enabled\nmagic 7f45\nmask ff\n"), None);
    }

    #[test]
    fn native_without_binfmt_misc() {
        let nowhere = Path::new("/nonexistent/binfmt_misc");
        assert_eq!(check(&amd64(), &amd64(), nowhere).unwrap(), Support::Native);
        assert_eq!(
            check(&p("linux/amd64/v3"), &amd64(), nowhere).unwrap(),
            Support::Native
        );
        assert_eq!(
            check(&p("linux/386"), &amd64(), nowhere).unwrap(),
            Support::Native
        );
        let arm64 = p("linux/arm64");
        assert_eq!(check(&arm64, &arm64, nowhere).unwrap(), Support::Native);
        // AArch32 is not assumed on arm64.
        assert!(matches!(
            check(&p("linux/arm/v7"), &arm64, nowhere),
            Err(Error::NotMounted { qemu: "arm", .. })
        ));
    }

    #[test]
    fn debian_registrations_are_emulators() {
        let d = dir(&[
            ("qemu-aarch64", DEBIAN_AARCH64),
            ("qemu-arm", DEBIAN_ARM),
            ("qemu-s390x", DEBIAN_S390X),
            ("qemu-ppc64le", DEBIAN_PPC64LE),
            ("qemu-riscv64", DEBIAN_RISCV64),
            ("qemu-mips64el", DEBIAN_MIPS64EL),
            ("qemu-loongarch64", DEBIAN_LOONGARCH64),
            ("qemu-mipsel", DEBIAN_MIPSEL),
            ("qemu-mipsn32el", DEBIAN_MIPSN32EL),
            ("jar", JAR),
        ]);
        for (platform, qemu) in [
            ("linux/arm64", "aarch64"),
            ("linux/arm/v7", "arm"),
            ("linux/arm/v6", "arm"),
            ("linux/s390x", "s390x"),
            ("linux/ppc64le", "ppc64le"),
            ("linux/riscv64", "riscv64"),
            ("linux/mips64le", "mips64el"),
            ("linux/loong64", "loongarch64"),
            ("linux/mipsle", "mipsel"),
        ] {
            assert_eq!(
                check_in(&d, platform).unwrap(),
                emulated(
                    &format!("qemu-{qemu}"),
                    &format!("/usr/libexec/qemu-binfmt/{qemu}-binfmt-P")
                ),
                "{platform}"
            );
        }
        // Same e_machine, other class or byte order: not these handlers.
        for platform in ["linux/ppc64", "linux/mips64", "linux/mips"] {
            assert!(
                matches!(check_in(&d, platform), Err(Error::NoHandler { .. })),
                "{platform}"
            );
        }
    }

    #[test]
    fn a_handler_under_another_name_is_found_by_its_magic() {
        let by_hand = DEBIAN_AARCH64.replace("PF", "F").replace(
            "/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
            "/opt/qemu/qemu-aarch64-static",
        );
        let d = dir(&[("arm64-by-hand", &by_hand)]);
        assert_eq!(
            check_in(&d, "linux/arm64").unwrap(),
            emulated("arm64-by-hand", "/opt/qemu/qemu-aarch64-static")
        );
        // A magic without a mask matches byte for byte: ET_EXEC only.
        let exact = "enabled\ninterpreter /q\nflags: F\noffset 0\n\
                     magic 7f454c460201010000000000000000000200b700\n";
        let d = dir(&[("exact", exact)]);
        assert_eq!(
            check_in(&d, "linux/arm64").unwrap(),
            emulated("exact", "/q")
        );
        // Only e_machine, at offset 18.
        let d = dir(&[(
            "short",
            "enabled\ninterpreter /q\nflags: F\noffset 18\nmagic b700\n",
        )]);
        assert_eq!(
            check_in(&d, "linux/arm64").unwrap(),
            emulated("short", "/q")
        );
        // A handler for another architecture under the conventional name.
        let d = dir(&[("qemu-aarch64", DEBIAN_ARM)]);
        assert!(matches!(
            check_in(&d, "linux/arm64"),
            Err(Error::NoHandler { .. })
        ));
    }

    #[test]
    fn an_enabled_emulator_wins_over_a_disabled_one() {
        let disabled = DEBIAN_AARCH64.replacen("enabled", "disabled", 1);
        let d = dir(&[("qemu-aarch64", &disabled), ("z-aarch64", DEBIAN_AARCH64)]);
        assert_eq!(
            check_in(&d, "linux/arm64").unwrap(),
            emulated("z-aarch64", "/usr/libexec/qemu-binfmt/aarch64-binfmt-P")
        );
    }

    #[test]
    fn each_refusal_says_what_to_do() {
        let nowhere = tempfile::tempdir().unwrap();
        let e = check(&p("linux/arm64"), &amd64(), nowhere.path()).unwrap_err();
        assert!(matches!(e, Error::NotMounted { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "`mount -t binfmt_misc binfmt_misc {}`",
                nowhere.path().display()
            )) && msg.contains("`update-binfmts --enable qemu-aarch64`"),
            "{msg}"
        );

        let d = dir(&[]);
        let e = check_in(&d, "linux/arm64").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot run linux/arm64 binaries: no binfmt_misc handler for aarch64 is registered; \
             install the emulators: `apt-get install qemu-user-static binfmt-support` (registers \
             qemu-aarch64 with the fix-binary flag); without systemd run \
             `update-binfmts --enable qemu-aarch64`"
        );
        assert_eq!(e.short(), "no binfmt_misc handler for aarch64");

        let d = dir(&[(
            "qemu-aarch64",
            &DEBIAN_AARCH64.replacen("enabled", "disabled", 1),
        )]);
        let e = check_in(&d, "linux/arm64").unwrap_err();
        assert!(matches!(&e, Error::Disabled { handler, .. } if handler == "qemu-aarch64"));
        assert!(
            e.to_string()
                .ends_with("enable it: `update-binfmts --enable qemu-aarch64`"),
            "{e}"
        );

        let d = dir(&[("qemu-aarch64", &DEBIAN_AARCH64.replace("PF", "P"))]);
        let e = check_in(&d, "linux/arm64").unwrap_err();
        assert!(matches!(&e, Error::NoFixBinary { handler, .. } if handler == "qemu-aarch64"));
        let msg = e.to_string();
        assert!(
            msg.contains("re-register it with the F flag")
                && msg.contains(&format!("`echo -1 > {}/qemu-aarch64`", d.path().display()))
                && msg.contains("/usr/libexec/qemu-binfmt/aarch64-binfmt-P"),
            "{msg}"
        );
        assert_eq!(e.short(), "qemu-aarch64 lacks the fix-binary (F) flag");

        let d = dir(&[("qemu-aarch64", DEBIAN_AARCH64)]);
        fs_err::write(d.path().join("status"), "disabled\n").unwrap();
        let e = check_in(&d, "linux/arm64").unwrap_err();
        assert!(e.to_string().contains("`echo 1 > "), "{e}");

        for odd in ["linux/sparc64", "windows/arm64"] {
            let e = check_in(&d, odd).unwrap_err();
            assert!(matches!(e, Error::Unknown { .. }), "{odd}");
            assert!(e.to_string().contains("linux/arm64, linux/arm/v7"), "{e}");
        }
    }

    #[test]
    fn every_emulated_platform_has_an_elf_identity() {
        for s in EMULATED {
            let platform = p(s);
            assert_eq!(platform.to_string(), *s, "normalized");
            let qemu = platform.qemu_arch().unwrap_or_else(|| panic!("{s}"));
            assert!(elf_identity(qemu).is_some(), "{s}");
        }
    }

    #[test]
    fn elf_headers_match_the_brief() {
        // e_machine at bytes 18-19 in the file's byte order.
        assert_eq!(&elf_header(2, 1, 0xb7, 2)[18..20], &[0xb7, 0x00]);
        assert_eq!(
            &elf_header(2, 2, 0x16, 2)[16..24],
            &[0, 2, 0, 0x16, 0, 0, 0, 1]
        );
        assert_eq!(
            &elf_header(2, 1, 0x3e, 3)[16..24],
            &[3, 0, 0x3e, 0, 1, 0, 0, 0]
        );
    }
}
