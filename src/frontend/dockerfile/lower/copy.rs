//! COPY and ADD: sources, destination and flags expanded against the stage's
//! variables; heredoc sources become inline files; ADD of a URL is refused
//! with a clear error (it needs network access).

use super::{Lowerer, Scope, Stage};
use crate::frontend::dockerfile::ast::{CopyArgs, Instruction};
use crate::graph::builder::PendingRef;
use crate::graph::{Chmod, CopyFrom, CopyItem, CopyStep, GraphBuilder, Owner, StepKind};

fn is_url(s: &str) -> bool {
    s.starts_with("http://")
        || s.starts_with("https://")
        || s.starts_with("git@")
        || s.starts_with("git://")
}

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
        let from: Option<PendingRef> = c.from.as_ref().and_then(|w| {
            let v = self.expand(w, scope)?;
            self.copy_source_ref(&v, w.span)
        });
        if let Some(sum) = &c.checksum {
            self.error(sum.span, "ADD --checksum applies to URL sources, which need network access and are not supported yet");
        }
        if c.keep_git_dir {
            self.error(i.keyword.span, "ADD --keep-git-dir applies to git sources, which need network access and are not supported yet");
        }

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
            if add && is_url(&v) {
                self.error(s.span, format!("ADD {v}: sources from URLs need network access, which imgbuild does not support yet"))
                    .help = Some("download the file into the build context and ADD or COPY it from there".into());
                continue;
            }
            plain.push(v);
            plain_spans.push(self.at(s.span));
        }
        if !plain.is_empty() {
            // The context (or --from) copy goes first, as the sources are written.
            items.insert(0, item(plain, CopyFrom::Context));
            froms.insert(0, from);
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
