# Shared by the scripts: where things are. Source it, do not run it.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/strata/target}
# Incremental state only pays for edit-compile loops; in the scripts' one-shot builds it grew
# the shared cache by gigabytes.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH=$HOME/.cargo/bin:$PATH
jobs=${JOBS:-$(nproc)}

# Keeps room for a build in the shared build cache, which grows with every build of changed
# code (cargo never removes stale artifacts; this machine's disk is shared and filled up in
# session 9): below 20 GiB free, files of the cache older than a day go (cargo rebuilds what
# it still needs).
prune_build_cache() {
    local parent avail_kb
    parent=$(dirname "$CARGO_TARGET_DIR")
    mkdir -p "$parent"
    avail_kb=$(df -Pk "$parent" | awk 'NR == 2 { print $4 }')
    if [ "${avail_kb:-0}" -lt $((20 * 1024 * 1024)) ] && [ -d "$CARGO_TARGET_DIR" ]; then
        echo "== $((avail_kb / 1024)) MiB free: removing build files older than a day from $CARGO_TARGET_DIR"
        find "$CARGO_TARGET_DIR" -type f -mtime +0 -delete 2>/dev/null || true
        df -Ph "$parent" | awk 'NR == 2 { print "== now free: " $4 }'
    fi
}

# Tears down private containerds whose test process is gone (a run killed hard).
sweep() {
    local bin=$CARGO_TARGET_DIR/debug/strata-testenv
    [ -x "$bin" ] && "$bin" sweep || true
}

# The directory cargo puts profile $1's output in.
profile_dir() {
    echo "$CARGO_TARGET_DIR/$([ "$1" = dev ] && echo debug || echo "$1")"
}

# Builds the shim, strata and strata-wasm-runner in cargo profile $1 and prints their
# directory: for `release`, as they are installed (scripts/build-shim: static, laid out).
build_shim_dir() {
    if [ "$1" = release ]; then
        "$here/scripts/build-shim"
    else
        cargo build --profile "$1" -p strata-shim --bins -j "$jobs" >&2
        profile_dir "$1"
    fi
}
