//! What the SBOM finds beyond package databases: the main module and dependencies of a Go
//! binary as Debian ships it.

use super::super::harness::{Kiln, assert_success};
use super::{purls, statements, validate};

/// fzf as Debian ships it (`scripts/setup.sh` installs it): a Go binary built in GOPATH mode,
/// whose build info names only its main package.
const FZF: &str = "/usr/bin/fzf";

#[test]
fn the_sbom_lists_a_debian_go_binarys_main_module_and_dependencies() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(FZF, ctx.path().join("fzf"))
        .unwrap_or_else(|e| panic!("{FZF} (apt-get install fzf, scripts/setup.sh): {e}"));
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nCOPY fzf /usr/bin/fzf\n",
    )
    .unwrap();
    let base = format!("BASE={}", k.base);
    let dir = ctx.path().to_str().unwrap();
    let out = k.cmd(&[
        "build",
        "-t",
        "go-sbom:1",
        "--build-arg",
        &base,
        "--sbom=true",
        dir,
    ]);
    assert_success(&out, &["build", "--sbom", "(fzf)"]);
    let sboms = statements(&k, "go-sbom:1", "--sbom");
    let sbom = &sboms[0];
    validate(&sbom["predicate"], "spdx-2.3.schema.json");
    let found = purls(sbom);
    // The main module, what Debian's fzf 0.38 links in (its Built-Using: go-isatty,
    // go-runewidth, go-shellwords, uniseg, walker, x/sync, x/sys, x/term), and the toolchain.
    for want in [
        "pkg:golang/github.com/junegunn/fzf",
        "pkg:golang/github.com/mattn/go-isatty",
        "pkg:golang/github.com/mattn/go-runewidth",
        "pkg:golang/github.com/mattn/go-shellwords",
        "pkg:golang/github.com/rivo/uniseg",
        "pkg:golang/github.com/saracen/walker",
        "pkg:golang/golang.org/x/sync",
        "pkg:golang/golang.org/x/sys",
        "pkg:golang/golang.org/x/term",
    ] {
        assert!(found.iter().any(|p| p == want), "{want} not in {found:#?}");
    }
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("pkg:golang/stdlib@go1.")),
        "{found:#?}"
    );
    // Only Go modules: no package of the standard library or the fzf module's own packages.
    let go: Vec<_> = found
        .iter()
        .filter(|p| p.starts_with("pkg:golang/"))
        .collect();
    assert!(
        go.iter()
            .all(|p| !p.contains("/src") && !p.contains("internal")),
        "{go:#?}"
    );
    let fzf = sbom["predicate"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "github.com/junegunn/fzf")
        .unwrap();
    assert_eq!(fzf["sourceInfo"], "found in /usr/bin/fzf");
    assert!(
        fzf.get("versionInfo").is_none(),
        "a GOPATH build records no module version: {fzf:#}"
    );
}
