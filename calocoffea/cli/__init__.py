"""The `calocoffea` command line: one module per subcommand."""
