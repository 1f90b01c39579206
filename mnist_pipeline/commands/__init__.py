"""The `mnist-pipeline` command and its subcommands; none is imported by a stage."""
