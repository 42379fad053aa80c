"""Tools for development and measurement: the embedded run, demo traffic, brokers,
the benchmark and the fault soak. Never imported by a worker."""
