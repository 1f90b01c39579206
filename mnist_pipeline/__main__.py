"""`python -m mnist_pipeline` runs the `mnist-pipeline` command."""

from mnist_pipeline.runtime.portable import restart_pinned

if __name__ == "__main__":
    # With the portable mode's OpenBLAS and NumPy settings from the start (see
    # mnist_pipeline/runtime/portable.py): `tune` trains in this process and its workers.
    restart_pinned()
    from mnist_pipeline.commands.cli import main

    main()
