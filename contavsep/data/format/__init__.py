"""The dataset format: one Arrow row per clip (``schema``), the ``manifest`` written last, the Parquet ``writer``, the node-cache ``reader``."""
