//! The compatibility corpus packed into one executable (see corpus/pyproject.toml).
pykiln::main!();
