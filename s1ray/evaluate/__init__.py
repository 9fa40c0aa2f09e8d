"""Budget-forced evaluation: benchmarks, two-phase generation, grading, test-time scaling metrics."""
