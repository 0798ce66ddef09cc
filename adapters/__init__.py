"""refloss.adapters: framework glue, and the only place that imports a framework.

It holds no math: each adapter wraps the core's forward and analytic VJP.

* ``refloss.adapters.torch`` — every loss and distance as a
  ``torch.autograd.Function`` whose backward is refloss's VJP, and the
  ``nn.Module`` wrappers ``TripletLoss``, ``TripletMarginLoss``,
  ``ContrastiveLoss`` and ``CenterLoss``;
* ``refloss.adapters.jax`` — every loss and distance under ``jax.custom_vjp``;
* ``refloss.adapters.distributed`` — the torch adapter's labeled-batch losses
  of the global batch on ``torch.distributed`` (each rank passes its shard),
  and center updates identical on every rank;
* ``refloss.adapters.bridges`` / ``refloss.adapters.known`` — the framework
  bridges and the registry of known implementations that
  ``refloss crosscheck`` uses.

Each submodule imports its framework on import; ``import refloss`` never does.
"""
