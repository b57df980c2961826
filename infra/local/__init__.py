"""Local stand-ins for cloud services, used by the tests, the benchmarks and the demo."""
