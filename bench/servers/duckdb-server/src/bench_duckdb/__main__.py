"""`python -m bench_duckdb`: run the server."""

from bench_duckdb.server import main

main()
