//! The tier registry: every tier this build of Strata has, in one list. The service builds
//! backends from it, `delete` cleans up after a dead shim through it, the configuration checks
//! each tier's table with it, and `strata check` reports the tiers it holds.

use strata_backend::{BackendKind, Tier};

/// Every tier of this build.
pub static TIERS: &[&dyn Tier] = &[
    &strata_native::TIER,
    &strata_sentry::TIER,
    &strata_microvm::TIER,
    &strata_wasm::TIER,
];

/// The registry's entry for `kind`, if this build has that tier.
pub fn tier(kind: BackendKind) -> Option<&'static dyn Tier> {
    TIERS.iter().copied().find(|t| t.kind() == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tier_once() {
        for kind in BackendKind::ALL {
            assert_eq!(
                TIERS.iter().filter(|t| t.kind() == kind).count(),
                1,
                "{kind}"
            );
        }
    }
}
