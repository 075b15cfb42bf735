//! What a server said about a URL when it was last downloaded: its HTTP
//! validators (`ETag`, `Last-Modified`) and the blob the content was saved
//! as, so a rebuild asks "changed since?" (`If-None-Match`,
//! `If-Modified-Since`) and a `304 Not Modified` reuses the blob.
//!
//! One record per URL, `validators/<sha256 of the URL>`, written whole
//! through [`Store::write_file`]. A record is a hint, never trusted for
//! content: the blob it names is verified like any blob, a corrupt record
//! reads as absent, and one whose blob is gone is of no use (the caller
//! downloads again).

use serde::{Deserialize, Serialize};

use super::{Error, Result, Store};
use crate::digest::Digest;

/// The validators of one URL's last download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    /// The URL asked for (checked on read: a record is for this URL only).
    pub url: String,
    /// The `ETag` the server sent, as sent (weak ones keep their `W/`).
    pub etag: Option<String>,
    /// The `Last-Modified` the server sent, as sent.
    pub last_modified: Option<String>,
    /// The blob holding the content.
    pub content: Digest,
}

impl Store {
    fn validators_path(&self, url: &str) -> std::path::PathBuf {
        self.root
            .join("validators")
            .join(Digest::of(url.as_bytes()).hex())
    }

    /// The validators saved for `url`, when there are some and the blob
    /// they describe is still in the store.
    ///
    /// # Errors
    /// An unreadable record (a corrupt one, or one for another URL, reads
    /// as absent).
    pub fn validators(&self, url: &str) -> Result<Option<Validators>> {
        let p = self.validators_path(url);
        let rec: Option<Validators> = match self.read_record(&p) {
            Err(Error::BadRecord { .. }) => None,
            other => other?,
        };
        Ok(rec.filter(|v| v.url == url && self.has_blob(&v.content)))
    }

    /// Saves what the server said about `v.url`.
    ///
    /// # Errors
    /// When the record cannot be written.
    pub fn put_validators(&self, v: &Validators) -> Result<()> {
        let p = self.validators_path(&v.url);
        self.write_record(&p, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_need_their_blob() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let url = "http://127.0.0.1:1/x";
        assert_eq!(s.validators(url).unwrap(), None);
        let content = s.put_blob(b"hello").unwrap();
        let v = Validators {
            url: url.into(),
            etag: Some("\"1\"".into()),
            last_modified: None,
            content,
        };
        s.put_validators(&v).unwrap();
        assert_eq!(s.validators(url).unwrap(), Some(v.clone()));
        assert_eq!(s.validators("http://127.0.0.1:1/y").unwrap(), None);
        // A record whose blob is gone is no use.
        fs_err::remove_file(s.blob_path(&content)).unwrap();
        assert_eq!(s.validators(url).unwrap(), None);
        // A corrupt record reads as absent.
        fs_err::write(s.validators_path(url), b"{").unwrap();
        assert_eq!(s.validators(url).unwrap(), None);
    }
}
