"""Benchmark suites that ship with the package (``ffkernels bench``).

- :mod:`.eager_baselines`: eager autograd implementations of the forward-learning algorithms,
  written the way published code is, plus backpropagation baselines;
- :mod:`.suite`: the end-to-end suite (fused vs eager vs BP: time, memory, accuracy);
- :mod:`.ops_suite`: the op micro-benchmarks (each op vs its baselines and the bandwidth limit);
- :mod:`.time_to_accuracy`: time to a test-accuracy target (fused SF vs eager SF vs PyG GCNConv);
- :mod:`.distributed_suite`: partitioned SF vs distributed full-graph BP (bytes, memory, time);
- :mod:`.cli`: ``ffkernels bench`` (imports the suites; they never import it);
- peak memory and time of one training call: :class:`ffkernels.train.metrics.PeakMemory`;
- :mod:`.plots`: PNG plots (matplotlib, the ``bench`` extra).
"""
