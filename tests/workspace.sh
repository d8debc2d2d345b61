# Sourced by the test scripts: the cargo selections they share.
#
# cargo resolves features per selection of packages, and writes a dependency built
# with other features over the same files: `cargo build -p pykiln-cli` after
# `cargo test --workspace` (tests/run) rebuilds serde, syn, tracing and everything
# above them, and the next workspace build rebuilds them back (about two minutes on 2
# cores each way). So every script selects the whole workspace with its tests, as
# tests/run does, and names only the targets it wants built or run.

# Build the pykiln CLI as tests/run builds it (nothing to do after it) and print its path.
pykiln_cli() {
  cargo test --release --workspace --no-run --quiet --test cli >&2
  echo "$PWD/target/release/pykiln"
}

# `cargo test` of the demo's end-to-end tests (the root package's tests/*.rs), with
# ARGS after the target selection (`--no-run`, `-- --skip NAME`, ...).
demo_tests() {
  local targets=() f
  for f in tests/*.rs; do targets+=(--test "$(basename "$f" .rs)"); done
  cargo test --release --workspace "${targets[@]}" "$@"
}
