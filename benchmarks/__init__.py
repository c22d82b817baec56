"""Benchmarks of srvwatch's resolver against dnspython and aiodns, measured in one run."""
