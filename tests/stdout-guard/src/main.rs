//! `project/` (a server that prints on stdout) packed with `stdout-guard = true`.
pykiln::main!();
