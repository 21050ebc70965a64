//! What the host's KVM is.
