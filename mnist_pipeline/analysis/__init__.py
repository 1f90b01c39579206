"""What the logged runs say: their tables and UI views, comparisons, seed statistics and the
promotion gate."""
