//! Whether this machine can execute binaries of a platform: natively, or through a
//! binfmt_misc handler (qemu-user) registered with the kernel. RUN in a stage for another
//! platform needs one of the two; COPY-only stages never do.

use std::path::Path;

use kiln_image::Platform;

/// Where the kernel lists binfmt_misc handlers.
const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// Why a platform cannot run here, as a message for the RUN that needs it; `None` if it can.
pub(crate) fn cannot_run(wanted: &Platform) -> Option<String> {
    cannot_run_on(wanted, &Platform::host(), Path::new(BINFMT_MISC))
}

fn cannot_run_on(wanted: &Platform, host: &Platform, binfmt_dir: &Path) -> Option<String> {
    if runs_natively(wanted, host) || emulator_registered(wanted, binfmt_dir) {
        return None;
    }
    Some(format!(
        "RUN needs {wanted} but this machine runs {host} and has no emulation \
         (binfmt_misc/qemu) registered"
    ))
}

/// Same platform, or one the host CPU executes itself (32-bit x86 on amd64, arm on arm64 is
/// not assumed: many arm64 CPUs lack AArch32).
fn runs_natively(wanted: &Platform, host: &Platform) -> bool {
    if wanted.os != host.os {
        return false;
    }
    host.matches(wanted) || (host.architecture == "amd64" && wanted.architecture == "386")
}

/// The names qemu-user's binfmt_misc entries use (`qemu-aarch64`, …) for an OCI architecture.
fn qemu_name(architecture: &str) -> &str {
    match architecture {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        "mips64le" => "mips64el",
        "mipsle" => "mipsel",
        "loong64" => "loongarch64",
        other => other,
    }
}

/// True when an enabled binfmt_misc entry for the architecture exists, under qemu's usual
/// name (`qemu-aarch64`) or the bare one some distributions register (`aarch64`).
fn emulator_registered(wanted: &Platform, binfmt_dir: &Path) -> bool {
    let name = qemu_name(&wanted.architecture);
    [format!("qemu-{name}"), name.to_string()]
        .iter()
        .filter_map(|entry| std::fs::read_to_string(binfmt_dir.join(entry)).ok())
        .any(|text| text.lines().next() == Some("enabled"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn native_and_emulated_platforms() {
        let binfmt = tempfile::tempdir().unwrap();
        let host = p("linux/amd64");
        assert_eq!(cannot_run_on(&p("linux/amd64"), &host, binfmt.path()), None);
        assert_eq!(cannot_run_on(&p("linux/386"), &host, binfmt.path()), None);
        assert_eq!(
            cannot_run_on(&p("linux/arm64"), &host, binfmt.path()).as_deref(),
            Some(
                "RUN needs linux/arm64 but this machine runs linux/amd64 and has no emulation \
                 (binfmt_misc/qemu) registered"
            )
        );
        std::fs::write(
            binfmt.path().join("qemu-aarch64"),
            "disabled\ninterpreter /usr/bin/qemu-aarch64\n",
        )
        .unwrap();
        assert!(cannot_run_on(&p("linux/arm64"), &host, binfmt.path()).is_some());
        std::fs::write(
            binfmt.path().join("qemu-aarch64"),
            "enabled\ninterpreter /usr/bin/qemu-aarch64\n",
        )
        .unwrap();
        assert_eq!(cannot_run_on(&p("linux/arm64"), &host, binfmt.path()), None);
        assert!(cannot_run_on(&p("windows/amd64"), &host, binfmt.path()).is_some());
        assert_eq!(
            cannot_run_on(&p("linux/arm64"), &p("linux/arm64/v8"), binfmt.path()),
            None
        );
    }
}
