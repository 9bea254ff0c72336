"""One-off studies: questions asked once about the model or the call, kept so their figures can be rerun.

Not the benchmarks a user runs (`likeness bench`, ``benchmarks.bench_*``, soak, fanout, poor_link):
see README.md here for each study's question, command and results.
"""
