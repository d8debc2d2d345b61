//! `mcp-server-git` from PyPI as one executable.
pykiln::main!(entry_point = "mcp_server_git:main");
