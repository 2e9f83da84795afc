//! Inline heredoc sources of `COPY <<EOF`: each body written as a file in the step's scratch
//! directory, so it is hashed into the cache key and copied like any other source. The files
//! are made byte-for-byte the same on every build (fixed mode and mtime), which is what lets
//! an unchanged heredoc hit the cache.

use std::path::Path;

use kiln_dockerfile::Heredoc;

use crate::context::Source;

/// Writes each heredoc's body as a file named after its delimiter (`COPY <<EOF /dst` writes
/// `EOF`), one directory per heredoc so equal names cannot collide, and returns them as sources.
/// Files get mode 0644 as BuildKit gives them (before `--chmod`) and a fixed mtime (the epoch) so
/// the layer does not change from build to build.
pub(super) fn heredoc_sources(dir: &Path, heredocs: &[Heredoc]) -> Result<Vec<Source>, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut sources = Vec::new();
    for (index, heredoc) in heredocs.iter().enumerate() {
        let name = heredoc.name.as_str();
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(format!(
                "heredoc name {name:?} cannot be used as a file name"
            ));
        }
        let path = dir.join(format!("heredoc-{index}")).join(name);
        let io = |e: std::io::Error| format!("writing heredoc {name}: {e}");
        std::fs::create_dir_all(path.parent().expect("joined above")).map_err(io)?;
        std::fs::write(&path, &heredoc.content).map_err(io)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).map_err(io)?;
        let file = std::fs::File::options()
            .write(true)
            .open(&path)
            .map_err(io)?;
        let epoch = std::time::SystemTime::UNIX_EPOCH;
        file.set_times(
            std::fs::FileTimes::new()
                .set_accessed(epoch)
                .set_modified(epoch),
        )
        .map_err(io)?;
        sources.push(Source::standalone(path));
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use kiln_dockerfile::CopyCommand;

    use super::*;
    use crate::copy::{Chmod, CopyOptions, copy_into, parse_chown};

    fn heredoc(name: &str, content: &str) -> Heredoc {
        Heredoc {
            name: name.into(),
            content: content.into(),
            expand: true,
        }
    }

    /// Writes a command's heredocs into a fresh root the way the COPY step does.
    fn copy_heredocs(command: &CopyCommand) -> Result<tempfile::TempDir, String> {
        let scratch = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let sources = heredoc_sources(scratch.path(), &command.heredocs)?;
        let opts = CopyOptions {
            owner: command
                .chown
                .as_deref()
                .map(|spec| parse_chown(spec, root.path()).unwrap()),
            chmod: command.chmod.as_deref().map(|m| Chmod::parse(m).unwrap()),
            keep_source_owner: false,
        };
        copy_into(root.path(), &sources, &command.dest, &opts).map_err(|e| e.to_string())?;
        Ok(root)
    }

    #[test]
    fn one_heredoc_becomes_the_destination_file() {
        let command = CopyCommand {
            heredocs: vec![heredoc("EOF", "#!/bin/sh\necho hi\n")],
            dest: "/usr/local/bin/hello".into(),
            ..CopyCommand::default()
        };
        let root = copy_heredocs(&command).unwrap();
        let path = root.path().join("usr/local/bin/hello");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o644);
        assert_eq!((meta.uid(), meta.gid(), meta.mtime()), (0, 0, 0));
    }

    #[test]
    fn several_heredocs_land_in_the_directory_under_their_names() {
        let command = CopyCommand {
            heredocs: vec![heredoc("a.conf", "a=1\n"), heredoc("run.sh", "true\n")],
            dest: "/etc/app/".into(),
            chmod: Some("u+x".into()),
            chown: Some("7:8".into()),
            ..CopyCommand::default()
        };
        let root = copy_heredocs(&command).unwrap();
        for (name, content) in [("a.conf", "a=1\n"), ("run.sh", "true\n")] {
            let path = root.path().join("etc/app").join(name);
            assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o744, "{name}: 0644 then u+x");
            assert_eq!((meta.uid(), meta.gid()), (7, 8));
        }
    }

    /// BuildKit copies each heredoc on its own (dockerfile2llb's convert_copy.go, one
    /// `llb.Copy` per source), so without a trailing slash the last one is the destination.
    #[test]
    fn several_heredocs_to_a_path_without_slash_leave_the_last() {
        let command = CopyCommand {
            heredocs: vec![heredoc("a.conf", "a=1\n"), heredoc("run.sh", "true\n")],
            dest: "/etc/app".into(),
            ..CopyCommand::default()
        };
        let root = copy_heredocs(&command).unwrap();
        let path = root.path().join("etc/app");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "true\n");
    }

    #[test]
    fn heredoc_names_that_are_not_file_names_are_refused() {
        for name in ["", "..", "a/b"] {
            let command = CopyCommand {
                heredocs: vec![heredoc(name, "x")],
                dest: "/x".into(),
                ..CopyCommand::default()
            };
            let error = copy_heredocs(&command).unwrap_err();
            assert!(error.contains("cannot be used as a file name"), "{error}");
        }
    }
}
