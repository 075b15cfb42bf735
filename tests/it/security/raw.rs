//! Layer and archive tars built entry by entry, with names and records the
//! tar crate's own builder would refuse or rewrite: hostile inputs.

/// A tar stream built entry by entry with raw (hostile) names, which the
/// tar crate's own builder would refuse.
pub struct RawTar(Vec<u8>);

impl RawTar {
    pub fn new() -> Self {
        RawTar(Vec::new())
    }

    pub fn push(
        mut self,
        name: &[u8],
        ty: tar::EntryType,
        link: &[u8],
        body: &[u8],
        (mode, mtime): (u32, u64),
    ) -> Self {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name);
            gnu.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_size(body.len() as u64);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(body);
        let pad = (512 - body.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn file(self, name: &str, body: &[u8]) -> Self {
        self.push(
            name.as_bytes(),
            tar::EntryType::Regular,
            b"",
            body,
            (0o644, 0),
        )
    }

    pub fn exe(self, name: &str, body: &[u8]) -> Self {
        self.push(
            name.as_bytes(),
            tar::EntryType::Regular,
            b"",
            body,
            (0o755, 0),
        )
    }

    pub fn dir(self, name: &str, mtime: u64) -> Self {
        self.push(
            name.as_bytes(),
            tar::EntryType::Directory,
            b"",
            b"",
            (0o755, mtime),
        )
    }

    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.push(
            name.as_bytes(),
            tar::EntryType::Symlink,
            target.as_bytes(),
            b"",
            (0o777, 0),
        )
    }

    pub fn hardlink(self, name: &str, target: &str) -> Self {
        self.push(
            name.as_bytes(),
            tar::EntryType::Link,
            target.as_bytes(),
            b"",
            (0o644, 0),
        )
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0u8, 1024));
        self.0
    }
}

impl RawTar {
    /// A PAX extended header carrying `records`, for the next entry.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        let mut body = Vec::new();
        for (k, v) in records {
            // "LEN KEY=VALUE\n", LEN counting itself.
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self = self.push(b"pax", tar::EntryType::XHeader, b"", &body, (0o644, 0));
        self
    }

    /// A node of another type (FIFO, device) with a mode.
    pub fn node(mut self, name: &str, ty: tar::EntryType, mode: u32, dev: (u32, u32)) -> Self {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        h.set_device_major(dev.0).unwrap();
        h.set_device_minor(dev.1).unwrap();
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self
    }

    /// busybox-static as `bin/busybox` with the applets named, `PATH`-ready.
    pub fn busybox(mut self, applets: &[&str]) -> Self {
        let busybox = std::fs::read("/bin/busybox")
            .expect("/bin/busybox is missing: install busybox-static (see .ci/run)");
        self = self.dir("bin/", 0).exe("bin/busybox", &busybox);
        for a in applets {
            self = self.symlink(&format!("bin/{a}"), "busybox");
        }
        self
    }
}
