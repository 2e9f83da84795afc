//! Whether this machine can execute binaries of a platform: natively, or through a
//! binfmt_misc handler (qemu-user) registered with the kernel with the `F` flag
//! (`kiln_sandbox::binfmt` says why only that counts). RUN in a stage for another platform
//! needs one of the two; COPY-only stages never do.

use std::path::Path;

use kiln_image::Platform;
use kiln_sandbox::binfmt::{BINFMT_MISC, Emulation, INSTALL_HINT, emulation_in};

/// Why a platform cannot run here, as a message for the RUN that needs it; `None` if it can.
pub(crate) fn cannot_run(wanted: &Platform) -> Option<String> {
    cannot_run_as("RUN", wanted)
}

/// Why `subject` (a RUN, a container) cannot run binaries of `wanted` here, saying how to make
/// it possible; `None` if it can.
pub fn cannot_run_as(subject: &str, wanted: &Platform) -> Option<String> {
    // `KILN_BINFMT_MISC` points elsewhere, so that a test can see the machine without
    // handlers (they are kernel-wide: unregistering them would affect everything else).
    let dir = std::env::var_os("KILN_BINFMT_MISC").unwrap_or_else(|| BINFMT_MISC.into());
    cannot_run_on(subject, wanted, &Platform::host(), Path::new(&dir))
}

fn cannot_run_on(
    subject: &str,
    wanted: &Platform,
    host: &Platform,
    binfmt_dir: &Path,
) -> Option<String> {
    if runs_natively(wanted, host) {
        return None;
    }
    match emulation_in(binfmt_dir, qemu_name(&wanted.architecture)) {
        Emulation::Ready(_) => None,
        Emulation::NotFixed(h) => Some(format!(
            "{subject} needs {wanted} but this machine runs {host}, and its binfmt_misc handler {} \
             lacks the F flag (flags {:?}), so its interpreter {} is not found inside a \
             sandbox's root; register it again with F: kiln system binfmt --install",
            h.name, h.flags, h.interpreter
        )),
        Emulation::Missing if wanted.os != host.os => Some(format!(
            "{subject} needs {wanted} but this machine runs {host} and has no emulation \
             (binfmt_misc/qemu) registered; qemu-user emulates only other Linux CPUs"
        )),
        Emulation::Missing => Some(format!(
            "{subject} needs {wanted} but this machine runs {host} and has no emulation \
             (binfmt_misc/qemu) registered; to emulate it: {INSTALL_HINT}"
        )),
    }
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
        assert_eq!(
            cannot_run_on("RUN", &p("linux/amd64"), &host, binfmt.path()),
            None
        );
        assert_eq!(
            cannot_run_on("RUN", &p("linux/386"), &host, binfmt.path()),
            None
        );
        assert_eq!(
            cannot_run_on("RUN", &p("linux/arm64"), &host, binfmt.path()).as_deref(),
            Some(
                "RUN needs linux/arm64 but this machine runs linux/amd64 and has no emulation \
                 (binfmt_misc/qemu) registered; to emulate it: apt-get install \
                 qemu-user-static, then kiln system binfmt --install"
            )
        );
        std::fs::write(
            binfmt.path().join("qemu-aarch64"),
            "disabled\ninterpreter /usr/bin/qemu-aarch64\nflags: F\n",
        )
        .unwrap();
        assert!(cannot_run_on("RUN", &p("linux/arm64"), &host, binfmt.path()).is_some());
        std::fs::write(
            binfmt.path().join("qemu-aarch64"),
            "enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: OC\n",
        )
        .unwrap();
        let not_fixed = cannot_run_on("RUN", &p("linux/arm64"), &host, binfmt.path()).unwrap();
        assert!(not_fixed.contains("lacks the F flag"), "{not_fixed}");
        std::fs::write(
            binfmt.path().join("qemu-aarch64"),
            "enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: OCF\n",
        )
        .unwrap();
        assert_eq!(
            cannot_run_on("RUN", &p("linux/arm64"), &host, binfmt.path()),
            None
        );
        assert!(cannot_run_on("RUN", &p("windows/amd64"), &host, binfmt.path()).is_some());
        assert_eq!(
            cannot_run_on(
                "RUN",
                &p("linux/arm64"),
                &p("linux/arm64/v8"),
                binfmt.path()
            ),
            None
        );
    }
}
