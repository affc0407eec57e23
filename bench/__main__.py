"""Run the benchmark: `python -m bench` (see docs/BENCHMARKS.md)."""

from bench.run import main

raise SystemExit(main())
