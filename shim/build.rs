//! Release builds of the shim lay its functions out in the order `text-order.txt` gives: the
//! code a container's life runs, packed together, so that each shim process maps little more
//! of the binary than it runs (the kernel maps 64 KiB around every touched page).
//! `scripts/order-shim-text` regenerates the file; a name it lists that no longer exists is
//! skipped by the linker, so a stale file costs memory, never correctness.

use std::path::Path;

fn main() {
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("text-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=STRATA_TEXT_ORDER");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    // STRATA_TEXT_ORDER=off: the compiler's own layout (to profile from scratch).
    let wanted = std::env::var("STRATA_TEXT_ORDER").as_deref() != Ok("off");
    if !(release && linux && wanted && order.exists()) {
        return;
    }
    // GNU ld cannot order functions from a list; LLVM's lld can (Debian's `lld`).
    let lld = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("ld.lld").exists()))
        .unwrap_or(false);
    if !lld {
        println!("cargo:warning=ld.lld not found: the shim's functions are not reordered");
        return;
    }
    let bin = "containerd-shim-strata-v2";
    println!("cargo:rustc-link-arg-bin={bin}=-fuse-ld=lld");
    println!("cargo:rustc-link-arg-bin={bin}=-Wl,--no-warn-symbol-ordering");
    println!(
        "cargo:rustc-link-arg-bin={bin}=-Wl,--symbol-ordering-file={}",
        order.display()
    );
}
