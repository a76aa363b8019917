"""deepens benchmarks (``make bench``): speed ratios measured within one run."""
