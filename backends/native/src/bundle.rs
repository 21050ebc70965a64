//! The bundle's spec made readable to libcontainer where runc reads more than it does.
//!
//! libcontainer reads the spec from `<bundle>/config.json` itself. Its 0.7 takes
//! `linux.rootfsPropagation` only as `shared`, `slave`, `private` or `unbindable` and fails
//! the create on anything else ("failed to prepare rootfs"), while runc also takes the
//! recursive forms `rshared`, `rslave`, `rprivate` and `runbindable`, which containerd's CRI
//! plugin writes for every container with a `Bidirectional` or `HostToContainer` mount. Such
//! a value is rewritten in the bundle to its plain form before the create. libcontainer
//! applies the plain form recursively to the container's mounts before `pivot_root` (as runc
//! does for the `r` forms), so `rslave` behaves as under runc; for `rshared`, the container's
//! `/` is made shared again after `pivot_root` as under runc, but not recursively (its other
//! mounts keep what their own options say: a `Bidirectional` bind mount says `rshared`).

use std::path::Path;

use oci_spec::runtime::Spec;
use strata_backend::{Error, Result};

/// The form libcontainer takes of a `rootfsPropagation` value it does not take as it is.
fn plain_propagation(value: &str) -> Option<&'static str> {
    match value {
        "rshared" => Some("shared"),
        "rslave" => Some("slave"),
        "rprivate" => Some("private"),
        "runbindable" => Some("unbindable"),
        _ => None,
    }
}

/// Rewrites `<bundle>/config.json` (whose parsed form is `spec`) where libcontainer would
/// refuse what runc takes; leaves it untouched otherwise.
pub fn prepare(bundle: &Path, spec: &Spec) -> Result<()> {
    let Some(plain) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(plain_propagation)
    else {
        return Ok(());
    };
    let path = bundle.join("config.json");
    let text =
        std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let mut json: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
    let Some(slot) = json.pointer_mut("/linux/rootfsPropagation") else {
        return Ok(());
    };
    *slot = serde_json::Value::from(plain);
    // Whole or not at all: a new file renamed over the old one.
    let tmp = bundle.join(".config.json.strata");
    let bytes = serde_json::to_vec(&json).unwrap_or_default();
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("rewrite {}", path.display()), e)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recursive_forms_become_plain_ones() {
        assert_eq!(plain_propagation("rshared"), Some("shared"));
        assert_eq!(plain_propagation("rslave"), Some("slave"));
        assert_eq!(plain_propagation("rprivate"), Some("private"));
        assert_eq!(plain_propagation("runbindable"), Some("unbindable"));
        for taken in ["shared", "slave", "private", "unbindable", "", "bogus"] {
            assert_eq!(plain_propagation(taken), None, "{taken}");
        }
    }

    fn bundle_with(propagation: Option<&str>) -> (std::path::PathBuf, Spec) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "strata-bundle-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut json = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": { "path": "rootfs" },
            "linux": { "namespaces": [{ "type": "mount" }] },
            "annotations": { "keep": "me" },
        });
        if let Some(p) = propagation {
            json["linux"]["rootfsPropagation"] = p.into();
        }
        std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
        let spec = Spec::load(dir.join("config.json")).unwrap();
        (dir, spec)
    }

    #[test]
    fn the_bundle_is_rewritten_only_where_needed() {
        let (dir, spec) = bundle_with(Some("rslave"));
        prepare(&dir, &spec).unwrap();
        let back = Spec::load(dir.join("config.json")).unwrap();
        let linux = back.linux().as_ref().unwrap();
        assert_eq!(linux.rootfs_propagation().as_deref(), Some("slave"));
        assert_eq!(linux.namespaces().as_ref().unwrap().len(), 1);
        assert_eq!(back.annotations().as_ref().unwrap()["keep"], "me");
        assert!(!dir.join(".config.json.strata").exists());
        std::fs::remove_dir_all(&dir).unwrap();

        for kept in [None, Some("shared")] {
            let (dir, spec) = bundle_with(kept);
            let before = std::fs::read(dir.join("config.json")).unwrap();
            prepare(&dir, &spec).unwrap();
            assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), before);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
