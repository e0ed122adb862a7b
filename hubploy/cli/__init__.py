"""The `hubploy` command line: one module per command group, errors reported in cli.main."""
