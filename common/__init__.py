"""The runtime-agnostic core: maths, parties, runs and assets, with no Flower, Ray or Hydra.

Sub-packages, one concern each:

* :mod:`common.maths` - compression, whitening, channels, the link budget and the ADMM blocks;
* :mod:`common.parties` - the access points and users of every method, the messages
  they exchange and the overhead ledger;
* :mod:`common.run` - settings, problem sources, the description of a round, the
  in-process driver, results tables, reports and plots;
* :mod:`common.assets` - datasets, the encoder zoo, latents, classifier heads and their cache.
"""
