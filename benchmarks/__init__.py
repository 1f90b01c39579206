"""`make bench`: what users run, timed from outside (docs/performance.md)."""
