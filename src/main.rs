//! `pykiln-notes`: the notes MCP server of examples/notes-server as one executable.

pykiln::main!();
