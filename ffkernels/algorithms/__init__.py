"""The algorithms, one module per family, each registered with the training engine
(:mod:`ffkernels.train`) under its ``--algo`` names. docs/algorithms.md describes them all.

- :mod:`.forwardgnn`: ForwardGNN node classification, ``sf``;
- :mod:`.topdown`: SF with top-down signals, ``sf-top-input``, ``sf-top-loss``;
- :mod:`.ff_graph`: Forward-Forward for graphs, ``ff-la``, ``ff-vn``;
- :mod:`.link`: link prediction, ``fl-ce``, ``fl-ff``, ``fl-top``;
- :mod:`.mlp_ff`: Forward-Forward for MLPs, ``ff``, ``ff-hard``, ``symba``, ``cff``;
- :mod:`.pepita`: ``pepita``;
- :mod:`.dfa`: direct feedback alignment, ``dfa`` (MLPs), ``dfa-graph`` (GCN, SAGE);
- :mod:`.forward_gradient`: forward gradients (MLPs), ``fg``, ``fg-local``, ``fg-guess``;
- :mod:`.bp`: the backpropagation baseline, ``bp``.

:mod:`.common` holds what the graph families share (virtual nodes, layers by model name);
:mod:`.mlp_common` what the MLP families share (validation rows, mini-batches).
"""
