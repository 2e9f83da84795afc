//! Resolving COPY/ADD source patterns inside a tree: wildcards matched component by component,
//! `.dockerignore` applied, and symlinks followed only while they stay inside the tree.

use super::*;

/// A tree being resolved: its root, its ignore rules, and what kind of tree it is (for
/// messages).
pub(super) struct TreeRef<'a> {
    pub(super) root: &'a Path,
    pub(super) ignore: Option<&'a Arc<IgnoreMatcher>>,
    pub(super) kind: TreeKind,
}

/// A path resolved inside a tree: relative to the root, free of symlinks except maybe the last.
struct Resolved {
    rel: PathBuf,
    metadata: Metadata,
}

impl TreeRef<'_> {
    pub(super) fn resolve_sources(&self, patterns: &[String]) -> Result<Vec<Source>> {
        let mut sources = Vec::new();
        for pattern in patterns {
            sources.extend(self.resolve_pattern(pattern)?);
        }
        Ok(sources)
    }

    fn no_match(&self, pattern: &str, excluded: bool) -> ContextError {
        ContextError::NoSourceMatch {
            pattern: pattern.to_string(),
            tree: self.kind,
            excluded,
        }
    }

    fn resolve_pattern(&self, pattern: &str) -> Result<Vec<Source>> {
        // Cleaning as an absolute path drops any `..` that would climb above the root.
        let cleaned = go_clean(&format!("/{pattern}"));
        let components: Vec<&str> = cleaned.split('/').filter(|c| !c.is_empty()).collect();
        let first_wildcard = components.iter().position(|c| contains_wildcards(c));
        let Some(first_wildcard) = first_wildcard else {
            let resolved = self
                .resolve_confined(&components, false, pattern)?
                .ok_or_else(|| self.no_match(pattern, false))?;
            let source = self.source(&resolved, components.join("/"));
            if !self.is_visible(&source)? {
                return Err(self.no_match(pattern, true));
            }
            return Ok(vec![source]);
        };

        let globs = components[first_wildcard..]
            .iter()
            .map(|component| compile_component_glob(component))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| ContextError::BadPattern {
                pattern: pattern.to_string(),
                reason,
            })?;
        let base = self
            .resolve_confined(&components[..first_wildcard], true, pattern)?
            .filter(|base| base.metadata.is_dir())
            .ok_or_else(|| self.no_match(pattern, false))?;
        // (real path relative to root, path as matched)
        let mut level = vec![(base.rel, components[..first_wildcard].join("/"))];
        for (depth, glob) in globs.iter().enumerate() {
            let is_last = depth + 1 == globs.len();
            let mut next = Vec::new();
            for (dir_rel, matched) in &level {
                let dir_host = self.root.join(dir_rel);
                let mut children = std::fs::read_dir(&dir_host)
                    .map_err(io_error(&dir_host))?
                    .map(|entry| entry.map(|entry| entry.file_name()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(io_error(&dir_host))?;
                children.sort();
                for name in children {
                    let name_text = name.to_string_lossy();
                    if !glob.is_match(&name_text) {
                        continue;
                    }
                    let child_rel = dir_rel.join(&name);
                    let child_host = self.root.join(&child_rel);
                    let metadata =
                        std::fs::symlink_metadata(&child_host).map_err(io_error(&child_host))?;
                    // Like filepath.Walk, intermediate components only descend real directories.
                    if !is_last && !metadata.is_dir() {
                        continue;
                    }
                    let child_matched = join_rel(matched, &name_text);
                    let resolved = Resolved {
                        rel: child_rel,
                        metadata,
                    };
                    if is_last {
                        let source = self.source(&resolved, child_matched);
                        if self.is_visible(&source)? {
                            next.push((resolved.rel, source.rel_path));
                        }
                    } else if self.may_include_below(&resolved.rel) {
                        next.push((resolved.rel, child_matched));
                    }
                }
            }
            level = next;
        }
        // BuildKit lets a wildcard match nothing (`COPY go.sum* ./` for an optional file), even
        // when every source of the instruction does; the caller warns about the latter.
        level
            .into_iter()
            .map(|(rel, matched)| {
                let host = self.root.join(&rel);
                let metadata = std::fs::symlink_metadata(&host).map_err(io_error(&host))?;
                Ok(self.source(&Resolved { rel, metadata }, matched))
            })
            .collect()
    }

    fn source(&self, resolved: &Resolved, rel_path: String) -> Source {
        Source {
            host_path: self.root.join(&resolved.rel),
            rel_path,
            is_dir: resolved.metadata.is_dir(),
            parents_path: None,
            exclude: None,
            filter: self.ignore.map(|ignore| SourceFilter {
                ignore: Arc::clone(ignore),
                base: path_to_slash(&resolved.rel),
            }),
        }
    }

    fn may_include_below(&self, rel: &Path) -> bool {
        self.ignore
            .is_none_or(|ignore| ignore.may_include_below(&path_to_slash(rel)))
    }

    /// A source is visible unless excluded; an excluded directory still shows when an exception
    /// re-includes something inside it (BuildKit then sends the directory with that content).
    fn is_visible(&self, source: &Source) -> Result<bool> {
        let Some(filter) = &source.filter else {
            return Ok(true);
        };
        if filter.base.is_empty() || !filter.ignore.is_excluded(&filter.base) {
            return Ok(true);
        }
        if !source.is_dir || !filter.ignore.may_include_below(&filter.base) {
            return Ok(false);
        }
        // The first entry is the directory itself; any second one is a visible descendant.
        match source.entries().nth(1) {
            None => Ok(false),
            Some(entry) => entry.map(|_| true),
        }
    }

    /// Resolves `components` inside the root as if it were `/`: symlinks in parents (and the
    /// last one when `follow_last`) are followed, absolute targets restart at the root, `..`
    /// stops at the root. `None` when something along the way does not exist.
    fn resolve_confined(
        &self,
        components: &[&str],
        follow_last: bool,
        pattern: &str,
    ) -> Result<Option<Resolved>> {
        let mut resolved: Vec<OsString> = Vec::new();
        let mut pending: VecDeque<OsString> = components.iter().map(OsString::from).collect();
        let mut links_followed = 0;
        while let Some(component) = pending.pop_front() {
            if component == "." || component.is_empty() {
                continue;
            }
            if component == ".." {
                resolved.pop();
                continue;
            }
            let host: PathBuf = self
                .root
                .join(resolved.iter().collect::<PathBuf>())
                .join(&component);
            let metadata = match std::fs::symlink_metadata(&host) {
                Ok(metadata) => metadata,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) =>
                {
                    return Ok(None);
                }
                Err(source) => return Err(ContextError::Io { path: host, source }),
            };
            let more_to_go = pending.iter().any(|c| c != "." && !c.is_empty());
            if metadata.is_symlink() && (more_to_go || follow_last) {
                links_followed += 1;
                if links_followed > MAX_SYMLINKS {
                    return Err(ContextError::SymlinkLoop {
                        pattern: pattern.to_string(),
                    });
                }
                let target = std::fs::read_link(&host).map_err(io_error(&host))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for part in target.components().rev() {
                    match part {
                        Component::Normal(name) => pending.push_front(name.to_os_string()),
                        Component::ParentDir => pending.push_front("..".into()),
                        Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                    }
                }
                continue;
            }
            if more_to_go && !metadata.is_dir() {
                return Ok(None);
            }
            resolved.push(component);
        }
        let rel: PathBuf = resolved.iter().collect();
        let host = self.root.join(&rel);
        let metadata = std::fs::symlink_metadata(&host).map_err(io_error(&host))?;
        Ok(Some(Resolved { rel, metadata }))
    }
}
