"""`likeness bench`: latency per stage, end to end and through WebRTC, against baselines and the hardware limit.

One run measures, on this machine and under the same load:

* micro: the sampler (ms per face) on every available engine x steps (1, 2, 4 and the
  teacher's) x crop (128, 256); identity encoding (encoder over 4 references); the tracker
  (detection frames and tracking frames apart); align and paste-back;
* pipeline: ``FramePipeline.process`` frame by frame on a real clip letterboxed to 480p and
  720p: per-stage latency, sustained fps, process CPU % and peak RSS, with passthrough,
  bicubic, student and teacher side by side;
* WebRTC: glass-to-glass latency through a real aiortc loopback call, enhancement off and
  on in the same run (``benchmarks.bench_bridge``);
* the hardware limit: generator GFLOPs per face, achieved GFLOP/s, measured matmul peak and
  the theoretical peak from the CPU flags;
* the GPU figures committed from another machine (``results/gpu-*.json``), labelled as such.

Timings repeat until ``runs`` samples or a per-config time budget (``max_s``) is reached,
never below ``min_runs``: at 256 px the teacher's 8 steps take ~1 s per face on 2 cores,
and 200 of those would take the whole budget of a default run. Every row records how many
runs it got. Speed does not depend on weight values, so crop 256 uses the packaged weights
with the generator's crop side set to 256 (the network is fully convolutional).

The first use of each onnxruntime (engine, steps, crop) exports its ONNX sampler into the
cache (seconds to a minute each); ``config.engine_setup_s`` records that time, and runs
after the first do not pay it.

Layout: ``config`` (what shapes a run), ``timing``, ``machine`` (CPU facts, dense-maths peak),
``sources`` (the frames), ``engines``, then one module per section (``micro``, ``pipeline``,
``webrtc``, ``targets``), ``report`` (table, JSON, plots) and ``run`` (all of it in order).

    python -m benchmarks.bench [--quick] [--engines onnxruntime,torch] [--skip-webrtc] [--json PATH] [--out DIR]
"""

import os

# OpenMP reads this once, when torch loads: the default (active) waiting spins torch's idle
# threads against the tracker, the codecs and everything else on a 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
