"""Training recipe for MiewID-style re-ID embedding models.

* :mod:`pairx.training.losses`: sub-center ArcFace and batch-hard triplet loss;
* :mod:`pairx.training.sampler`: PK batch sampler;
* :mod:`pairx.training.data`: batched augmentation (no flips) of in-memory images;
* :mod:`pairx.training.recipe`: the CNN recipe's settings (``TrainConfig``, ``--init``);
* :mod:`pairx.training.runs`: what every run shares (run folder, checkpoint, device, schedule);
* :mod:`pairx.training.loop`: :func:`~pairx.training.loop.train` with checkpoints and resume;
* :mod:`pairx.training.paw`, :mod:`pairx.training.amd`: PAW-ViT and the AMD interpreter;
* :mod:`pairx.training.retrieval`: rank-1 / mAP evaluation (``pairx retrieval``; the figures
  are :mod:`pairx.metrics.retrieval`).

Submodules are imported on demand so that ``import pairx.training`` stays light.
"""
