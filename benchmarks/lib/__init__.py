"""The benchmarks' shared library; the scripts in ``benchmarks/`` are thin recipes over it and never import each other.

- ``report``: notes, the machine line, argparse flags every script shares, a section of a markdown record rewritten
  between its markers.
- ``targets``: the exact Gaussian-mixture targets, their processes, and the Frechet-distance floor of n exact samples.
- ``runs``: a run maps a nominal NFE to (samples, counted NFE); ours on a spacing or on a given grid, and the sweep.
- ``peers``: adapters that run the peers' solvers (official DPM-Solver, diffusers, k-diffusion, diff-sampler,
  score_sde_pytorch) on our exact model.
- ``fitting``: the fitted grids and iPNDM weights of the few-step rows (the one module that imports the fits).
- ``fewstep``: the few-step head to head's rows, its recorded numbers and its tables and aims.
- ``hutchpp``: the prototype Hutch++ divergence for ``ode_nll``.
- ``ddp_peer``: lucidrains' denoising-diffusion-pytorch trained for a wall-time budget on an image array.
"""
