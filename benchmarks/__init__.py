"""`make bench`: the chapter's plain Keras script against the project's train stage."""
