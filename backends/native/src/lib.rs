//! Strata's native backend (placeholder while it is written).
