"""Reports read the store only; they never refit."""
