"""Process plumbing shared by the stages and the commands: atomic outputs, one-line errors and
exits, tasks run in a forked child."""
