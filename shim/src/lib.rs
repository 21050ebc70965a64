//! strata shim library
