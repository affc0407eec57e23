"""What the tests and the benchmark both start: ports, processes, Redis, VORA servers, webhook receivers."""
