"""`python -m bench [--quick]`: the sidecar measured against baselines on this machine.

The real `audio-sidecar run` process sits between a test bot (Unix sockets,
AudioSocket frames, real-time pacing) and a `websockets` server, both driven by
the asyncio harness in `bench.harness`. Two baselines are processes with the
same socket interface (`bench.naive`, `bench.soxr_stream`); the floor is our
own resample + encode work timed in-process (`bench.floor`). Results go to
bench/results/*.json and docs/PERFORMANCE.md with plots in docs/img/.
"""
