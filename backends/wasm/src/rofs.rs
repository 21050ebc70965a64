//! The kernel's EROFS as WASI's `rofs` for a preview 1 module.
//!
//! A read-only preopen is a read-only mount of the runner's own ([`crate::readonly`]), so a
//! write there fails in the kernel with EROFS. wasmtime-wasi 48 has no arm for EROFS in its
//! errno mapping (`from_raw_os_error` in its `filesystem.rs`) and answers WASI `io` (29),
//! which a program prints as "I/O error". The functions that change a directory are shadowed
//! here: each calls wasmtime-wasi's own and, when that answers `io` for a directory
//! descriptor that is a read-only preopen, answers `rofs` (69, "Read-only file system")
//! instead, as runc's kernel does. Nothing else changes: other errors, other descriptors and
//! every other function are wasmtime-wasi's.

use wasmtime::{Caller, Linker, Val};

use crate::runner::P1State;
use crate::shadow::{Originals, User, MODULE};

/// WASI preview 1's `io` errno.
const IO: i32 = 29;
/// WASI preview 1's `rofs` errno.
const ROFS: i32 = 69;

/// The functions that write into a directory: name, parameter types (`i` i32, `I` i64; each
/// returns its errno as an i32).
const WRITERS: &[(&str, &str)] = &[
    ("path_open", "iiiiiIIii"),
    ("path_create_directory", "iii"),
    ("path_remove_directory", "iii"),
    ("path_unlink_file", "iii"),
    ("path_rename", "iiiiii"),
    ("path_symlink", "iiiii"),
    ("path_link", "iiiiiii"),
    ("path_filestat_set_times", "iiiiIIi"),
];

/// Which parameters of each of [`WRITERS`] are the directories written into.
fn dirs_of(name: &str) -> &'static [usize] {
    match name {
        "path_rename" => &[0, 3],
        "path_symlink" => &[2],
        "path_link" => &[4],
        _ => &[0],
    }
}

/// Shadows [`WRITERS`] in `linker`, which already holds wasmtime-wasi's preview 1; `ro_fds`
/// are the descriptors of the read-only preopens.
pub fn shadow(linker: &mut Linker<P1State>, ro_fds: &[i32]) -> wasmtime::Result<()> {
    if ro_fds.is_empty() {
        return Ok(());
    }
    let originals = Originals::take(linker, User::ReadOnly, WRITERS)?;
    for &(name, _) in WRITERS {
        let (originals, ro_fds) = (originals.clone(), ro_fds.to_vec());
        linker.func_new(
            MODULE,
            name,
            originals.func_type(name),
            move |mut caller: Caller<'_, P1State>, args: &[Val], results: &mut [Val]| {
                let errno = originals.call(&mut caller, name, args)?;
                let into_ro = dirs_of(name)
                    .iter()
                    .any(|&i| args[i].i32().is_some_and(|fd| ro_fds.contains(&fd)));
                results[0] = Val::I32(if into_ro && errno == IO { ROFS } else { errno });
                Ok(())
            },
        )?;
    }
    Ok(())
}
