//! Lowered-graph goldens: every Dockerfile of `tests/fixtures/dockerfile-corpus/`
//! is lowered (in process, as `imgbuild build` lowers it) and the graph is
//! compared with the folder's `graph.golden`. Their bases live on remote
//! registries; lowering, not pulling, is under test, so a fixed resolver
//! answers with one synthetic config for every image. A Dockerfile the
//! lowerer rejects has its diagnostics as its golden instead. Every folder
//! is checked; the test fails once with every mismatch. `IMGBUILD_BLESS=1`
//! rewrites the goldens (say why in the commit).
//!
//! The rendering is the project's own: a step is shown as `history` and
//! progress show it (`BuildGraph::created_by`), followed by the canonical
//! JSON its cache key hashes (`digest::canonical_json`), so any change to
//! what a step means shows here. Only the framing (stage headers, outputs)
//! is this file's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use imgbuild::diag::SourceFile;
use imgbuild::frontend::dockerfile::lower::{Options, parse_and_lower};
use imgbuild::graph::{Base, BaseInfo, BaseResolver, BuildGraph, ImageSource};
use imgbuild::platform::Platform;

use crate::util::{every_case, fixtures, golden};

/// The context every corpus Dockerfile is lowered against; it never exists
/// (lowering does no I/O).
const CONTEXT: &str = "/context";

/// Every base image is the same synthetic one: a fixed environment and
/// working directory (so `$PATH` expansion and relative `WORKDIR` are
/// exercised), no ONBUILD triggers. `BaseInfo` carries no user: lowering
/// does not read one.
struct SyntheticBases;

impl BaseResolver for SyntheticBases {
    fn resolve(&self, _image: &ImageSource, _: &Platform) -> Result<BaseInfo, String> {
        Ok(BaseInfo {
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                "SYNTHETIC_BASE=1".into(),
            ],
            workdir: Some("/base-workdir".into()),
            onbuild: Vec::new(),
        })
    }
}

fn base(graph: &BuildGraph, b: &Base) -> String {
    match b {
        Base::Scratch => "scratch".into(),
        Base::Image(i) => format!("image {i}"),
        Base::Stage(s) => format!("stage {} `{}`", s.0, graph.stage(*s).name),
    }
}

/// The graph as text: stages with their steps (history text, then the
/// step's canonical JSON), outputs, settings.
fn render(graph: &BuildGraph) -> String {
    let mut out = String::new();
    for (i, stage) in graph.stages.iter().enumerate() {
        let _ = writeln!(
            out,
            "stage {i} `{}` FROM {} ({}) at {}",
            stage.name,
            stage.base_text,
            base(graph, &stage.base),
            stage.source.location()
        );
        for &id in &stage.steps {
            let step = graph.step(id);
            let json = imgbuild::digest::canonical_json(&step.kind).unwrap();
            let _ = writeln!(
                out,
                "  {} {}\n    {}",
                step.source.location(),
                graph.created_by(id),
                String::from_utf8(json).unwrap()
            );
        }
    }
    for o in &graph.outputs {
        let tags: Vec<String> = o.tags.iter().map(|t| t.to_string()).collect();
        let _ = writeln!(
            out,
            "output stage {} tags {tags:?} path {:?}",
            o.stage.0, o.path
        );
    }
    let s = &graph.settings;
    let _ = writeln!(
        out,
        "settings context {} epoch {:?} excludes {:?} inputs {:?}",
        s.context.display(),
        s.source_date_epoch,
        s.context_excludes,
        s.inputs
    );
    out
}

/// What `imgbuild build` would make of `Dockerfile`: the graph and its
/// warnings, or only the diagnostics when there is an error.
fn lowered(dockerfile: &Path) -> String {
    let bytes = std::fs::read(dockerfile).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let file = SourceFile::new("Dockerfile", text);
    let opts = Options {
        context: PathBuf::from(CONTEXT),
        inputs: vec![PathBuf::from(CONTEXT).join("Dockerfile")],
        excludes: Vec::new(),
        build_args: Vec::new(),
        target: None,
        // Fixed, not the host's: the goldens must not depend on the machine.
        platform: Platform::new("linux", "amd64", ""),
        build_platform: Platform::new("linux", "amd64", ""),
        resolver: &SyntheticBases,
        warn_unused_stages: true,
        named_contexts: &Default::default(),
    };
    let diagnostics = |diags: &[imgbuild::diag::Diagnostic]| -> String {
        diags.iter().map(|d| format!("{d}\n\n")).collect()
    };
    match parse_and_lower(&file, &opts) {
        Err(d) => format!("# rejected\n{}", diagnostics(&[d])),
        Ok((_, diags)) if diags.iter().any(|d| d.is_error()) => {
            format!("# rejected\n{}", diagnostics(&diags))
        }
        Ok((graph, diags)) => {
            let mut out = render(&graph);
            if !diags.is_empty() {
                out.push_str("# warnings\n");
                out.push_str(&diagnostics(&diags));
            }
            out
        }
    }
}

crate::it_test!(every_corpus_dockerfile_lowers_to_its_golden_graph);
fn every_corpus_dockerfile_lowers_to_its_golden_graph() {
    every_case(
        &fixtures().join("dockerfile-corpus"),
        &["Dockerfile"],
        &["graph.golden"],
        |_, case| {
            let graph = lowered(&case.join("Dockerfile"));
            // Lowering is deterministic: hash-map order never reaches the graph.
            assert_eq!(
                graph,
                lowered(&case.join("Dockerfile")),
                "not deterministic"
            );
            golden(&case.join("graph.golden"), &graph);
        },
    );
}

crate::it_test!(the_synthetic_base_reaches_the_graph);
/// The resolver is consulted: a base's env expands and its working
/// directory anchors a relative WORKDIR (a resolver that was ignored would
/// make every golden above meaningless for bases).
fn the_synthetic_base_reaches_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let df = dir.path().join("Dockerfile");
    std::fs::write(
        &df,
        "FROM example.com/base:1\nWORKDIR sub\nENV P=$PATH:/x\nRUN echo $SYNTHETIC_BASE\n",
    )
    .unwrap();
    let g = lowered(&df);
    assert!(
        g.contains("(image example.com/base:1)"),
        "the base is an image:\n{g}"
    );
    assert!(g.contains("WORKDIR /base-workdir/sub"), "{g}");
    assert!(
        g.contains("ENV P=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/x"),
        "{g}"
    );
}
