//! strata shim library

pub mod check;
