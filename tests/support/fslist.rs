//! Listings of an OCI image archive's flattened filesystem as a delta
//! against a base image archive, plus the config's runtime fields: what the
//! differential semantics suite (`tests/it/semantics.rs`) compares and what
//! `scripts/semantics-expected.sh` generates from BuildKit
//! (`cargo run --release --example fslist -- BASE.tar IMAGE.tar`). Shared by
//! both through `#[path]`; reads archives only, never the host filesystem
//! beyond them. The format is described in `tests/fixtures/semantics/README.md`.
//!
//! Layers are applied in manifest order with OCI whiteouts (`.wh.NAME`
//! hides a lower path and what is under it, `.wh..wh..opq` hides every lower
//! child of its directory; both apply to the layers below only). Not listed
//! on purpose: mtimes (BuildKit keeps the context's, imgbuild writes
//! `SOURCE_DATE_EPOCH`), layer counts, directory sizes, the mode bits of
//! symlinks (always 0777 on Linux).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::Digest as _;

/// What can go wrong reading an archive or an override.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The archive cannot be opened or read.
    #[error("{path}: {source}")]
    Read {
        /// The archive.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A JSON document of the archive does not parse.
    #[error("{path}: {what}: {source}")]
    Json {
        /// The archive.
        path: PathBuf,
        /// Which document.
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The archive is not an OCI layout of one image.
    #[error("{path}: {what}")]
    Layout {
        /// The archive.
        path: PathBuf,
        /// What is missing or wrong.
        what: String,
    },
    /// A layer's tar stream is broken.
    #[error("{path}: layer {digest}: {source}")]
    Layer {
        /// The archive.
        path: PathBuf,
        /// The layer blob.
        digest: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A hard link names a path that does not exist at that point.
    #[error("{path}: layer {digest}: hard link {link} to missing {target}")]
    DanglingHardLink {
        /// The archive.
        path: PathBuf,
        /// The layer blob.
        digest: String,
        /// The link.
        link: String,
        /// What it names.
        target: String,
    },
    /// An override file line is not in the documented format.
    #[error("override line {line}: {what}")]
    Override {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
}

/// The kind of a filesystem object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Char,
    Block,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Char => "char",
            Kind::Block => "block",
        }
    }
}

/// One inode: what every path hard-linked to it shares.
#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    sha256: String,
    target: Vec<u8>,
    device: (u32, u32),
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// One change a layer makes, in archive order.
enum Change {
    Whiteout(Vec<u8>),
    Opaque(Vec<u8>),
    Put(Vec<u8>, Node),
    HardLink(Vec<u8>, Vec<u8>),
}

/// A flattened filesystem: paths (without a leading `/`; the root is empty)
/// to inodes.
#[derive(Default)]
struct Fs {
    paths: BTreeMap<Vec<u8>, usize>,
    nodes: Vec<Node>,
}

impl Fs {
    /// Removes everything strictly below `dir`.
    fn remove_below(&mut self, dir: &[u8]) {
        if dir.is_empty() {
            self.paths.clear();
            return;
        }
        let mut from = dir.to_vec();
        from.push(b'/');
        let mut to = dir.to_vec();
        to.push(b'/' + 1);
        let below: Vec<Vec<u8>> = self.paths.range(from..to).map(|(k, _)| k.clone()).collect();
        for k in below {
            self.paths.remove(&k);
        }
    }

    fn apply(&mut self, changes: Vec<Change>, archive: &Path, digest: &str) -> Result<(), Error> {
        // Whiteouts hide what the layers below have, not this layer's own
        // entries (OCI image spec, "Whiteouts"), so they go first.
        for c in &changes {
            match c {
                Change::Whiteout(p) => {
                    self.paths.remove(p);
                    self.remove_below(p);
                }
                Change::Opaque(d) => self.remove_below(d),
                _ => {}
            }
        }
        for c in changes {
            match c {
                Change::Put(p, node) => {
                    let replaces_dir = self
                        .paths
                        .get(&p)
                        .is_some_and(|&id| self.nodes[id].kind == Kind::Dir);
                    if node.kind != Kind::Dir && replaces_dir {
                        self.remove_below(&p);
                    }
                    self.nodes.push(node);
                    self.paths.insert(p, self.nodes.len() - 1);
                }
                Change::HardLink(p, target) => {
                    let Some(&id) = self.paths.get(&target) else {
                        return Err(Error::DanglingHardLink {
                            path: archive.to_path_buf(),
                            digest: digest.to_string(),
                            link: show_path(&p),
                            target: show_path(&target),
                        });
                    };
                    if self
                        .paths
                        .get(&p)
                        .is_some_and(|&o| self.nodes[o].kind == Kind::Dir)
                    {
                        self.remove_below(&p);
                    }
                    self.paths.insert(p, id);
                }
                Change::Whiteout(_) | Change::Opaque(_) => {}
            }
        }
        Ok(())
    }

    /// One listing line per path (keyed by path bytes).
    fn lines(&self) -> BTreeMap<Vec<u8>, String> {
        let mut by_node: HashMap<usize, &Vec<u8>> = HashMap::new();
        let mut count: HashMap<usize, usize> = HashMap::new();
        // BTreeMap order: the first path seen for a node is the bytewise least.
        for (p, &id) in &self.paths {
            by_node.entry(id).or_insert(p);
            *count.entry(id).or_default() += 1;
        }
        self.paths
            .iter()
            .map(|(p, &id)| {
                let n = &self.nodes[id];
                let group = if n.kind != Kind::Dir && count[&id] > 1 {
                    show_path(by_node[&id])
                } else {
                    "-".to_string()
                };
                (p.clone(), render(p, n, &group))
            })
            .collect()
    }
}

fn render(path: &[u8], n: &Node, group: &str) -> String {
    let mode = if n.kind == Kind::Symlink {
        0o777
    } else {
        n.mode & 0o7777
    };
    let size = if n.kind == Kind::File {
        n.size.to_string()
    } else {
        "-".to_string()
    };
    let content = match n.kind {
        Kind::File => n.sha256.clone(),
        Kind::Symlink => escape(&n.target),
        Kind::Char | Kind::Block => format!("{},{}", n.device.0, n.device.1),
        Kind::Dir | Kind::Fifo => "-".to_string(),
    };
    let xattrs = if n.xattrs.is_empty() {
        "-".to_string()
    } else {
        n.xattrs
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k), hex::encode(v)))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{} {} {:04o} {}:{} {} {} {} {}",
        show_path(path),
        n.kind.name(),
        mode,
        n.uid,
        n.gid,
        size,
        content,
        group,
        xattrs
    )
}

/// `/` + the path, escaped.
fn show_path(p: &[u8]) -> String {
    let mut s = String::from("/");
    s.push_str(&escape(p));
    s
}

/// Bytes as text with nothing ambiguous: valid UTF-8 as is except `\`
/// (`\\`), whitespace and control characters (`\xNN`, `\u{N}`); bytes that
/// are not UTF-8 as `\xNN`. A listing line's fields never contain a space.
pub fn escape(b: &[u8]) -> String {
    let mut s = String::new();
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                s.push_str("\\\\");
            } else if c.is_whitespace() || c.is_control() {
                if c.is_ascii() {
                    let _ = write!(s, "\\x{:02x}", c as u32);
                } else {
                    let _ = write!(s, "\\u{{{:x}}}", c as u32);
                }
            } else {
                s.push(c);
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(s, "\\x{byte:02x}");
        }
    }
    s
}

/// A tar path as a key: no leading `./` or `/`, no trailing `/`.
fn normalize(p: &[u8]) -> Vec<u8> {
    let mut p = p;
    loop {
        if let Some(rest) = p.strip_prefix(b"./") {
            p = rest;
        } else if let Some(rest) = p.strip_prefix(b"/") {
            p = rest;
        } else {
            break;
        }
    }
    while let Some(rest) = p.strip_suffix(b"/") {
        p = rest;
    }
    if p == b"." {
        p = b"";
    }
    p.to_vec()
}

fn split_dir(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&p[..0], p),
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut v = dir.to_vec();
    v.push(b'/');
    v.extend_from_slice(name);
    v
}

/// The changes of one layer stream (decompressed as its magic says).
fn read_layer(raw: impl Read) -> io::Result<Vec<Change>> {
    let mut raw = BufReader::new(raw);
    let magic = {
        use std::io::BufRead as _;
        raw.fill_buf()?
            .get(..4)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    };
    let stream: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(raw))
    } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::with_buffer(raw)?)
    } else {
        Box::new(raw)
    };
    let mut changes = Vec::new();
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = normalize(&entry.path_bytes());
        let (dir, name) = split_dir(&path);
        if name == b".wh..wh..opq" {
            changes.push(Change::Opaque(dir.to_vec()));
            continue;
        }
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            changes.push(Change::Whiteout(join(dir, hidden)));
            continue;
        }
        let h = entry.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Fifo => Kind::Fifo,
            tar::EntryType::Char => Kind::Char,
            tar::EntryType::Block => Kind::Block,
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| normalize(&t))
                    .unwrap_or_default();
                changes.push(Change::HardLink(path, target));
                continue;
            }
            other => {
                return Err(io::Error::other(format!(
                    "{}: unsupported entry type {other:?}",
                    show_path(&path)
                )));
            }
        };
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    xattrs.insert(name.to_vec(), ext.value_bytes().to_vec());
                }
            }
        }
        let target = if kind == Kind::Symlink {
            entry
                .link_name_bytes()
                .map(|t| t.to_vec())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let (mut size, mut sha256) = (0, String::new());
        if kind == Kind::File {
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = entry.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            sha256 = hex::encode(hasher.finalize());
        }
        let device = if matches!(kind, Kind::Char | Kind::Block) {
            (
                h.device_major()?.unwrap_or(0),
                h.device_minor()?.unwrap_or(0),
            )
        } else {
            (0, 0)
        };
        changes.push(Change::Put(
            path,
            Node {
                kind,
                mode: h.mode()?,
                uid: h.uid()?,
                gid: h.gid()?,
                size,
                sha256,
                target,
                device,
                xattrs,
            },
        ));
    }
    Ok(changes)
}

/// A read image: its flattened filesystem and its config document.
struct Image {
    fs: Fs,
    config: serde_json::Value,
}

fn open(path: &Path) -> Result<tar::Archive<BufReader<File>>, Error> {
    let f = File::open(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(tar::Archive::new(BufReader::new(f)))
}

fn blob_name(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// Reads an OCI archive in two streaming passes: the JSON documents first
/// (to learn the layer order), then every layer blob, summarized into its
/// changes wherever it sits in the archive; then applies them in order.
fn read_image(path: &Path) -> Result<Image, Error> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let layout = |what: String| Error::Layout {
        path: path.to_path_buf(),
        what,
    };
    // Pass 1: small documents (index.json and JSON blobs).
    let mut docs: HashMap<String, Vec<u8>> = HashMap::new();
    let mut a = open(path)?;
    for e in a.entries().map_err(read_err)? {
        let mut e = e.map_err(read_err)?;
        let name = String::from_utf8_lossy(&normalize(&e.path_bytes())).into_owned();
        if e.header().size().map_err(read_err)? > 4 << 20 {
            continue;
        }
        let mut v = Vec::new();
        e.read_to_end(&mut v).map_err(read_err)?;
        if name == "index.json" || v.first() == Some(&b'{') {
            docs.insert(name, v);
        }
    }
    let json = |name: &str| -> Result<serde_json::Value, Error> {
        let bytes = docs
            .get(name)
            .ok_or_else(|| layout(format!("{name} is missing")))?;
        serde_json::from_slice(bytes).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            what: name.to_string(),
            source,
        })
    };
    // index.json → (nested indexes →) the first manifest.
    let mut doc = json("index.json")?;
    let mut depth = 0;
    while let Some(manifests) = doc.get("manifests").and_then(|m| m.as_array()) {
        let first = manifests
            .iter()
            .find(|m| {
                m["platform"]["architecture"] != "unknown"
                    && m["annotations"]["vnd.docker.reference.type"] != "attestation-manifest"
            })
            .ok_or_else(|| layout("an index lists no manifest".to_string()))?;
        let digest = first["digest"]
            .as_str()
            .ok_or_else(|| layout("a descriptor has no digest".to_string()))?;
        doc = json(&blob_name(digest))?;
        depth += 1;
        if depth > 8 {
            return Err(layout("indexes nest too deep".to_string()));
        }
    }
    let config_digest = doc["config"]["digest"]
        .as_str()
        .ok_or_else(|| layout("the manifest has no config".to_string()))?;
    let config = json(&blob_name(config_digest))?;
    let layers: Vec<String> = doc["layers"]
        .as_array()
        .ok_or_else(|| layout("the manifest has no layers".to_string()))?
        .iter()
        .map(|l| {
            l["digest"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| layout("a layer has no digest".to_string()))
        })
        .collect::<Result<_, _>>()?;
    // Pass 2: every layer blob into its changes.
    let wanted: HashMap<String, &String> = layers.iter().map(|d| (blob_name(d), d)).collect();
    let mut summaries: HashMap<String, Vec<Change>> = HashMap::new();
    let mut a = open(path)?;
    for e in a.entries().map_err(read_err)? {
        let e = e.map_err(read_err)?;
        let name = String::from_utf8_lossy(&normalize(&e.path_bytes())).into_owned();
        let Some(&digest) = wanted.get(&name) else {
            continue;
        };
        if summaries.contains_key(digest) {
            continue;
        }
        let changes = read_layer(e).map_err(|source| Error::Layer {
            path: path.to_path_buf(),
            digest: digest.clone(),
            source,
        })?;
        summaries.insert(digest.clone(), changes);
    }
    let mut fs = Fs::default();
    for d in &layers {
        // A layer repeated in the stack is applied each time.
        let changes = match summaries.get(d) {
            Some(_) if layers.iter().filter(|x| *x == d).count() > 1 => {
                let mut a = open(path)?;
                let mut found = None;
                for e in a.entries().map_err(read_err)? {
                    let e = e.map_err(read_err)?;
                    if normalize(&e.path_bytes()) == blob_name(d).as_bytes() {
                        found = Some(read_layer(e).map_err(|source| Error::Layer {
                            path: path.to_path_buf(),
                            digest: d.clone(),
                            source,
                        })?);
                        break;
                    }
                }
                found
            }
            Some(_) => summaries.remove(d),
            None => None,
        }
        .ok_or_else(|| layout(format!("layer blob {d} is missing")))?;
        fs.apply(changes, path, d)?;
    }
    Ok(Image { fs, config })
}

/// The config's runtime fields, one line each, absent and empty alike.
fn config_lines(config: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    let c = &config["config"];
    let list = |k: &str| match &c[k] {
        Value::Array(a) => Value::Array(a.clone()),
        _ => Value::Array(Vec::new()),
    };
    let string = |k: &str| match &c[k] {
        Value::String(s) => Value::String(s.clone()),
        _ => Value::String(String::new()),
    };
    let labels = match &c["Labels"] {
        Value::Object(m) => Value::Object(m.clone()),
        _ => Value::Object(serde_json::Map::new()),
    };
    let mut ports: Vec<String> = match &c["ExposedPorts"] {
        Value::Object(m) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    ports.sort();
    let fields = [
        ("Cmd", list("Cmd")),
        ("Entrypoint", list("Entrypoint")),
        ("Env", list("Env")),
        ("ExposedPorts", Value::from(ports)),
        ("Labels", labels),
        ("User", string("User")),
        ("WorkingDir", string("WorkingDir")),
    ];
    fields
        .into_iter()
        .map(|(k, v)| format!("config.{k} {v}"))
        .collect()
}

/// The listing of `image` against `base` (the format of
/// `tests/fixtures/semantics/README.md`), newline-terminated lines.
///
/// # Errors
///
/// When either archive cannot be read as an OCI image.
pub fn listing(base: &Path, image: &Path) -> Result<String, Error> {
    let base = read_image(base)?;
    let image = read_image(image)?;
    let before = base.fs.lines();
    let after = image.fs.lines();
    let mut lines: BTreeMap<Vec<u8>, String> = BTreeMap::new();
    for (p, line) in &after {
        if before.get(p) != Some(line) {
            lines.insert(p.clone(), line.clone());
        }
    }
    for p in before.keys() {
        if !after.contains_key(p) {
            lines.insert(p.clone(), format!("deleted {}", show_path(p)));
        }
    }
    let mut out = String::new();
    for l in lines
        .values()
        .map(String::as_str)
        .chain(config_lines(&image.config).iter().map(String::as_str))
    {
        out.push_str(l);
        out.push('\n');
    }
    Ok(out)
}

/// The key an override line replaces: the path of a path or `deleted` line,
/// the field of a config line.
fn key(line: &str) -> &str {
    let line = line.strip_prefix("deleted ").unwrap_or(line);
    line.split(' ').next().unwrap_or(line)
}

/// Sort position of a key: paths by their raw bytes would need unescaping;
/// escaped text sorts the same for everything but escaped bytes, which is
/// stable, and config lines come after every path.
fn rank(line: &str) -> (u8, Vec<u8>) {
    let k = key(line);
    if k.starts_with('/') {
        (0, unescape(k))
    } else {
        (1, Vec::new())
    }
}

/// Inverse of [`escape`] (for sorting override lines among the others).
pub fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.extend_from_slice(&rest.as_bytes()[..i]);
        let esc = &rest[i..];
        if let Some(r) = esc.strip_prefix("\\\\") {
            out.push(b'\\');
            rest = r;
        } else if let Some(r) = esc.strip_prefix("\\x") {
            match r.get(..2).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => {
                    out.push(b);
                    rest = &r[2..];
                }
                None => {
                    out.push(b'\\');
                    rest = &esc[1..];
                }
            }
        } else if let Some(r) = esc.strip_prefix("\\u{") {
            match r.find('}').and_then(|j| {
                u32::from_str_radix(&r[..j], 16)
                    .ok()
                    .and_then(char::from_u32)
                    .map(|c| (c, j))
            }) {
                Some((c, j)) => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    rest = &r[j + 1..];
                }
                None => {
                    out.push(b'\\');
                    rest = &esc[1..];
                }
            }
        } else {
            out.push(b'\\');
            rest = &esc[1..];
        }
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

/// Applies an override file to a listing: `#` lines are comments (the first
/// must be `# reason: …`); `error` alone means the build must fail; `remove
/// KEY` drops the line for a path or config field; any other line replaces
/// the line with the same key (or is added). A listing that is `error`
/// starts empty when the override has lines.
///
/// # Errors
///
/// When the override has no reason line or mixes `error` with other lines.
pub fn apply_override(listing: &str, text: &str) -> Result<String, Error> {
    let bad = |line: usize, what: &str| Error::Override {
        line,
        what: what.to_string(),
    };
    let mut reason = false;
    let mut ops = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        if let Some(c) = l.strip_prefix('#') {
            if i == 0 && c.trim_start().starts_with("reason:") {
                reason = true;
            }
            continue;
        }
        ops.push((i + 1, l));
    }
    if !reason {
        return Err(bad(1, "the first line must be `# reason: …`"));
    }
    if ops.iter().any(|(_, l)| *l == "error") {
        if let Some((n, _)) = ops.iter().find(|(_, l)| *l != "error") {
            return Err(bad(*n, "`error` cannot be mixed with other lines"));
        }
        return Ok("error\n".to_string());
    }
    let mut lines: Vec<String> = listing
        .lines()
        .filter(|l| !l.starts_with('#') && *l != "error")
        .map(str::to_string)
        .collect();
    for (n, l) in ops {
        if let Some(k) = l.strip_prefix("remove ") {
            let before = lines.len();
            lines.retain(|x| key(x) != k);
            if lines.len() == before {
                return Err(bad(n, "`remove` names a key the listing does not have"));
            }
            continue;
        }
        if !(l.starts_with('/') || l.starts_with("deleted /") || l.starts_with("config.")) {
            return Err(bad(n, "not a listing line"));
        }
        let k = key(l).to_string();
        lines.retain(|x| key(x) != k);
        lines.push(l.to_string());
    }
    let config_order = |l: &str| key(l).to_string();
    lines.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then_with(|| config_order(a).cmp(&config_order(b)))
    });
    let mut out = String::new();
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    Ok(out)
}

/// The lines that carry the listing (no `#` comments).
pub fn content_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

/// A unified-style diff of two listings (`-` expected, `+` actual), with
/// two lines of context; empty when they are equal.
pub fn diff(expected: &[&str], actual: &[&str]) -> String {
    let (n, m) = (expected.len(), actual.len());
    // Longest common subsequence table (listings are small).
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            ops.push((' ', expected[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', expected[i]));
            i += 1;
        } else {
            ops.push(('+', actual[j]));
            j += 1;
        }
    }
    if ops.iter().all(|(c, _)| *c == ' ') {
        return String::new();
    }
    const CONTEXT: usize = 2;
    let near = |k: usize| {
        let lo = k.saturating_sub(CONTEXT);
        let hi = (k + CONTEXT + 1).min(ops.len());
        ops[lo..hi].iter().any(|(c, _)| *c != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (c, l)) in ops.iter().enumerate() {
        if near(k) {
            if skipped {
                out.push_str("@@\n");
                skipped = false;
            }
            let _ = writeln!(out, "{c}{l}");
        } else {
            skipped = true;
        }
    }
    out
}
