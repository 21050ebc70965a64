//! The compiled-module cache: compile once per module digest and engine configuration, load
//! the compiled form on later starts.
//!
//! An entry is `<sha256 of the wasm bytes>-<engine hash>.cwasm`, where the engine hash covers
//! wasmtime's own compatibility hash (its version, the target and every setting that changes
//! code) and the kind (module or component). The file holds a small header, the SHA-256 of
//! the serialized artifact, and the artifact. It is written to a temporary name and renamed
//! into place, so concurrent first starts of one module each write a whole file and the last
//! rename wins; readers never see a partial one.
//!
//! Loading checks the header and the digest before wasmtime sees a byte (a torn, truncated or
//! corrupted entry is rebuilt), and wasmtime's deserializer then checks that the artifact was
//! made by a compatible engine (a foreign entry is rebuilt too). Only then is it executed.

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::module::WasmKind;

/// Where compiled modules are kept unless `STRATA_WASM_CACHE_DIR` says otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/strata/wasm";
/// The environment variable (of containerd, hence of the shim) naming the cache directory;
/// empty or `off` disables the cache.
pub const CACHE_DIR_ENV: &str = "STRATA_WASM_CACHE_DIR";

const MAGIC: &[u8; 8] = b"STRATAW1";
const HEADER_LEN: usize = MAGIC.len() + 1 + 32;

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A compiled module or component.
pub enum Compiled {
    Module(Module),
    Component(Component),
}

/// How a load went, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The entry was there and valid.
    Hit,
    /// No entry: compiled and stored.
    Miss,
    /// An entry was there but damaged or foreign: compiled again and replaced.
    Rebuilt,
    /// No cache directory: compiled in memory only.
    Disabled,
}

/// The cache directory from the environment, else the default; None when disabled.
pub fn dir_from_env() -> Option<PathBuf> {
    match std::env::var(CACHE_DIR_ENV) {
        Ok(v) if v.is_empty() || v == "off" => None,
        Ok(v) => Some(PathBuf::from(v)),
        Err(_) => Some(PathBuf::from(DEFAULT_CACHE_DIR)),
    }
}

/// Feeds `Hash` output into SHA-256, so that the key is stable across processes (std's
/// `DefaultHasher` is not promised to be).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        let d = self.0.clone().finalize();
        u64::from_le_bytes(d[..8].try_into().unwrap_or_default())
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The file name of the entry for `wasm` compiled by `engine`.
pub fn entry_name(engine: &Engine, kind: WasmKind, wasm: &[u8]) -> String {
    let mut h = ShaHasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    h.write(match kind {
        WasmKind::Module => b"module",
        WasmKind::Component => b"component",
    });
    let engine_hash = h.0.finalize();
    format!(
        "{}-{}.cwasm",
        hex(&Sha256::digest(wasm)),
        hex(&engine_hash[..8])
    )
}

fn kind_byte(kind: WasmKind) -> u8 {
    match kind {
        WasmKind::Module => b'm',
        WasmKind::Component => b'c',
    }
}

/// Compiles `wasm`, or loads it from `dir` when a valid entry is there.
pub fn load_or_compile(
    engine: &Engine,
    kind: WasmKind,
    wasm: &[u8],
    dir: Option<&Path>,
) -> wasmtime::Result<(Compiled, Outcome)> {
    let Some(dir) = dir else {
        return Ok((compile(engine, kind, wasm)?, Outcome::Disabled));
    };
    let path = dir.join(entry_name(engine, kind, wasm));
    let mut outcome = Outcome::Miss;
    if let Ok(bytes) = std::fs::read(&path) {
        match verified_payload(&bytes, kind) {
            Some(payload) => match trusted::deserialize(engine, kind, payload) {
                Ok(c) => return Ok((c, Outcome::Hit)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "foreign compiled module in the cache; rebuilding");
                }
            },
            None => {
                tracing::warn!(path = %path.display(), "corrupt compiled module in the cache; rebuilding");
            }
        }
        outcome = Outcome::Rebuilt;
    }
    let compiled = compile(engine, kind, wasm)?;
    if let Err(e) = store(&compiled, kind, dir, &path) {
        // A read-only or full disk only costs the next start a compile.
        tracing::warn!(path = %path.display(), error = %e, "cannot store the compiled module");
    }
    Ok((compiled, outcome))
}

fn compile(engine: &Engine, kind: WasmKind, wasm: &[u8]) -> wasmtime::Result<Compiled> {
    Ok(match kind {
        WasmKind::Module => Compiled::Module(Module::new(engine, wasm)?),
        WasmKind::Component => Compiled::Component(Component::new(engine, wasm)?),
    })
}

/// The artifact inside an entry, if the header and the digest check out.
fn verified_payload(bytes: &[u8], kind: WasmKind) -> Option<&[u8]> {
    if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    if bytes[MAGIC.len()] != kind_byte(kind) {
        return None;
    }
    let digest = &bytes[MAGIC.len() + 1..HEADER_LEN];
    let payload = &bytes[HEADER_LEN..];
    (Sha256::digest(payload).as_slice() == digest).then_some(payload)
}

fn store(compiled: &Compiled, kind: WasmKind, dir: &Path, path: &Path) -> std::io::Result<()> {
    let payload = match compiled {
        Compiled::Module(m) => m.serialize(),
        Compiled::Component(c) => c.serialize(),
    }
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&[kind_byte(kind)])?;
        f.write_all(&Sha256::digest(&payload))?;
        f.write_all(&payload)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The one place that turns bytes into executable code without compiling them.
#[allow(unsafe_code)]
mod trusted {
    use super::*;

    /// Deserializes an artifact whose digest [`verified_payload`] has just checked.
    pub(super) fn deserialize(
        engine: &Engine,
        kind: WasmKind,
        payload: &[u8],
    ) -> wasmtime::Result<Compiled> {
        // SAFETY: wasmtime requires that the bytes come from its own `serialize` of a trusted
        // module, because it maps them as code without validating them. These bytes are the
        // payload of an entry in Strata's cache directory (root-owned, written only by this
        // module, whole files renamed into place), and the caller has checked that their
        // SHA-256 equals the digest stored beside them at write time, so they are exactly
        // what `store` serialized; torn or altered files fail that check and are recompiled.
        // wasmtime itself then rejects artifacts of another version or configuration.
        unsafe {
            Ok(match kind {
                WasmKind::Module => Compiled::Module(Module::deserialize(engine, payload)?),
                WasmKind::Component => {
                    Compiled::Component(Component::deserialize(engine, payload)?)
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        crate::runner::engine().unwrap()
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("strata-wasm-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn module(n: i32) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(module (func (export "f") (result i32) i32.const {n}))"#
        ))
        .unwrap()
    }

    fn call(c: &Compiled) -> i32 {
        let Compiled::Module(m) = c else {
            panic!("not a module")
        };
        let mut store = wasmtime::Store::new(m.engine(), ());
        store.set_epoch_deadline(1);
        let i = wasmtime::Instance::new(&mut store, m, &[]).unwrap();
        i.get_typed_func::<(), i32>(&mut store, "f")
            .unwrap()
            .call(&mut store, ())
            .unwrap()
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn miss_then_hit() {
        let e = engine();
        let dir = tmpdir("hit");
        let wasm = module(7);
        let (c, o) = load_or_compile(&e, WasmKind::Module, &wasm, Some(&dir)).unwrap();
        assert_eq!((call(&c), o), (7, Outcome::Miss));
        let (c, o) = load_or_compile(&e, WasmKind::Module, &wasm, Some(&dir)).unwrap();
        assert_eq!((call(&c), o), (7, Outcome::Hit));
        assert_eq!(entries(&dir).len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_and_foreign_entries_are_rebuilt() {
        let e = engine();
        let dir = tmpdir("corrupt");
        let wasm = module(11);
        load_or_compile(&e, WasmKind::Module, &wasm, Some(&dir)).unwrap();
        let path = dir.join(entry_name(&e, WasmKind::Module, &wasm));

        // A flipped byte in the artifact: the digest no longer matches.
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = HEADER_LEN + (bytes.len() - HEADER_LEN) / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (c, o) = load_or_compile(&e, WasmKind::Module, &wasm, Some(&dir)).unwrap();
        assert_eq!((call(&c), o), (11, Outcome::Rebuilt));
        assert_eq!(
            load_or_compile(&e, WasmKind::Module, &wasm, Some(&dir))
                .unwrap()
                .1,
            Outcome::Hit
        );

        // A truncated file.
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len / 3)
            .unwrap();
        assert_eq!(
            load_or_compile(&e, WasmKind::Module, &wasm, Some(&dir))
                .unwrap()
                .1,
            Outcome::Rebuilt
        );

        // A well-formed entry whose artifact wasmtime did not make (digest matches).
        let junk = b"this is not a wasmtime artifact".to_vec();
        let mut foreign = MAGIC.to_vec();
        foreign.push(b'm');
        foreign.extend_from_slice(&Sha256::digest(&junk));
        foreign.extend_from_slice(&junk);
        std::fs::write(&path, &foreign).unwrap();
        let (c, o) = load_or_compile(&e, WasmKind::Module, &wasm, Some(&dir)).unwrap();
        assert_eq!((call(&c), o), (11, Outcome::Rebuilt));
        assert_ne!(std::fs::read(&path).unwrap(), foreign);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_first_loads() {
        let e = engine();
        let dir = tmpdir("concurrent");
        let wasm = module(3);
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (e, dir, wasm) = (e.clone(), dir.clone(), wasm.clone());
                std::thread::spawn(move || {
                    let (c, _) = load_or_compile(&e, WasmKind::Module, &wasm, Some(&dir)).unwrap();
                    call(&c)
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 3);
        }
        assert_eq!(entries(&dir).len(), 1, "{:?}", entries(&dir));
        assert_eq!(
            load_or_compile(&e, WasmKind::Module, &wasm, Some(&dir))
                .unwrap()
                .1,
            Outcome::Hit
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn key_differs_by_module_and_kind() {
        let e = engine();
        let a = entry_name(&e, WasmKind::Module, &module(1));
        assert_ne!(a, entry_name(&e, WasmKind::Module, &module(2)));
        assert_ne!(a, entry_name(&e, WasmKind::Component, &module(1)));
        assert_eq!(a, entry_name(&e, WasmKind::Module, &module(1)));
    }
}
