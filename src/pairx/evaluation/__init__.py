"""The paper's evaluation protocol: configuration, pairs, layer choice, runs and their rows.

* :mod:`~pairx.evaluation.protocol`: :func:`~pairx.evaluation.protocol.evaluate`, the run;
* :mod:`~pairx.evaluation.config`: :class:`~pairx.evaluation.config.EvaluationConfig`;
* :mod:`~pairx.evaluation.pairs`: splits, groups and the top-k pair selection;
* :mod:`~pairx.evaluation.layer_selection`: the ``auto`` layer choice;
* :mod:`~pairx.evaluation.chunks`: resumable computation in chunks that never split a query;
* :mod:`~pairx.evaluation.pair_metrics`: the per-pair metrics, as a batch task;
* :mod:`~pairx.evaluation.rows`: ``pairs.csv`` (the row store) and its reader;
* :mod:`~pairx.evaluation.report`: tables and plots; :mod:`~pairx.evaluation.baselines`: the
  baseline methods' localisation and faithfulness run.
"""
