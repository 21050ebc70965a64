//! Shadowing wasmtime-wasi's preview 1 functions with host functions that can still call the
//! originals.
//!
//! wasmtime-wasi's functions find the module's memory as their caller's `memory` export, so a
//! host function cannot call them directly: a small module of trampolines ([`trampolines`]),
//! which imports the module's memory and re-exports it, calls them. It is instantiated in the
//! task's store at the first call that needs it.

use wasmtime::{Caller, Extern, FuncType, Instance, Linker, Module, Val, ValType};

use crate::runner::P1State;

pub const MODULE: &str = "wasi_snapshot_preview1";

/// Who shadows: each has its own trampoline instance in the store ([`Instances`]).
#[derive(Debug, Clone, Copy)]
pub enum User {
    /// [`crate::rofs`]
    ReadOnly = 0,
    /// [`crate::listen`]
    Listen = 1,
}

/// The store's trampoline instances, one per [`User`].
#[derive(Default)]
pub struct Instances([Option<Instance>; 2]);

/// The originals of `funcs` (name, parameter types: `i` i32, `I` i64; each returns an i32
/// errno), as the linker held them before any of them was shadowed.
#[derive(Clone)]
pub struct Originals {
    user: User,
    wasi: Linker<P1State>,
    helper: Module,
    funcs: &'static [(&'static str, &'static str)],
}

impl Originals {
    /// Takes the originals from `linker` (which already holds wasmtime-wasi's preview 1) and
    /// lets it shadow them from here on.
    pub fn take(
        linker: &mut Linker<P1State>,
        user: User,
        funcs: &'static [(&'static str, &'static str)],
    ) -> wasmtime::Result<Originals> {
        let helper = Module::new(linker.engine(), trampolines(funcs))?;
        let wasi = linker.clone();
        linker.allow_shadowing(true);
        Ok(Originals {
            user,
            wasi,
            helper,
            funcs,
        })
    }

    /// The type of `name`, one of the functions taken.
    pub fn func_type(&self, name: &str) -> FuncType {
        let params = self
            .funcs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
            .unwrap_or_default();
        FuncType::new(
            self.wasi.engine(),
            params.chars().map(val_type),
            [ValType::I32],
        )
    }

    /// Calls the original of `name` with `args`; its errno.
    pub fn call(
        &self,
        caller: &mut Caller<'_, P1State>,
        name: &str,
        args: &[Val],
    ) -> wasmtime::Result<i32> {
        let slot = self.user as usize;
        let instance = match caller.data().originals.0[slot] {
            Some(i) => i,
            None => {
                let i = self.instantiate(caller)?;
                caller.data_mut().originals.0[slot] = Some(i);
                i
            }
        };
        let func = instance
            .get_func(&mut *caller, name)
            .ok_or_else(|| wasmtime::format_err!("no trampoline for {name}"))?;
        let mut results = [Val::I32(0)];
        func.call(&mut *caller, args, &mut results)?;
        Ok(results[0].i32().unwrap_or_default())
    }

    /// The trampolines, linked to the calling module's memory and wasmtime-wasi's functions.
    fn instantiate(&self, caller: &mut Caller<'_, P1State>) -> wasmtime::Result<Instance> {
        let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
            wasmtime::bail!("the module exports no memory named `memory`");
        };
        let mut linker = Linker::new(caller.engine());
        linker.define(&mut *caller, "env", "memory", memory)?;
        for &(name, _) in self.funcs {
            let f = self.wasi.get(&mut *caller, MODULE, name)?;
            linker.define(&mut *caller, "wasi", name, f)?;
        }
        linker.instantiate(&mut *caller, &self.helper)
    }
}

pub fn val_type(c: char) -> ValType {
    match c {
        'I' => ValType::I64,
        _ => ValType::I32,
    }
}

/// A module that imports `env.memory` and exports it as `memory`, and for each of `funcs`
/// imports `wasi.NAME` and exports `NAME`, which calls it with its arguments. Hand-encoded
/// (the engine is built without a text parser).
pub fn trampolines(funcs: &[(&str, &str)]) -> Vec<u8> {
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
    let n = funcs.len();
    let (mut types, mut imports, mut bodies, mut exports, mut code) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    name(&mut imports, "env");
    name(&mut imports, "memory");
    imports.extend_from_slice(&[0x02, 0x00, 0x00]); // memory, no maximum, minimum 0
    name(&mut exports, "memory");
    exports.extend_from_slice(&[0x02, 0x00]);
    for (i, &(f, params)) in funcs.iter().enumerate() {
        types.push(0x60);
        leb(&mut types, params.len());
        types.extend(params.chars().map(|c| if c == 'I' { 0x7e } else { 0x7f }));
        types.extend_from_slice(&[0x01, 0x7f]);
        name(&mut imports, "wasi");
        name(&mut imports, f);
        imports.push(0x00);
        leb(&mut imports, i);
        leb(&mut bodies, i);
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
    section(&mut out, 3, n, &bodies);
    section(&mut out, 7, n + 1, &exports);
    section(&mut out, 10, n, &code);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-encoded trampolines are valid WebAssembly with the imports and exports
    /// [`Originals`] links and calls.
    #[test]
    fn trampolines_are_valid() {
        let funcs = [("path_open", "iiiiiIIii"), ("fd_close", "i")];
        let engine = wasmtime::Engine::default();
        let m = Module::new(&engine, trampolines(&funcs)).unwrap();
        let imports: Vec<String> = m
            .imports()
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect();
        assert_eq!(imports, ["env.memory", "wasi.path_open", "wasi.fd_close"]);
        assert_eq!(m.exports().count(), funcs.len() + 1);
        for (name, params) in funcs {
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
