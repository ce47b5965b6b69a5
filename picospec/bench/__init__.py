"""The benchmark: a matrix of real runs, the ideal bound, a simulator validated against the runs, and a report."""
