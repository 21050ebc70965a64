//! What the runner gives up in the container before the module runs.

use caps::CapSet;

/// Clears every capability set of this process (ambient, bounding, inheritable, effective,
/// permitted), whatever the spec granted: the runner needs none, and a module that got out
/// of wasmtime's sandbox must find none. The bounding set goes first, while CAP_SETPCAP is
/// still effective.
pub fn drop_all_capabilities() -> Result<(), String> {
    for set in [
        CapSet::Ambient,
        CapSet::Bounding,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| format!("drop the {set:?} capabilities: {e}"))?;
    }
    Ok(())
}
