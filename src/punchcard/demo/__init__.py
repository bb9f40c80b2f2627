"""The demo story that `punchcard demo` (and, until the server exists, `make run`) tells."""
