//! COPY and ADD: sources, destination and flags expanded against the stage's
//! variables; heredoc sources become inline files; ADD of `http(s)://` URLs
//! and of git repositories (BuildKit's forms: `graph::is_git_url`) becomes
//! a fetch step (`graph::FetchStep`).

use super::CopyRef;
use super::{Lowerer, Scope, Stage};
use crate::diag::Span;
use crate::frontend::dockerfile::ast::{CopyArgs, Instruction};
use crate::graph::{
    Chmod, CopyFrom, CopyItem, CopyStep, FetchItem, FetchStep, GitSource, GraphBuilder, HttpSource,
    Owner, Remote, StepKind, is_git_url, is_http_url,
};

impl Lowerer<'_> {
    pub(super) fn copy(
        &mut self,
        g: &mut GraphBuilder,
        st: &mut Stage,
        scope: &Scope,
        i: &Instruction,
        c: &CopyArgs,
        add: bool,
    ) {
        let word = if add { "ADD" } else { "COPY" };
        let dest = self.expand(&c.dest, scope).unwrap_or_default();
        if dest.is_empty() {
            self.error(c.dest.span, format!("{word}: the destination is empty"));
        }
        let owner = c.chown.as_ref().and_then(|w| {
            let v = self.expand(w, scope)?;
            match Owner::parse(&v) {
                Some(o) => Some(o),
                None => {
                    self.error(w.span, format!("invalid --chown value `{v}`"))
                        .help = Some("write USER, USER:GROUP, UID or UID:GID".into());
                    None
                }
            }
        });
        let mode = c.chmod.as_ref().and_then(|w| {
            let v = self.expand(w, scope)?;
            match Chmod::parse(&v) {
                Some(m) => Some(m),
                None => {
                    self.error(w.span, format!("invalid --chmod value `{v}`"))
                        .help = Some(
                        "write octal bits such as 755, or a symbolic mode such as u=rwX,go=rX"
                            .into(),
                    );
                    None
                }
            }
        });
        let excludes: Vec<String> = c
            .excludes
            .iter()
            .filter_map(|w| {
                let v = self.expand(w, scope)?;
                if let Err(e) = crate::pattern::PatternSet::new(std::slice::from_ref(&v)) {
                    self.error(w.span, e.to_string());
                }
                Some(v)
            })
            .collect();
        let from: Option<CopyRef> = c.from.as_ref().and_then(|w| {
            let v = self.expand(w, scope)?;
            self.copy_source_ref(&v, w.span)
        });
        let item = |sources: Vec<String>, from: CopyFrom| CopyItem {
            from,
            sources,
            dest: dest.clone(),
            mode: mode.clone(),
            owner: owner.clone(),
            excludes: excludes.clone(),
            parents: c.parents,
            follow_links: true,
        };
        let mut items = Vec::new();
        let mut froms = Vec::new();
        let mut args = Vec::new();
        let mut plain = Vec::new();
        let mut plain_spans = Vec::new();
        let mut urls: Vec<(String, Span)> = Vec::new();
        for s in &c.sources {
            let heredoc = s
                .value
                .strip_prefix("<<")
                .map(|n| n.trim_start_matches('-'))
                .and_then(|n| {
                    c.heredocs
                        .iter()
                        .find(|h| h.name == n.trim_matches(['\'', '"']))
                });
            if let Some(h) = heredoc {
                let mut content = if h.chomp {
                    h.content
                        .split_inclusive('\n')
                        .map(|l| l.trim_start_matches('\t'))
                        .collect()
                } else {
                    h.content.clone()
                };
                if h.expand {
                    // Heredoc bodies expand variables but keep quotes (BuildKit
                    // expands them as raw text).
                    let lex = crate::frontend::dockerfile::expand::Lexer {
                        raw_quotes: true,
                        raw_escapes: true,
                        skip_process_quotes: true,
                        ..self.lexer
                    };
                    let env = |n: &str| scope.get(n);
                    match lex.word(&content, &env) {
                        Ok(v) => {
                            if !self.charge(v.len(), s.span) {
                                return;
                            }
                            content = v;
                        }
                        Err(e) => {
                            self.error(s.span, format!("cannot expand heredoc {}: {e}", h.name));
                        }
                    }
                }
                items.push(item(vec![h.name.clone()], CopyFrom::Inline { content }));
                froms.push(None);
                args.push(self.at(s.span));
                continue;
            }
            let Some(v) = self.expand(s, scope) else {
                continue;
            };
            // A git URL first: `https://…/x.git` is one, not a file.
            if add && (is_git_url(&v) || is_http_url(&v)) {
                urls.push((v, s.span));
                continue;
            }
            plain.push(v);
            plain_spans.push(self.at(s.span));
        }
        if !urls.is_empty() {
            if let Some((_, at)) = urls.first()
                && (!plain.is_empty() || !items.is_empty())
            {
                self.error(
                    *at,
                    "ADD cannot mix URLs with local sources in one instruction",
                )
                .help = Some("write one ADD for the URLs and one for the local files".into());
                return;
            }
            let fetch = self.fetch_item(c, scope, &dest, urls, (mode, owner), &excludes);
            if let Some((item, args)) = fetch {
                let step = FetchStep {
                    items: vec![item],
                    name: None,
                    link: c.link,
                };
                g.add_step(
                    st.id,
                    StepKind::Fetch(step),
                    self.at(i.span),
                    Vec::new(),
                    args,
                );
            }
            return;
        }
        if let Some(sum) = &c.checksum {
            self.error(
                sum.span,
                "ADD --checksum applies to http:// and https:// sources only",
            );
        }
        if !plain.is_empty() {
            // The context (or --from) copy goes first, as the sources are written.
            // A named local context is read directly; a stage or an image
            // is resolved with the graph.
            let (source, pending) = match from {
                Some(CopyRef::Local(local)) => (local, None),
                Some(CopyRef::Pending(p)) => (CopyFrom::Context, Some(p)),
                None => (CopyFrom::Context, None),
            };
            items.insert(0, item(plain, source));
            froms.insert(0, pending);
            let tail = std::mem::take(&mut args);
            args = plain_spans;
            args.extend(tail);
        }
        if items.is_empty() {
            return;
        }
        let step = CopyStep {
            items,
            name: None,
            add,
            link: c.link,
        };
        g.add_step(st.id, StepKind::Copy(step), self.at(i.span), froms, args);
    }
}

impl Lowerer<'_> {
    /// The fetch of an ADD whose sources are all URLs or git repositories,
    /// with BuildKit's rules: `--checksum` for one http(s) source only,
    /// several sources into a directory (`/`-terminated), no `--exclude` or
    /// `--unpack` (they are about local archives and trees);
    /// `--keep-git-dir` for git sources (ignored for others, as BuildKit
    /// does).
    fn fetch_item(
        &mut self,
        c: &CopyArgs,
        scope: &Scope,
        dest: &str,
        urls: Vec<(String, Span)>,
        (mode, owner): (Option<Chmod>, Option<Owner>),
        excludes: &[String],
    ) -> Option<(FetchItem, Vec<crate::diag::SourceRef>)> {
        let mut ok = true;
        if let Some(w) = c.excludes.first()
            && !excludes.is_empty()
        {
            self.error(w.span, "ADD --exclude applies to local sources, not URLs");
            ok = false;
        }
        if c.unpack == Some(true) {
            self.error(c.dest.span, "ADD --unpack=true of a URL is not supported")
                .help = Some("files from URLs are saved as they are, never extracted".into());
            ok = false;
        }
        if urls.len() > 1 && !dest.ends_with('/') {
            self.error(
                c.dest.span,
                format!(
                    "{} sources added to `{dest}`: with more than one source the destination \
                     must be a directory and end with a / (write `{dest}/`)",
                    urls.len()
                ),
            );
            ok = false;
        }
        let checksum = match &c.checksum {
            Some(w) if urls.len() > 1 => {
                self.error(w.span, "ADD --checksum applies to one source only");
                ok = false;
                None
            }
            Some(w) if urls.iter().any(|(u, _)| is_git_url(u)) => {
                self.error(
                    w.span,
                    "ADD --checksum applies to http:// and https:// sources only, not git",
                )
                .help = Some("pin a git source by its commit: URL#COMMIT".into());
                ok = false;
                None
            }
            Some(w) => self.expand(w, scope),
            None => None,
        };
        let mut sources = Vec::new();
        let mut args = Vec::new();
        for (url, span) in urls {
            if is_git_url(&url) {
                match GitSource::parse(&url, c.keep_git_dir) {
                    Ok(g) => sources.push(Remote::Git(g)),
                    Err(e) => {
                        self.error(span, format!("ADD: {e}"));
                        ok = false;
                    }
                }
                args.push(self.at(span));
                continue;
            }
            match HttpSource::parse(&url, checksum.as_deref()) {
                Ok(h) => sources.push(Remote::Http(h)),
                Err(e @ crate::graph::UrlError::Checksum(_)) => {
                    let at = c.checksum.as_ref().map_or(span, |w| w.span);
                    self.error(at, format!("ADD --checksum: {e}"));
                    ok = false;
                }
                Err(e) => {
                    self.error(span, format!("ADD: {e}"));
                    ok = false;
                }
            }
            args.push(self.at(span));
        }
        ok.then(|| {
            (
                FetchItem {
                    sources,
                    dest: dest.to_string(),
                    mode,
                    owner,
                },
                args,
            )
        })
    }
}
