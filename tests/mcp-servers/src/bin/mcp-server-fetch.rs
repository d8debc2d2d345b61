//! `mcp-server-fetch` from PyPI as one executable.
pykiln::main!(entry_point = "mcp_server_fetch:main");
