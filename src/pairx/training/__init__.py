"""Training recipe for MiewID-style re-ID embedding models.

* :mod:`pairx.training.losses`: sub-center ArcFace and batch-hard triplet loss;
* :mod:`pairx.training.sampler`: PK batch sampler;
* :mod:`pairx.training.data`: in-memory images and batched augmentation (no flips);
* :mod:`pairx.training.loop`: :func:`~pairx.training.loop.train` with checkpoints and resume;
* :mod:`pairx.training.retrieval`: rank-1 / mAP evaluation (``pairx retrieval``).

Submodules are imported on demand so that ``import pairx.training`` stays light.
"""
