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

use wasmtime::{Caller, Extern, FuncType, Instance, Linker, Module, Val, ValType};

use crate::runner::P1State;

const MODULE: &str = "wasi_snapshot_preview1";
/// WASI preview 1's `io` errno.
const IO: i32 = 29;
/// WASI preview 1's `rofs` errno.
const ROFS: i32 = 69;

/// The functions that write into a directory: name, parameter types (`i` i32, `I` i64; each
/// returns its errno as an i32), which parameters are the directories written into.
const WRITERS: &[(&str, &str, &[usize])] = &[
    ("path_open", "iiiiiIIii", &[0]),
    ("path_create_directory", "iii", &[0]),
    ("path_remove_directory", "iii", &[0]),
    ("path_unlink_file", "iii", &[0]),
    ("path_rename", "iiiiii", &[0, 3]),
    ("path_symlink", "iiiii", &[2]),
    ("path_link", "iiiiiii", &[4]),
    ("path_filestat_set_times", "iiiiIIi", &[0]),
];

/// The store's trampoline instance, made at the first call of a shadowed function.
#[derive(Default)]
pub struct Originals {
    trampolines: Option<Instance>,
}

/// Shadows [`WRITERS`] in `linker`, which already holds wasmtime-wasi's preview 1; `ro_fds`
/// are the descriptors of the read-only preopens (3 is the first preopen).
///
/// wasmtime-wasi's functions find the module's memory as their caller's `memory` export, so
/// they cannot be called from a host function directly: a small module of trampolines
/// ([`trampolines`]), which imports the module's memory and re-exports it, calls them.
pub fn shadow(linker: &mut Linker<P1State>, ro_fds: &[i32]) -> wasmtime::Result<()> {
    if ro_fds.is_empty() {
        return Ok(());
    }
    let wasi = linker.clone();
    let engine = linker.engine().clone();
    let helper = Module::new(&engine, trampolines())?;
    linker.allow_shadowing(true);
    for &(name, params, dirs) in WRITERS {
        let ty = FuncType::new(&engine, params.chars().map(val_type), [ValType::I32]);
        let (wasi, helper, ro_fds) = (wasi.clone(), helper.clone(), ro_fds.to_vec());
        linker.func_new(
            MODULE,
            name,
            ty,
            move |mut caller: Caller<'_, P1State>, args: &[Val], results: &mut [Val]| {
                let instance = match caller.data().originals.trampolines {
                    Some(i) => i,
                    None => {
                        let i = instantiate(&mut caller, &wasi, &helper)?;
                        caller.data_mut().originals.trampolines = Some(i);
                        i
                    }
                };
                let func = instance
                    .get_func(&mut caller, name)
                    .ok_or_else(|| wasmtime::format_err!("no trampoline for {name}"))?;
                func.call(&mut caller, args, results)?;
                let into_ro = dirs
                    .iter()
                    .any(|&i| args[i].i32().is_some_and(|fd| ro_fds.contains(&fd)));
                if into_ro && results[0].i32() == Some(IO) {
                    results[0] = Val::I32(ROFS);
                }
                Ok(())
            },
        )?;
    }
    Ok(())
}

fn val_type(c: char) -> ValType {
    match c {
        'I' => ValType::I64,
        _ => ValType::I32,
    }
}

/// The trampolines, linked to the calling module's memory and wasmtime-wasi's functions.
fn instantiate(
    caller: &mut Caller<'_, P1State>,
    wasi: &Linker<P1State>,
    helper: &Module,
) -> wasmtime::Result<Instance> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        wasmtime::bail!("the module exports no memory named `memory`");
    };
    let mut linker = Linker::new(caller.engine());
    linker.define(&mut *caller, "env", "memory", memory)?;
    for &(name, _, _) in WRITERS {
        let f = wasi.get(&mut *caller, MODULE, name)?;
        linker.define(&mut *caller, "wasi", name, f)?;
    }
    linker.instantiate(&mut *caller, helper)
}

/// A module that imports `env.memory` and exports it as `memory`, and for each of
/// [`WRITERS`] imports `wasi.NAME` and exports `NAME`, which calls it with its arguments.
/// Hand-encoded (the engine is built without a text parser).
fn trampolines() -> Vec<u8> {
    fn leb(out: &mut Vec<u8>, mut n: usize) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn name(out: &mut Vec<u8>, s: &str) {
        leb(out, s.len());
        out.extend_from_slice(s.as_bytes());
    }
    fn section(out: &mut Vec<u8>, id: u8, count: usize, body: &[u8]) {
        let mut content = Vec::new();
        leb(&mut content, count);
        content.extend_from_slice(body);
        out.push(id);
        leb(out, content.len());
        out.extend_from_slice(&content);
    }
    let n = WRITERS.len();
    let (mut types, mut imports, mut funcs, mut exports, mut code) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    name(&mut imports, "env");
    name(&mut imports, "memory");
    imports.extend_from_slice(&[0x02, 0x00, 0x00]); // memory, no maximum, minimum 0
    name(&mut exports, "memory");
    exports.extend_from_slice(&[0x02, 0x00]);
    for (i, &(f, params, _)) in WRITERS.iter().enumerate() {
        types.push(0x60);
        leb(&mut types, params.len());
        types.extend(params.chars().map(|c| if c == 'I' { 0x7e } else { 0x7f }));
        types.extend_from_slice(&[0x01, 0x7f]);
        name(&mut imports, "wasi");
        name(&mut imports, f);
        imports.push(0x00);
        leb(&mut imports, i);
        leb(&mut funcs, i);
        name(&mut exports, f);
        exports.push(0x00);
        leb(&mut exports, n + i);
        let mut body = vec![0x00]; // no locals
        for p in 0..params.len() {
            body.push(0x20); // local.get
            leb(&mut body, p);
        }
        body.push(0x10); // call
        leb(&mut body, i);
        body.push(0x0b); // end
        leb(&mut code, body.len());
        code.extend_from_slice(&body);
    }
    let mut out = b"\0asm\x01\0\0\0".to_vec();
    section(&mut out, 1, n, &types);
    section(&mut out, 2, n + 1, &imports);
    section(&mut out, 3, n, &funcs);
    section(&mut out, 7, n + 1, &exports);
    section(&mut out, 10, n, &code);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-encoded trampolines are valid WebAssembly with the imports and exports
    /// [`shadow`] links and calls.
    #[test]
    fn trampolines_are_valid() {
        let engine = wasmtime::Engine::default();
        let m = Module::new(&engine, trampolines()).unwrap();
        let imports: Vec<String> = m
            .imports()
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect();
        assert_eq!(imports[0], "env.memory");
        assert_eq!(imports[1], "wasi.path_open");
        assert_eq!(m.exports().count(), WRITERS.len() + 1);
        for &(name, params, _) in WRITERS {
            let Some(wasmtime::ExternType::Func(ty)) = m.get_export(name) else {
                panic!("no export {name}");
            };
            let got: Vec<ValType> = ty.params().collect();
            assert_eq!(got.len(), params.len(), "{name}");
            for (g, c) in got.iter().zip(params.chars()) {
                assert!(ValType::eq(g, &val_type(c)), "{name}");
            }
        }
    }
}
