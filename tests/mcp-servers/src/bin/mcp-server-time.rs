//! `mcp-server-time` from PyPI as one executable.
pykiln::main!(entry_point = "mcp_server_time:main");
