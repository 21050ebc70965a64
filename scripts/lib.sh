# Shared by the scripts: where things are. Source it, do not run it.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/strata/target}
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH=$HOME/.cargo/bin:$PATH
jobs=${JOBS:-$(nproc)}

# Tears down private containerds whose test process is gone (a run killed hard).
sweep() {
    local bin=$CARGO_TARGET_DIR/debug/strata-testenv
    [ -x "$bin" ] && "$bin" sweep || true
}
