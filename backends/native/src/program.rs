//! Finding the program a container process runs (`process.args[0]`), as runc does.
//!
//! runc looks the program up with Go's `exec.LookPath` in the container, with the process's
//! own environment: a name holding a slash is taken as it is (absolute, or relative to the
//! working directory); any other name is searched in the spec's `PATH`, and without a `PATH`
//! it is not found (no default search path). libcontainer 0.7's default executor instead
//! refuses every spec without `PATH`, even for an absolute program, which is what `ctr run
//! --rootfs` and images built `FROM scratch` give; and it execs with `execvp`, whose glibc
//! default path would find a bare name that runc refuses.
//!
//! The error texts are runc's (Go's), so that a user sees the same on every runtime.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::Spec;

/// The program of `spec`'s process, found as runc finds it; the error is runc's message.
pub fn find(spec: &Spec) -> Result<PathBuf, String> {
    let process = spec.process().as_ref().ok_or("spec has no process")?;
    let name = process
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .filter(|a| !a.is_empty())
        .ok_or("args must not be empty")?;
    let path = process
        .env()
        .as_ref()
        .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")));
    look_path(name, path, executable)
}

/// Go's `exec.LookPath(name)` with `PATH` = `path`; `check` says whether a candidate is an
/// executable file (`Err` holds why not, as Go words it).
fn look_path(
    name: &str,
    path: Option<&str>,
    check: impl Fn(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    if name.contains('/') {
        return check(Path::new(name))
            .map(|()| PathBuf::from(name))
            .map_err(|e| format!("exec: {name:?}: {e}"));
    }
    // An unset and an empty PATH alike search nowhere; an empty element means ".".
    let path = path.unwrap_or("");
    let dirs = path.split(':').filter(|_| !path.is_empty());
    for dir in dirs {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        if check(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "exec: {name:?}: executable file not found in $PATH"
    ))
}

/// Go's `findExecutable`: exists (symlinks followed), is not a directory, has an execute bit.
fn executable(p: &Path) -> Result<(), String> {
    let m = std::fs::metadata(p).map_err(|e| format!("stat {}: {}", p.display(), go_errno(&e)))?;
    if !m.is_dir() && m.permissions().mode() & 0o111 != 0 {
        Ok(())
    } else {
        Err("permission denied".into())
    }
}

/// An I/O error as Go prints an errno: "no such file or directory", without Rust's
/// "(os error 2)".
fn go_errno(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_lowercase(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file system of the given executable paths.
    fn fs(files: &'static [&'static str]) -> impl Fn(&Path) -> Result<(), String> {
        move |p| {
            if files.iter().any(|f| Path::new(f) == p) {
                Ok(())
            } else {
                Err(format!("stat {}: no such file or directory", p.display()))
            }
        }
    }

    const BIN: &[&str] = &["/bin/sh", "/usr/bin/env", "./local"];

    #[test]
    fn an_absolute_program_needs_no_path() {
        assert_eq!(
            look_path("/bin/sh", None, fs(BIN)).unwrap(),
            Path::new("/bin/sh")
        );
        assert_eq!(
            look_path("/bin/sh", Some("/nowhere"), fs(BIN)).unwrap(),
            Path::new("/bin/sh")
        );
    }

    #[test]
    fn a_missing_program_with_a_slash_is_named_with_why() {
        let err = look_path("/bin/nope", None, fs(BIN)).unwrap_err();
        assert_eq!(
            err,
            "exec: \"/bin/nope\": stat /bin/nope: no such file or directory"
        );
        assert_eq!(
            look_path("./local", None, fs(BIN)).unwrap(),
            Path::new("./local")
        );
    }

    #[test]
    fn a_bare_name_is_searched_in_path_only() {
        let path = Some("/usr/local/bin:/usr/bin:/bin");
        assert_eq!(
            look_path("sh", path, fs(BIN)).unwrap(),
            Path::new("/bin/sh")
        );
        assert_eq!(
            look_path("env", path, fs(BIN)).unwrap(),
            Path::new("/usr/bin/env")
        );
        for path in [None, Some(""), Some("/usr/local/bin")] {
            assert_eq!(
                look_path("sh", path, fs(BIN)).unwrap_err(),
                "exec: \"sh\": executable file not found in $PATH",
                "PATH {path:?}"
            );
        }
    }

    #[test]
    fn an_empty_path_element_is_the_working_directory() {
        assert_eq!(
            look_path("local", Some("/bin:"), fs(BIN)).unwrap(),
            Path::new("./local")
        );
    }

    #[test]
    fn directories_and_files_without_an_execute_bit_are_not_programs() {
        let dir = std::env::temp_dir().join(format!("strata-program-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let file = dir.join("data");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let prog = dir.join("prog");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(executable(&file).unwrap_err(), "permission denied");
        assert_eq!(
            executable(&dir.join("sub")).unwrap_err(),
            "permission denied"
        );
        assert!(executable(&prog).is_ok(), "owner-only execute bit counts");
        let missing = executable(&dir.join("none")).unwrap_err();
        assert!(
            missing.ends_with("/none: no such file or directory"),
            "{missing}"
        );
        let path = dir.to_str().unwrap();
        assert_eq!(
            look_path("prog", Some(path), executable).unwrap(),
            prog.as_path()
        );
        assert!(look_path("data", Some(path), executable).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_spec_s_env_gives_the_path() {
        let spec = |args: &[&str], env: &[&str]| -> Spec {
            serde_json::from_value(serde_json::json!({
                "ociVersion": "1.0.2",
                "process": { "args": args, "env": env, "cwd": "/" , "user": {"uid": 0, "gid": 0}},
                "root": { "path": "rootfs" },
            }))
            .unwrap()
        };
        assert_eq!(
            find(&spec(&["/bin/sh"], &[])).unwrap(),
            Path::new("/bin/sh")
        );
        let err = find(&spec(&["sh"], &["HOME=/"])).unwrap_err();
        assert!(err.contains("executable file not found in $PATH"), "{err}");
        assert_eq!(
            find(&spec(&["sh"], &["PATH=/bin"])).unwrap(),
            Path::new("/bin/sh")
        );
        assert_eq!(find(&spec(&[], &[])).unwrap_err(), "args must not be empty");
    }
}
