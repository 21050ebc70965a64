//! `strata vm run`.
