"""`python -m bench_fastmcp`: run the server."""

from bench_fastmcp.server import main

main()
