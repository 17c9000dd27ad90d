"""Drawing from a dataset: training mixtures (``mixtures``), the fixed test and validation sets (``evaluation_set``), batches prepared ahead (``batch_producer``)."""
