"""Triton kernels of ffkernels (CUDA GPUs; CPU tensors only through ``TRITON_INTERPRET=1``).

- :mod:`.aggregate`: CSR row-split sparse aggregation (sum / mean / max / gcn, edge weights);
- :mod:`.goodness`: fused goodness -> FF loss -> ``grad_z`` and the row-wise helpers;
- :mod:`.linear`: GEMM with a ReLU + goodness + loss-gradient epilogue;
- :mod:`.linear_jvp`: the dual-number linear layer (primal and tangent GEMMs in one kernel);
- :mod:`.ops`: the launchers registered as ``torch.ops.ffkernels_triton.*`` custom ops.

Importing this package imports ``triton``; use ``ffkernels.backends`` to check availability.
"""
