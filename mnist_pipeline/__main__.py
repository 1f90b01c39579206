"""`python -m mnist_pipeline` runs the `mnist-pipeline` command."""

from mnist_pipeline.commands.cli import main

if __name__ == "__main__":
    main()
