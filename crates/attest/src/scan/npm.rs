//! npm packages: each `node_modules/<name>/package.json` (or `node_modules/@scope/name/`),
//! and the lockfiles of applications (`package-lock.json`, `packages` map of lockfile v2/v3,
//! nested `dependencies` of v1).

use std::path::{Component, Path};

use serde_json::Value;

use super::{Ecosystem, Package, purl};

/// Whether `rel` is `…/node_modules/<name>/package.json` or `…/node_modules/@s/<name>/…`.
pub(super) fn in_node_modules(rel: &Path) -> bool {
    let parts: Vec<_> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy()),
            _ => None,
        })
        .collect();
    let n = parts.len();
    (n >= 3 && parts[n - 3] == "node_modules")
        || (n >= 4 && parts[n - 4] == "node_modules" && parts[n - 3].starts_with('@'))
}

fn package(name: &str, version: &str, license: Option<String>, found_in: &str) -> Package {
    let (namespace, short) = match name.split_once('/') {
        Some((scope, short)) if scope.starts_with('@') => (Some(scope), short),
        _ => (None, name),
    };
    Package {
        ecosystem: Ecosystem::Npm,
        purl: purl(Ecosystem::Npm, namespace, short, version, &[]),
        name: name.to_owned(),
        version: version.to_owned(),
        license,
        supplier: None,
        found_in: found_in.to_owned(),
    }
}

fn license_of(v: &Value) -> Option<String> {
    match v.get("license")? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("type")?.as_str().map(str::to_owned),
        _ => None,
    }
}

pub(super) fn parse_package_json(text: &str, found_in: &str) -> Option<Package> {
    let v: Value = serde_json::from_str(text).ok()?;
    let name = v.get("name")?.as_str()?;
    let version = v.get("version")?.as_str()?;
    Some(package(name, version, license_of(&v), found_in))
}

pub(super) fn parse_lockfile(text: &str, found_in: &str) -> Vec<Package> {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(packages) = v.get("packages").and_then(Value::as_object) {
        for (path, p) in packages {
            // "" is the application itself; links point at a workspace folder.
            let Some(idx) = path.rfind("node_modules/") else {
                continue;
            };
            if p.get("link").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(&path[idx + "node_modules/".len()..]);
            if let Some(version) = p.get("version").and_then(Value::as_str) {
                out.push(package(name, version, license_of(p), found_in));
            }
        }
    } else if let Some(deps) = v.get("dependencies").and_then(Value::as_object) {
        let mut todo: Vec<_> = deps.iter().collect();
        while let Some((name, p)) = todo.pop() {
            if let Some(version) = p.get("version").and_then(Value::as_str) {
                out.push(package(name, version, None, found_in));
            }
            if let Some(nested) = p.get("dependencies").and_then(Value::as_object) {
                todo.extend(nested.iter());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_modules_paths() {
        assert!(in_node_modules(Path::new(
            "app/node_modules/x/package.json"
        )));
        assert!(in_node_modules(Path::new("node_modules/@s/x/package.json")));
        assert!(!in_node_modules(Path::new("app/package.json")));
        assert!(!in_node_modules(Path::new(
            "node_modules/x/lib/package.json"
        )));
    }

    #[test]
    fn package_json_and_both_lockfile_shapes() {
        let p = parse_package_json(
            r#"{"name":"@types/node","version":"20.1.0","license":{"type":"MIT"}}"#,
            "/x",
        )
        .unwrap();
        assert_eq!(p.purl, "pkg:npm/%40types/node@20.1.0");
        assert_eq!(p.license.as_deref(), Some("MIT"));
        let v1 = r#"{"lockfileVersion":1,"dependencies":{"a":{"version":"1.0.0","dependencies":{"b":{"version":"2.0.0"}}}}}"#;
        let mut names: Vec<_> = parse_lockfile(v1, "/l")
            .into_iter()
            .map(|p| p.purl)
            .collect();
        names.sort();
        assert_eq!(names, ["pkg:npm/a@1.0.0", "pkg:npm/b@2.0.0"]);
        let v3 = r#"{"lockfileVersion":3,"packages":{"":{"version":"0.1.0"},"node_modules/a/node_modules/c":{"version":"3.0.0"},"node_modules/w":{"link":true}}}"#;
        let got: Vec<_> = parse_lockfile(v3, "/l")
            .into_iter()
            .map(|p| p.purl)
            .collect();
        assert_eq!(got, ["pkg:npm/c@3.0.0"]);
    }
}
