"""Benchmark runs across a fleet: several artifacts on several devices in one `edgepipe bench`, cold start and
memory, per-op profiles, a results store with history, and regression verdicts (`edgepipe bench compare`)."""
