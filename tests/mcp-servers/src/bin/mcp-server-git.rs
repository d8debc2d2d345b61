//! `mcp-server-git` from PyPI as one executable (entry point in `module:object.attr`
//! form: its `main` is a click command, whose `.main` runs it).
pykiln::main!(entry_point = "mcp_server_git:main.main");
